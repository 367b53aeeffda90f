//! `tidewater new --lang ... NAME`: each language's project passes its own
//! unit test (`make test`), builds with one command (`make`), and the
//! component it builds runs in the host: state, headers and log lines.

use std::path::Path;
use std::process::Command;

use tidewater::runtime::StateOverlay;
use tidewater::runtime::{Event, Limits, Runtime};

use crate::common::{plugin, root};

/// `make TARGET` in `dir` (as the scaffolded project's user runs it); its
/// stdout and stderr.
fn make(dir: &Path, target: Option<&str>, lang: &str) -> String {
    let out = make_command(dir, target, lang)
        .output()
        .expect("running make");
    assert!(
        out.status.success(),
        "make {} in {} failed:\n{}{}",
        target.unwrap_or(""),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn make_command(dir: &Path, target: Option<&str>, lang: &str) -> Command {
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
    cmd
}

/// Whether `make -q` finds the component up to date.
fn up_to_date(dir: &Path, lang: &str) -> bool {
    let status = make_command(dir, Some("-q"), lang)
        .status()
        .expect("running make -q");
    status.success()
}

/// A source file of another name, in the project's language, as a user adds one.
fn helper_file(lang: &str) -> &'static str {
    match lang {
        "rust" => "src/helper.rs",
        "python" => "helper.py",
        "js" => "helper.js",
        "ts" => "lib/helper.ts",
        "c" => "helper.h",
        "cpp" => "helper.hpp",
        "zig" => "helper.zig",
        other => panic!("no helper file for {other}"),
    }
}

/// Writes `file` so that its mtime is later than `built`'s, as a user's
/// edit after a build is. File times come from the kernel's coarse clock
/// (one tick, up to 10 ms): a file written right after the build can carry
/// the very mtime of the build's output, which make counts as up to date.
fn write_after(file: &Path, built: &Path) {
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    for _ in 0..200 {
        std::fs::write(file, "\n").expect("write helper");
        if mtime(file) > mtime(built) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!(
        "{} stays dated after {} for 1 s",
        built.display(),
        file.display()
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
    // The checkout, reached through a path with a space in it: every
    // template quotes the paths it builds from.
    let spaced_root = work.path().join("tide water");
    std::os::unix::fs::symlink(root().canonicalize().expect("root"), &spaced_root)
        .expect("symlink");
    let runtime = Runtime::new(None).expect("runtime");
    for lang in ["rust", "python", "js", "ts", "c", "cpp", "zig"] {
        let name = format!("shout-{lang}");
        let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .args(["new", "--lang", lang, &name])
            .current_dir(work.path())
            .env("TIDEWATER_ROOT", &spaced_root)
            .output()
            .expect("running tidewater new");
        assert!(
            out.status.success(),
            "tidewater new --lang {lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = work.path().join(&name);
        make(&dir, Some("test"), lang);
        let built = make(&dir, None, lang);
        // A clean build: no bundler warning about the host's imports.
        assert!(!built.contains("UNRESOLVED_IMPORT"), "{lang}:\n{built}");
        // Every source file counts: a new one makes the component stale.
        assert!(up_to_date(&dir, lang), "{lang}: stale right after make");
        let helper = dir.join(helper_file(lang));
        std::fs::create_dir_all(helper.parent().expect("parent")).expect("mkdir");
        write_after(&helper, &dir.join(format!("{name}.wasm")));
        assert!(
            !up_to_date(&dir, lang),
            "{lang}: {} is not a prerequisite",
            helper.display()
        );
        std::fs::remove_file(&helper).expect("remove helper");
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
    refusals(work.path());
}

/// A root that is not a checkout, and tools that were never built, are
/// named with what to do.
fn refusals(work: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["new", "--lang", "ts", "x", "--root"])
        .arg(work)
        .current_dir(work)
        .output()
        .expect("running tidewater new");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {} is not a tidewater checkout (it has no wit/processor.wit and sdk/): pass --root \
             (or TIDEWATER_ROOT) with the checkout whose SDK and build tools the project should use\n",
            work.display()
        )
    );
    assert!(!work.join("x").exists());
    // A checkout whose `make plugins` has not run yet.
    let bare = work.join("bare");
    std::fs::create_dir_all(bare.join("wit")).expect("mkdir");
    std::fs::create_dir_all(bare.join("sdk")).expect("mkdir");
    std::fs::copy(
        root().join("wit/processor.wit"),
        bare.join("wit/processor.wit"),
    )
    .expect("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["new", "--lang", "ts", "early", "--root"])
        .arg(&bare)
        .current_dir(work)
        .output()
        .expect("running tidewater new");
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "first: {}/plugins/js/node_modules/.bin/tsc is not built yet: run `make plugins` in the tidewater checkout at {}",
            bare.display(),
            bare.display()
        )),
        "{said}"
    );
    for target in [None, Some("test")] {
        let out = make_command(&work.join("early"), target, "ts")
            .output()
            .expect("make");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.lines().next(),
            Some(
                format!(
                    "error: tsc, rolldown and componentize-js are not in {0}/plugins/js/node_modules/.bin: \
                     run 'make plugins' in the tidewater checkout at {0} first",
                    bare.display()
                )
                .as_str()
            ),
            "make {target:?}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["new", "--lang", "cobol", "x"])
        .current_dir(work)
        .output()
        .expect("running tidewater new");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cannot scaffold \"cobol\": the languages are rust, python, js, ts, c, cpp and zig\n"
    );
}
