//! `tidewater new`: a new processor project in any language.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub(super) struct NewArgs {
    /// The processor's name (lowercase letters, digits, '-'); also the directory.
    name: String,
    /// The language: rust, python, js, ts, c, cpp or zig.
    #[arg(long)]
    lang: String,
    /// Where to write it (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The tidewater checkout whose SDK and build tools the project uses
    /// (default: the one this binary was built from). Its `make plugins`
    /// installs the tools (tsc, ComponentizeJS, componentize-py, Zig, ...).
    #[arg(long, env = "TIDEWATER_ROOT")]
    root: Option<PathBuf>,
}

pub(super) fn new_processor(a: NewArgs) -> anyhow::Result<ExitCode> {
    use tidewater::scaffold;
    let language: scaffold::Language = a.lang.parse()?;
    let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
    let root = a.root.unwrap_or_else(scaffold::default_root);
    let files = scaffold::new_processor(language, &a.name, &dir, &root)?;
    for f in &files {
        outln!("wrote {}", f.display())?;
    }
    if let Some(tool) = scaffold::missing_tool(language, &root) {
        outln!(
            "first: {} is not built yet: run `make plugins` in the tidewater checkout at {}",
            tool.display(),
            root.display()
        )?;
    }
    outln!(
        "build it: cd {} && make        test it: make test",
        dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
