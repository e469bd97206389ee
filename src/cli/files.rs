//! The files a command reads and writes: which store files a cache URL
//! names, and the guard that refuses an output path that is one of the run's
//! own inputs or stores. Paths are compared by file identity (device and
//! inode, or the canonical directory and name of a file not yet there),
//! never by spelling, and before anything is opened for writing.

use std::path::{Path, PathBuf};

use anyhow::bail;
use unicache::url::BackendConfig;

/// What a path is, whatever it was called.
#[derive(Debug, PartialEq, Eq)]
enum FileId {
    /// An existing file.
    Inode(u64, u64),
    /// A file not there yet: canonical parent directory plus name.
    Path(PathBuf),
}

fn identity(p: &Path) -> Option<FileId> {
    match std::fs::metadata(p) {
        Ok(m) => Some(existing(&m, p)),
        Err(_) => {
            let parent = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let dir = std::fs::canonicalize(parent).ok()?;
            Some(FileId::Path(dir.join(p.file_name()?)))
        }
    }
}

#[cfg(unix)]
fn existing(m: &std::fs::Metadata, _: &Path) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId::Inode(m.dev(), m.ino())
}

#[cfg(not(unix))]
fn existing(_: &std::fs::Metadata, p: &Path) -> FileId {
    FileId::Path(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// The files a store of this backend lives in (the main file and the
/// companions it creates beside it); none for servers and memory.
pub fn store_files(backend: &BackendConfig) -> Vec<PathBuf> {
    let with = |p: &Path, suffix: &str| {
        let mut s = p.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    match backend {
        BackendConfig::Sqlite(c) => ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|s| with(&c.path, s))
            .collect(),
        BackendConfig::File(c) => vec![c.path.clone(), with(&c.path, ".lock")],
        _ => Vec::new(),
    }
}

/// The main file of a local store, when the backend has one.
pub fn store_file(backend: &BackendConfig) -> Option<PathBuf> {
    match backend {
        BackendConfig::Sqlite(c) => Some(c.path.clone()),
        BackendConfig::File(c) => Some(c.path.clone()),
        _ => None,
    }
}

/// Refuses any output (flag, path) that is the same file as a protected
/// one (description, path) or as another output. Outputs that exist and
/// are not regular files (`/dev/null`, a FIFO) are never truncated, so they
/// are not checked.
pub fn refuse_overlaps(
    outputs: &[(&str, &Path)],
    protected: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    for (i, (flag, out)) in outputs.iter().enumerate() {
        if std::fs::metadata(out).is_ok_and(|m| !m.is_file()) {
            continue;
        }
        let Some(id) = identity(out) else { continue };
        let others = outputs[..i]
            .iter()
            .map(|(f, p)| (format!("the {f} file"), p.to_path_buf()));
        for (what, p) in protected.iter().cloned().chain(others) {
            if identity(&p).as_ref() == Some(&id) {
                bail!(
                    "{flag} {} is {what} ({}); refusing to overwrite it, choose another path",
                    out.display(),
                    p.display()
                );
            }
        }
    }
    Ok(())
}
