//! The compiled-component cache: precompiled artefacts on disk, named by the
//! component's SHA-256 and the engine's settings, sealed with the SHA-256 of
//! their contents.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Runtime;

impl Runtime {
    pub(super) fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", h.finish())))
    }

    /// A compiled component from the cache, if the file is there and intact:
    /// its first 32 bytes are the SHA-256 of the rest. A damaged file is
    /// reported and ignored (the component is compiled again).
    pub(super) fn read_cache(&self, path: &Path) -> Option<Component> {
        let sealed = std::fs::read(path).ok()?;
        let (digest, compiled) = sealed.split_at_checked(32)?;
        if Sha256::digest(compiled).as_slice() != digest {
            tracing::warn!(path = %path.display(), "compiled component in the cache is damaged; compiling again");
            return None;
        }
        // SAFETY: the bytes are exactly what `precompile_component` of an
        // engine with the same settings wrote (checked by the digest above,
        // and by the engine hash in the file name).
        match unsafe { Component::deserialize(&self.engine, compiled) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot use the cached compiled component; compiling again");
                None
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file; a failure is logged (the cache is optional).
pub(super) fn store_atomically(path: &Path, bytes: &[u8]) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled component");
    }
}
