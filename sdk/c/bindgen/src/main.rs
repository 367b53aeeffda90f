//! `tidewater-c-bindgen`: the build tool for C (and C++) processors.
//!
//! ```text
//! tidewater-c-bindgen bindings WIT_DIR OUT_DIR   # processor.h, processor.c, processor_component_type.o
//! tidewater-c-bindgen adapter OUT_FILE           # the WASI preview1 reactor adapter (.wasm)
//! tidewater-c-bindgen cpp-bindings WIT_DIR OUT_DIR   # processor_cpp.h, processor.cpp, wit.h, ...
//! ```
//!
//! The C bindings come from wit-bindgen's C generator (the same code as
//! `wit-bindgen c`), the C++ ones from its C++ generator (`wit-bindgen cpp`); the adapter turns a `wasm32-wasi` reactor module into a
//! WASI 0.2 component with `wasm-tools component new --adapt`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

fn bindings(wit: &Path, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot read the WIT package in {}", wit.display()))?;
    let world = resolve
        .select_world(&[pkg], Some("processor"))
        .context("the WIT package has no world `processor`")?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("the C generator failed")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, bytes) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn cpp_bindings(wit: &Path, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot read the WIT package in {}", wit.display()))?;
    let world = resolve
        .select_world(&[pkg], Some("processor"))
        .context("the WIT package has no world `processor`")?;
    let mut files = Files::default();
    wit_bindgen_cpp::Opts::default()
        .build(None)
        .generate(&mut resolve, world, &mut files)
        .context("the C++ generator failed")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, bytes) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn adapter(out: &Path) -> Result<()> {
    let bytes = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bindings", wit, out] => bindings(Path::new(wit), Path::new(out)),
        ["adapter", out] => adapter(&PathBuf::from(out)),
        ["cpp-bindings", wit, out] => cpp_bindings(Path::new(wit), Path::new(out)),
        _ => bail!(
            "usage: tidewater-c-bindgen bindings WIT_DIR OUT_DIR | adapter OUT_FILE | cpp-bindings WIT_DIR OUT_DIR"
        ),
    }
}
