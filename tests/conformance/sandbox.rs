//! The sandbox as a language runtime sees it: a Python processor
//! (`plugins/testing/python-sandbox`) tries to read a file, list a
//! directory, open a TCP connection, resolve a name, read the environment and
//! print. The host grants nothing, so each attempt gets an error, not access;
//! what it prints arrives in the host's log, tagged with the processor.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tidewater::runtime::StateOverlay;
use tidewater::runtime::{Event, Limits, ProcessError};

use super::{component, runtime};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn attempt(what: &str) -> Event {
    Event {
        topic: "attempts".into(),
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        key: None,
        value: Some(what.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

#[test]
fn a_python_processor_gets_errors_not_access() {
    let path = component("python", "sandbox");
    assert!(path.exists(), "{} was not built", path.display());
    let rt = runtime();
    let loaded = rt.load(&path).expect("load the sandbox component");
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    let attempts = ["read-file", "list-root", "tcp", "dns", "env", "print"];
    let results = tracing::subscriber::with_default(subscriber, || {
        let mut instance = rt
            .instantiate(&loaded, "escape-artist".into(), Limits::default(), &[])
            .expect("instantiate");
        let events: Vec<Event> = attempts.iter().map(|a| attempt(a)).collect();
        instance
            .process(&events, &mut StateOverlay::default())
            .expect("process")
    });
    let got: Vec<String> = results
        .into_iter()
        .map(|r| match r {
            Ok(outs) => {
                String::from_utf8(outs[0].value.clone().unwrap_or_default()).expect("UTF-8 output")
            }
            Err(ProcessError::Invalid(m) | ProcessError::Transient(m) | ProcessError::Fatal(m)) => {
                format!("error {m}")
            }
        })
        .collect();
    assert_eq!(
        got,
        [
            "read-file: FileNotFoundError",
            "list-root: FileNotFoundError",
            "tcp: PermissionError",
            "dns: LookupError",
            "env: ok 0",
            "print: ok printed",
        ]
    );
    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8 log");
    assert!(
        log.contains("hello from python on stdout processor=\"escape-artist\" stream=\"stdout\""),
        "stdout is not in the host's log:\n{log}"
    );
    assert!(
        log.contains("hello from python through the log interface processor=\"escape-artist\""),
        "the log line is not in the host's log:\n{log}"
    );
    assert!(
        log.contains("hello from python on stderr processor=\"escape-artist\" stream=\"stderr\""),
        "stderr is not in the host's log:\n{log}"
    );
}
