//! The files around the log: the real path behind symlinks, the lock file,
//! compaction's temporary files and the cleanup of stale ones.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Follows symlinks (at most 40, as the kernel does) to the file they name,
/// so compaction renames over the real file, not over the link.
pub(super) fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// `PATH` + `suffix`.
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Opens (creating unless `create` is false) a file with mode 0600.
pub(super) fn open_private(path: &Path, append: bool, create: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).create(create).mode(0o600);
    if append {
        o.append(true);
    } else {
        o.write(true);
    }
    o.open(path)
}

/// Opens the lock file, refusing a symlink there (it must not create or
/// write files elsewhere: writers keep a record in it, `shared`). A lock file created here
/// takes the owner, group and read/write bits of the log `like` when it
/// exists, so everyone who may write a shared log (0664, group `daemon`) may
/// also lock it; 0600 otherwise.
pub(super) fn open_lock(path: &Path, like: &Path) -> io::Result<File> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::other(
            "the lock file is a symbolic link; refusing to follow it",
        ));
    }
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(f) => {
            if let Ok(log) = File::open(like) {
                keep_owner_and_mode(&log, &f, 0o666)?;
            }
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open_private(path, false, false),
        Err(e) => Err(e),
    }
}

/// The lock file when it exists and is no symlink (opened read-write, not
/// created): `None` otherwise.
pub(super) fn open_existing_lock(path: &Path) -> Option<File> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return None;
    }
    open_private(path, false, false).ok()
}

/// Gives `to` the owner, group and permission bits (within `bits`) of
/// `from`: a file that replaces or accompanies a log must not change who may
/// read and write it. The owner and group are set as far as this process may
/// (root: both; otherwise the group when it is one of ours), with a warning
/// when they cannot be; the mode always (chmod after chown, which clears
/// set-id bits).
pub(super) fn keep_owner_and_mode(from: &File, to: &File, bits: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = from.metadata()?;
    let t = to.metadata()?;
    if (m.uid(), m.gid()) != (t.uid(), t.gid())
        && std::os::unix::fs::fchown(to, Some(m.uid()), Some(m.gid())).is_err()
        && std::os::unix::fs::fchown(to, None, Some(m.gid())).is_err()
    {
        tracing::warn!(
            uid = m.uid(),
            gid = m.gid(),
            "cannot give the rewritten file the log's owner and group (not permitted); \
             it is owned by this process's user"
        );
    }
    to.set_permissions(std::fs::Permissions::from_mode(m.mode() & bits))
}

/// An unpredictable 64-bit number (std's per-process random hash keys, the
/// time and a counter): enough to make temporary names unguessable.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// The marker of compaction temp files: `PATH.compact-<pid>-<random>`.
const TEMP_MARK: &str = ".compact-";

/// Creates `PATH.compact-<pid>-<random hex>` exclusively (O_EXCL: never an
/// existing file, never through a symlink), mode 0600, and locks it so other
/// processes see it is in use. Returns its path and the open file.
pub(super) fn create_temp(real: &Path) -> io::Result<(PathBuf, File)> {
    let mut last = io::Error::other("no temporary name was free");
    for _ in 0..16 {
        let name = format!("{TEMP_MARK}{}-{:016x}", std::process::id(), random_u64());
        let tmp = with_suffix(real, &name);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp);
        match opened {
            Ok(f) => {
                if let Err(e) = f.lock() {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The pid in a temp file name after `PATH.compact-` (`<pid>` as older
/// versions named them, or `<pid>-<hex>`).
fn temp_pid(rest: &str) -> Option<u32> {
    let (pid, tail) = rest.split_once('-').unwrap_or((rest, ""));
    let hex_ok = tail.chars().all(|c| c.is_ascii_hexdigit());
    (hex_ok && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| pid.parse().ok())
        .flatten()
}

fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the `PATH.compact-*` files that compactions killed mid-run left:
/// regular files whose writer process is gone and that nobody holds locked
/// (a running compaction locks its file). Symlinks and anything else that
/// does not look like ours are left alone. Returns how many went.
pub(super) fn remove_stale_temps(real: &Path) -> usize {
    let Some(name) = real.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    let dir = match real.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let prefix = format!("{name}{TEMP_MARK}");
    let mut removed = 0;
    for e in entries.flatten() {
        let fname = e.file_name();
        let Some(rest) = fname.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = temp_pid(rest) else { continue };
        if pid != std::process::id() && pid_alive(pid) {
            continue;
        }
        if is_stale_file(&e.path()) && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(path = %e.path().display(), "removed a stale compaction temp file");
            removed += 1;
        }
    }
    removed
}

/// A regular file (not a link) that no process holds locked.
fn is_stale_file(path: &Path) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !m.file_type().is_file() {
        return false;
    }
    let Ok(f) = File::open(path) else {
        return false;
    };
    // The same file we looked at (not swapped for a link meanwhile).
    let same = f
        .metadata()
        .is_ok_and(|fm| (fm.dev(), fm.ino()) == (m.dev(), m.ino()));
    same && f.try_lock().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse() {
        assert_eq!(temp_pid("123"), Some(123));
        assert_eq!(temp_pid("123-00ff"), Some(123));
        assert_eq!(temp_pid("x123"), None);
        assert_eq!(temp_pid("123-zz"), None);
        assert_eq!(temp_pid(""), None);
    }

    #[test]
    fn resolves_relative_and_chained_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("real"), b"").unwrap();
        std::os::unix::fs::symlink("real", d.path().join("l1")).unwrap();
        std::os::unix::fs::symlink(d.path().join("l1"), d.path().join("l2")).unwrap();
        assert_eq!(
            resolve_links(&d.path().join("l2")).unwrap(),
            d.path().join("real")
        );
        std::os::unix::fs::symlink("loop", d.path().join("loop")).unwrap();
        assert!(resolve_links(&d.path().join("loop")).is_err());
    }
}
