//! The files a command reads and writes: which store files a cache URL
//! names, and the guard that refuses an output path that is one of the run's
//! own inputs or stores. Paths are compared by file identity (device and
//! inode, or the canonical directory and name of a file not yet there),
//! never by spelling, and before anything is opened for writing.

use std::path::{Path, PathBuf};

use anyhow::bail;
use unicache::backends::BackendConfig;

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
        // Through a directory still to be created (`new/../x`): the file
        // it will name may exist already.
        Err(_) => {
            let r = resolved(p)?;
            Some(match std::fs::metadata(&r) {
                Ok(m) => existing(&m, &r),
                Err(_) => FileId::Path(r),
            })
        }
    }
}

/// The absolute path `p` will have once its missing directories are
/// created: the longest existing ancestor canonicalized (symlinks followed),
/// the rest applied lexically (a directory that does not exist yet cannot be
/// a link, so `new/../x` is `x`).
fn resolved(p: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(p)
    };
    let mut cur = PathBuf::new();
    let mut exists = true;
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(name) => {
                cur.push(name);
                if exists {
                    match std::fs::canonicalize(&cur) {
                        Ok(real) => cur = real,
                        Err(_) => exists = false,
                    }
                }
            }
            other => cur.push(other.as_os_str()),
        }
    }
    Some(cur)
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
/// companions it creates beside it); none for servers and memory. A path
/// that is a symlink adds the real file's companions: the file log locks
/// `REAL.lock` and SQLite names its journals after the real file, so an
/// output named after the real file is one of the store's too.
pub fn store_files(backend: &BackendConfig) -> Vec<PathBuf> {
    // The backend names its files (the registry's `local_files`).
    let files = backend.local_files();
    let Some(path) = files.first() else {
        return files;
    };
    let mut out = files.clone();
    if let Some(real) = resolve_links(path).filter(|r| r != path) {
        let base = path.as_os_str().as_encoded_bytes().len();
        for f in &files {
            let suffix = String::from_utf8_lossy(&f.as_os_str().as_encoded_bytes()[base..]);
            let mut s = real.as_os_str().to_os_string();
            s.push(&*suffix);
            out.push(PathBuf::from(s));
        }
    }
    out
}

/// Follows symlinks at `path` (at most 40, as the kernel does) to the file
/// they name, as the file log does at open; a dangling link gives the path it
/// names. `None` for a loop or an unreadable link.
fn resolve_links(path: &Path) -> Option<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).ok()?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Some(p),
        }
    }
    None
}

/// The main file of a local store, when the backend has one.
pub fn store_file(backend: &BackendConfig) -> Option<PathBuf> {
    backend.local_files().into_iter().next()
}

/// Refuses any output (flag, path) that is the same file as a protected
/// one (description, path), as another output, or as the file that standard
/// input is redirected from (`import - --rejects in.jsonl < in.jsonl`
/// replaced its input). Outputs that exist and are not regular files
/// (`/dev/null`, a FIFO) are never truncated, so they are not checked.
pub fn refuse_overlaps(
    outputs: &[(&str, &Path)],
    protected: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    let mut protected = protected.to_vec();
    let stdin = Path::new("/dev/stdin");
    if cfg!(unix) && std::fs::metadata(stdin).is_ok_and(|m| m.is_file()) {
        protected.push(("the standard input".to_string(), stdin.to_path_buf()));
    }
    for (i, (flag, out)) in outputs.iter().enumerate() {
        let Some(id) = identity(out) else { continue };
        let others = outputs[..i]
            .iter()
            .map(|(f, p)| (format!("the {f} file"), p.to_path_buf()));
        // A device or FIFO is never truncated, so only another output may
        // not share it (two streams interleaved); `/dev/null` takes both.
        let special = std::fs::metadata(out).is_ok_and(|m| !m.is_file());
        if special && std::fs::canonicalize(out).is_ok_and(|p| p == Path::new("/dev/null")) {
            continue;
        }
        let protected = protected.iter().filter(|_| !special).cloned();
        for (what, p) in protected.chain(others) {
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

/// Refuses an input that is one of the stores being written (a file log
/// read while the run appends to it would never end), by file identity.
pub fn refuse_input_in_stores(input: &Path, stores: &[(String, PathBuf)]) -> anyhow::Result<()> {
    if !std::fs::metadata(input).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let Some(id) = identity(input) else {
        return Ok(());
    };
    for (what, p) in stores {
        if identity(p).as_ref() == Some(&id) {
            bail!(
                "the input {} is {what} ({}); refusing to read a store while writing it",
                input.display(),
                p.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_resolve_lexically_after_the_existing_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let p = dir.path().join("nd").join("..").join("x.json");
        assert_eq!(resolved(&p).unwrap(), real.join("x.json"));
        let q = dir
            .path()
            .join("a")
            .join(".")
            .join("b")
            .join("..")
            .join("c");
        assert_eq!(resolved(&q).unwrap(), real.join("a").join("c"));
    }
}
