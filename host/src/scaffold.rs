//! `tidewater new`: writes a new processor project from the templates in
//! `sdk/templates/<language>/`, with the SDK files copied in where the
//! language has no package for them (TypeScript gets the JavaScript SDK and
//! its declarations; Zig the Zig SDK).
//!
//! The project builds with one command (`make`, the component `NAME.wasm`)
//! and has a unit test (`make test`). Build tools (componentize-py,
//! ComponentizeJS, tsc, Zig, the C bindings tool, wasm-tools) and the Rust SDK are used
//! from the tidewater checkout given as `root`.

use std::path::{Path, PathBuf};

/// A language `tidewater new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Language {
    /// Rust, with the `tidewater-sdk` crate.
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with ComponentizeJS.
    Js,
    /// TypeScript, type-checked with tsc, on the JavaScript SDK and ComponentizeJS.
    Ts,
    /// C, with wit-bindgen's C bindings and clang for wasm32-wasi.
    C,
    /// C++23, with wit-bindgen's C++ bindings, clang++ and libc++ for wasm32-wasi.
    Cpp,
    /// Zig (PyPI's `ziglang`), on wit-bindgen's C bindings.
    Zig,
}

impl std::str::FromStr for Language {
    type Err = NewError;

    fn from_str(s: &str) -> Result<Self, NewError> {
        match s {
            "rust" => Ok(Language::Rust),
            "python" => Ok(Language::Python),
            "js" | "javascript" => Ok(Language::Js),
            "ts" | "typescript" => Ok(Language::Ts),
            "zig" => Ok(Language::Zig),
            "c" => Ok(Language::C),
            "cpp" | "c++" => Ok(Language::Cpp),
            "go" => Err(NewError::Unsupported {
                language: s.into(),
                reason: "no Go toolchain on the registries builds a component of this world (see README: Go)".into(),
            }),
            _ => Err(NewError::Unsupported {
                language: s.into(),
                reason: "the languages are rust, python, js, ts, c, cpp and zig".into(),
            }),
        }
    }
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// The name cannot be a processor name.
    #[error(
        "{0:?} is not a processor name: use lowercase letters, digits and '-', starting with a letter"
    )]
    BadName(String),
    /// The language has no template.
    #[error("cannot scaffold {language:?}: {reason}")]
    Unsupported {
        /// The language asked for.
        language: String,
        /// Why not.
        reason: String,
    },
    /// The target directory exists already.
    #[error("{0} exists already")]
    Exists(PathBuf),
    /// `root` is not a tidewater checkout.
    #[error(
        "{0} is not a tidewater checkout (it has no wit/processor.wit and sdk/): pass --root (or TIDEWATER_ROOT) with the checkout whose SDK and build tools the project should use"
    )]
    NotACheckout(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

macro_rules! files {
    ($($path:literal => $src:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../", $src)))),*]
    };
}

type Files = &'static [(&'static str, &'static str)];

const RUST: Files = files! {
    "Cargo.toml" => "sdk/templates/rust/Cargo.toml",
    "Makefile" => "sdk/templates/rust/Makefile",
    "src/lib.rs" => "sdk/templates/rust/src/lib.rs",
};

const PYTHON: Files = files! {
    "Makefile" => "sdk/templates/python/Makefile",
    "app.py" => "sdk/templates/python/app.py",
    "test_app.py" => "sdk/templates/python/test_app.py",
    "tidewater/__init__.py" => "sdk/python/tidewater/__init__.py",
    "tidewater/component.py" => "sdk/python/tidewater/component.py",
    "tidewater/log.py" => "sdk/python/tidewater/log.py",
    "tidewater/state.py" => "sdk/python/tidewater/state.py",
};

const JS: Files = files! {
    "Makefile" => "sdk/templates/js/Makefile",
    "app.js" => "sdk/templates/js/app.js",
    "app.test.js" => "sdk/templates/js/app.test.js",
    "entry.js" => "sdk/templates/js/entry.js",
    "tidewater.js" => "sdk/js/tidewater.js",
    "component.js" => "sdk/js/component.js",
};

const TS: Files = files! {
    "Makefile" => "sdk/templates/ts/Makefile",
    "app.ts" => "sdk/templates/ts/app.ts",
    "app.test.ts" => "sdk/templates/ts/app.test.ts",
    "entry.js" => "sdk/templates/ts/entry.js",
    "tsconfig.json" => "sdk/templates/ts/tsconfig.json",
    "tsconfig.test.json" => "sdk/templates/ts/tsconfig.test.json",
    "tidewater.js" => "sdk/js/tidewater.js",
    "tidewater.d.ts" => "sdk/js/tidewater.d.ts",
    "runtime.d.ts" => "sdk/js/runtime.d.ts",
    "component.js" => "sdk/js/component.js",
};

const C: Files = files! {
    "Makefile" => "sdk/templates/c/Makefile",
    "processor.c" => "sdk/templates/c/processor.c",
    "test.c" => "sdk/templates/c/test.c",
    "test_host.c" => "sdk/templates/c/test_host.c",
    "tidewater.h" => "sdk/c/tidewater.h",
    "tidewater.c" => "sdk/c/tidewater.c",
};

const CPP: Files = files! {
    "Makefile" => "sdk/templates/cpp/Makefile",
    "processor.cpp" => "sdk/templates/cpp/processor.cpp",
    "test.cpp" => "sdk/templates/cpp/test.cpp",
    "test_host.cpp" => "sdk/templates/cpp/test_host.cpp",
    "tidewater.hpp" => "sdk/cpp/tidewater.hpp",
};

const ZIG: Files = files! {
    "Makefile" => "sdk/templates/zig/Makefile",
    "processor.zig" => "sdk/templates/zig/processor.zig",
    "tidewater.zig" => "sdk/zig/tidewater.zig",
};

/// The tidewater checkout this binary was built from: the default `root`.
pub fn default_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    here.canonicalize().unwrap_or(here)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `root` looks like a tidewater checkout: the WIT world and the SDKs.
fn is_checkout(root: &Path) -> bool {
    root.join("wit/processor.wit").is_file() && root.join("sdk").is_dir()
}

/// The build tool of the checkout at `root` that a `language` project needs
/// and that is not there yet (`make plugins` in `root` installs them), or
/// `None`. Rust needs none from the checkout.
pub fn missing_tool(language: Language, root: &Path) -> Option<PathBuf> {
    let js = root.join("plugins/js/node_modules/.bin");
    let venv = root.join("tools/venv/bin");
    let bindgen = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/tidewater-c-bindgen");
    let needed = match language {
        Language::Rust => vec![],
        Language::Python => vec![venv.join("componentize-py")],
        Language::Js => vec![js.join("componentize-js"), js.join("rolldown")],
        Language::Ts => vec![
            js.join("tsc"),
            js.join("componentize-js"),
            js.join("rolldown"),
        ],
        Language::C | Language::Cpp => vec![venv.join("wasm-tools"), bindgen],
        Language::Zig => vec![venv.join("wasm-tools"), bindgen, venv.join("python")],
    };
    needed.into_iter().find(|p| !p.exists())
}

/// Writes a new `language` processor called `name` into `dir` (which must
/// not exist), using the build tools of the checkout at `root`. Returns the
/// files written.
///
/// # Errors
///
/// [`NewError::BadName`], [`NewError::NotACheckout`], [`NewError::Exists`],
/// [`NewError::Write`].
pub fn new_processor(
    language: Language,
    name: &str,
    dir: &Path,
    root: &Path,
) -> Result<Vec<PathBuf>, NewError> {
    if !valid_name(name) {
        return Err(NewError::BadName(name.into()));
    }
    if !is_checkout(root) {
        return Err(NewError::NotACheckout(root.to_owned()));
    }
    if dir.exists() {
        return Err(NewError::Exists(dir.to_owned()));
    }
    let files = match language {
        Language::Rust => RUST,
        Language::Python => PYTHON,
        Language::Js => JS,
        Language::Ts => TS,
        Language::C => C,
        Language::Cpp => CPP,
        Language::Zig => ZIG,
    };
    let crate_name = name.replace('-', "_");
    let root = root.display().to_string();
    // A JSON string, quotes included, for tsconfig.test.json.
    let node_types =
        serde_json::Value::from(format!("{root}/plugins/js/node_modules/@types")).to_string();
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{node_types_json}}", &node_types)
            .replace("{{root}}", &root);
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text.as_bytes())
        };
        write(&path).map_err(|source| NewError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_languages_are_checked() {
        assert!(valid_name("shout-2"));
        assert!(!valid_name("Shout"));
        assert!(!valid_name("2x"));
        assert!(!valid_name("../x"));
        assert!("go".parse::<Language>().is_err());
        assert_eq!("js".parse::<Language>().unwrap(), Language::Js);
        assert_eq!("typescript".parse::<Language>().unwrap(), Language::Ts);
        assert_eq!("zig".parse::<Language>().unwrap(), Language::Zig);
        let dir = tempfile::tempdir().unwrap();
        let root = default_root();
        let err = new_processor(Language::Rust, "x", dir.path(), &root).unwrap_err();
        assert!(matches!(err, NewError::Exists(_)));
        let files = new_processor(Language::Python, "shout", &dir.path().join("p"), &root).unwrap();
        assert_eq!(files.len(), 7);
        let make = std::fs::read_to_string(dir.path().join("p/Makefile")).unwrap();
        assert!(
            make.contains(&format!("ROOT := {}\n", root.display())) && make.contains("shout.wasm:")
        );
    }

    #[test]
    fn a_root_that_is_not_a_checkout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = new_processor(Language::Ts, "x", &dir.path().join("x"), dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a tidewater checkout (it has no wit/processor.wit and sdk/): pass --root \
                 (or TIDEWATER_ROOT) with the checkout whose SDK and build tools the project should use",
                dir.path().display()
            )
        );
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn a_typescript_project_gets_node_types_for_its_tests_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = default_root();
        new_processor(Language::Ts, "shout", &dir.path().join("p"), &root).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join("p").join(f)).unwrap();
        assert!(read("tsconfig.json").contains("\"types\": []"));
        let tests = read("tsconfig.test.json");
        let types = format!(
            "\"typeRoots\": [\"{}/plugins/js/node_modules/@types\"]",
            root.display()
        );
        assert!(tests.contains(&types), "{tests}");
        assert!(read("runtime.d.ts").contains("declare var console"));
    }
}
