//! The plugins-dir watcher: a new or changed `<processor>.wasm` is
//! uploaded and activated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Admin;

/// Polls `dir` every `interval` until `stop` is set: a new or changed
/// `<processor>.wasm` (by size and modification time) whose SHA-256 is not
/// the processor's active version is uploaded and activated. Files named
/// after no processor are ignored; a refused upload is logged.
pub(super) async fn watch(
    admin: Arc<Admin>,
    dir: PathBuf,
    interval: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut seen: BTreeMap<PathBuf, (u64, std::time::SystemTime)> = BTreeMap::new();
    let mut first = true;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let a = admin.clone();
        let d = dir.clone();
        let mut s = std::mem::take(&mut seen);
        let f = first;
        seen = tokio::task::spawn_blocking(move || {
            watch_once(&a, &d, &mut s, f);
            s
        })
        .await
        .unwrap_or_default();
        first = false;
        tokio::time::sleep(interval).await;
    }
}

fn watch_once(
    admin: &Admin,
    dir: &Path,
    seen: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
    first: bool,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        if first {
            tracing::warn!(dir = %dir.display(), "the plugins directory to watch cannot be read");
        }
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
        else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        let stamp = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        if seen.get(&path) == Some(&stamp) {
            continue;
        }
        seen.insert(path.clone(), stamp);
        let Some(m) = admin.processors.get(name) else {
            // Said once per change of the file, so a misnamed one is noticed.
            tracing::warn!(
                file = %path.display(),
                processors = ?admin.processors.keys().collect::<Vec<_>>(),
                "the watched file names no running processor (NAME.wasm deploys to processor NAME); left alone"
            );
            continue;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let st = m.control.status();
        if st.active_version == sha || st.pending_version.as_deref() == Some(sha.as_str()) {
            continue;
        }
        match admin
            .upload(name, &bytes, None)
            .and_then(|(info, _)| admin.activate(name, &info.sha256, "watch", None))
        {
            Ok(v) => {
                tracing::info!(processor = %name, version = %v, file = %path.display(), "deployed from the watched directory")
            }
            Err(e) => {
                tracing::warn!(processor = %name, file = %path.display(), code = e.code, error = %e.message, "the watched file was not deployed")
            }
        }
    }
}
