//! A real small filesystem for full-disk tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fills the disk under `dir` with `dir/fill` (to the last byte a write
/// takes), then frees `free` bytes of it; returns the filler's path.
pub fn fill_leaving(dir: &Path, free: u64) -> PathBuf {
    let path = dir.join("fill");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 65536];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Whatever a short write left.
    while f.write(&[0]).is_ok_and(|n| n == 1) {}
    if free > 0 {
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(free)).unwrap();
    }
    path
}

/// A mounted tmpfs, unmounted when dropped (also when the test fails).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax, `2m`); `None` (after saying
    /// why) where mounting is not permitted, unless `CI=true`: CI runs as
    /// root, so there the test must run, not skip.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but a tmpfs cannot be mounted for the full-disk test: {why}"
        );
        eprintln!("SKIPPED: the full-disk test needs `mount -t tmpfs` (root): {why}");
        None
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |how: &[&str]| {
            let s = Command::new("umount")
                .args(how)
                .arg(self.dir.path())
                .status();
            s.is_ok_and(|s| s.success())
        };
        // Busy (a file still open): detach it now, freed when closed.
        let _ = umount(&[]) || umount(&["-l"]);
    }
}
