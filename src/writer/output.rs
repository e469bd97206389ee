//! [`OutputFile`]: summaries, rejects and exports replace their path only
//! when complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An output file that replaces its path only when complete.
///
/// A regular file (or a new one) is written to a temporary file beside it,
/// created exclusively (`O_EXCL`, so never through a planted symlink) with a
/// random name and mode 0600 (it may hold cached data), which
/// [`OutputFile::commit`] fsyncs and renames over the path (over the real
/// file when the path is a symlink). Dropped uncommitted, it is removed and
/// the previous file is untouched. Anything else (`/dev/null`, a FIFO, a
/// terminal) is written directly and never fsynced. Errors name the path.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    temp: Option<PathBuf>,
    file: std::io::BufWriter<std::fs::File>,
}

impl OutputFile {
    /// Opens `path` for writing as described on [`OutputFile`].
    pub fn create(path: &Path) -> std::io::Result<OutputFile> {
        let named = |e: std::io::Error| named_error(path, e);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(named(std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "is a directory",
                )));
            }
            Ok(m) if !m.is_file() => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(named)?;
                return Ok(OutputFile {
                    path: path.to_path_buf(),
                    temp: None,
                    file: std::io::BufWriter::new(f),
                });
            }
            _ => {}
        }
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = match real.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = real.file_name().unwrap_or_default().to_string_lossy();
        loop {
            let temp = dir.join(format!(".{name}.{}.tmp", random_suffix()));
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.open(&temp) {
                Ok(f) => {
                    return Ok(OutputFile {
                        path: real,
                        temp: Some(temp),
                        file: std::io::BufWriter::with_capacity(1 << 16, f),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(named(e)),
            }
        }
    }

    /// The path this file replaces.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes; for a regular file also fsyncs it, renames it over the path
    /// and fsyncs the directory.
    pub fn commit(mut self) -> std::io::Result<()> {
        let named = |e| named_error(&self.path, e);
        self.file.flush().map_err(named)?;
        let Some(temp) = self.temp.as_ref() else {
            return Ok(());
        };
        self.file.get_ref().sync_all().map_err(named)?;
        std::fs::rename(temp, &self.path).map_err(named)?;
        self.temp = None;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf).map_err(|e| named_error(&self.path, e))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file
            .write_all(buf)
            .map_err(|e| named_error(&self.path, e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().map_err(|e| named_error(&self.path, e))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// The error with the path in front, kind kept (so a broken pipe stays one).
fn named_error(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// 64 bits no other process can guess: a randomly keyed SipHash of a
/// counter, the time and the pid.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
