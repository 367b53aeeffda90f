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
    "tidewater.js" => "sdk/js/tidewater.js",
    "tidewater.d.ts" => "sdk/js/tidewater.d.ts",
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

/// Writes a new `language` processor called `name` into `dir` (which must
/// not exist), using the build tools of the checkout at `root`. Returns the
/// files written.
///
/// # Errors
///
/// [`NewError::BadName`], [`NewError::Exists`], [`NewError::Write`].
pub fn new_processor(
    language: Language,
    name: &str,
    dir: &Path,
    root: &Path,
) -> Result<Vec<PathBuf>, NewError> {
    if !valid_name(name) {
        return Err(NewError::BadName(name.into()));
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
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
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
        let err = new_processor(Language::Rust, "x", dir.path(), Path::new("/r")).unwrap_err();
        assert!(matches!(err, NewError::Exists(_)));
        let files = new_processor(
            Language::Python,
            "shout",
            &dir.path().join("p"),
            Path::new("/r"),
        )
        .unwrap();
        assert_eq!(files.len(), 7);
        let make = std::fs::read_to_string(dir.path().join("p/Makefile")).unwrap();
        assert!(make.contains("ROOT := /r\n") && make.contains("shout.wasm:"));
    }
}
