//! Shared by the test crates: building the components under test.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `make plugins` once per test binary, so every component in
/// target/plugins/ is built from the current sources.
pub fn make_plugins() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut make = Command::new("make");
        make.args(["-s", "plugins"]).current_dir(root());
        // Cargo's variables for this test binary would make the plugin build
        // look different from `make plugins` run by hand, and rebuild it.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
                make.env_remove(k);
            }
        }
        let out = make.output().expect("running make plugins");
        assert!(
            out.status.success(),
            "make plugins failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}
