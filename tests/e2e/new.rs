//! `tidewater new --lang ... NAME`: each language's project passes its own
//! unit test (`make test`), builds with one command (`make`), and the
//! component it builds runs in the host: state, headers and log lines.

use std::path::Path;
use std::process::Command;

use tidewater::runtime::StateOverlay;
use tidewater::runtime::{Event, Limits, Runtime};

use crate::common::{plugin, root};

fn make(dir: &Path, target: Option<&str>, lang: &str) {
    let mut cmd = Command::new("make");
    cmd.current_dir(dir);
    if let Some(t) = target {
        cmd.arg(t);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    // The checkout's target dir holds the C bindings tool the C and C++
    // projects use. A Rust project builds in a dir of its own inside it (kept
    // between runs): a workspace that builds the SDK path package into the
    // host's or the plugins' target dir overwrites their artifacts of it.
    let shared = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let target_dir = if lang == "rust" {
        shared.join("scaffolded")
    } else {
        shared
    };
    cmd.env("CARGO_TARGET_DIR", target_dir);
    let out = cmd.output().expect("running make");
    assert!(
        out.status.success(),
        "make {} in {} failed:\n{}{}",
        target.unwrap_or(""),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's log lines, captured.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An output's key, value and headers.
type Shout = (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

#[test]
fn every_language_scaffolds_a_processor_that_tests_builds_and_runs() {
    // The build tools of the checkout (venv, node_modules, C bindings tool).
    plugin("enrich");
    let work = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(None).expect("runtime");
    for lang in ["rust", "python", "js", "ts", "c", "cpp", "zig"] {
        let name = format!("shout-{lang}");
        let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .args(["new", "--lang", lang, &name])
            .current_dir(work.path())
            .env("TIDEWATER_ROOT", root())
            .output()
            .expect("running tidewater new");
        assert!(
            out.status.success(),
            "tidewater new --lang {lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = work.path().join(&name);
        make(&dir, Some("test"), lang);
        make(&dir, None, lang);
        let wasm = dir.join(format!("{name}.wasm"));
        let component = runtime.load(&wasm).expect("load the scaffolded component");
        let event = |v: &str| Event {
            topic: "in".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(b"k".to_vec()),
            value: Some(v.as_bytes().to_vec()),
            headers: Vec::new(),
        };
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        let results = tracing::subscriber::with_default(subscriber, || {
            let mut instance = runtime
                .instantiate(&component, name.as_str().into(), Limits::default(), &[])
                .expect("instantiate");
            instance
                .process(&[event("hi"), event("yo")], &mut StateOverlay::default())
                .expect("process")
        });
        let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8");
        assert!(
            log.contains(&format!("event 2 processor=\"{name}\"")),
            "{lang}: the processor's log line is not in the host's log:\n{log}"
        );
        let outs: Vec<Shout> = results
            .into_iter()
            .map(|r| {
                let o = r.expect("ok").remove(0);
                (o.key.expect("key"), o.value.expect("value"), o.headers)
            })
            .collect();
        assert_eq!(
            outs,
            [
                (
                    b"k".to_vec(),
                    b"HI".to_vec(),
                    vec![("seen".into(), b"1".to_vec())]
                ),
                (
                    b"k".to_vec(),
                    b"YO".to_vec(),
                    vec![("seen".into(), b"2".to_vec())]
                ),
            ],
            "{lang}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["new", "--lang", "cobol", "x"])
        .current_dir(work.path())
        .output()
        .expect("running tidewater new");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cannot scaffold \"cobol\": the languages are rust, python, js, ts, c, cpp and zig\n"
    );
}
