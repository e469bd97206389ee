//! What processes sharing a version-2 log tell each other through its lock
//! file: a record of which file is the log (device, inode), how long it is
//! and a generation, written by every writer before it releases the lock.
//! A reader compares it with what it has indexed (one `pread` of the lock
//! file, kept open) and looks the path up (`stat`) only when they differ:
//! no path lookup per operation.
//!
//! A compaction makes the generation odd before it renames the new file
//! over the log and even again after, so a compaction killed in between
//! leaves an odd generation: readers then check the path on every
//! operation until the next writer (which always checks the path, under
//! the lock) writes a record that is whole again. A writer killed after
//! appending and before writing the record leaves a record that no longer
//! matches the file for those who read it since, and a record that still
//! matches for those who did not: they see the lines (which no caller was
//! told were written) at the next write. A log replaced or truncated by
//! hand, not through unicache, is noticed by readers at the next write.
//!
//! The record is 40 bytes at offset 0: `ucg1`, the CRC-32 of the rest,
//! then generation, device, inode and length as little-endian u64s. Older
//! versions never read or write the lock file's bytes (they only lock it).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The record's size in bytes.
const LEN: usize = 40;
const MAGIC: &[u8; 4] = b"ucg1";

/// The shared record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    /// Even; odd while a compaction replaces the log.
    pub generation: u64,
    /// (device, inode) of the log.
    pub id: (u64, u64),
    /// The log's length.
    pub len: u64,
}

impl Record {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.id.1.to_le_bytes());
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        let crc = crc32fast::hash(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None`: no record there, or a damaged one (a torn read of a record
    /// being written included).
    fn decode(b: &[u8; LEN]) -> Option<Record> {
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(b[4..8].try_into().unwrap_or_default());
        (&b[..4] == MAGIC && crc32fast::hash(&b[8..]) == crc).then(|| Record {
            generation: word(8),
            id: (word(16), word(24)),
            len: word(32),
        })
    }

    /// A compaction is replacing the log (or was killed doing it).
    pub fn replacing(&self) -> bool {
        self.generation % 2 == 1
    }
}

/// The record in the lock file `f`, if it holds a whole one.
pub(super) fn read(f: &File) -> Option<Record> {
    let mut b = [0u8; LEN];
    f.read_exact_at(&mut b, 0).ok()?;
    Record::decode(&b)
}

/// Writes `r` into the lock file `f`. When that fails, the lock file is
/// emptied (which needs no space), so that no reader trusts an outdated
/// record: without one they look at the path.
pub(super) fn write(f: &File, r: &Record) -> io::Result<()> {
    f.write_all_at(&r.encode(), 0).inspect_err(|_| {
        let _ = f.set_len(0);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_no_record() {
        let r = Record {
            generation: 6,
            id: (2049, 1 << 40),
            len: 123_456_789,
        };
        let b = r.encode();
        assert_eq!(Record::decode(&b), Some(r));
        for i in 0..LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert_eq!(Record::decode(&bad), None, "byte {i}");
        }
        assert_eq!(Record::decode(&[0; LEN]), None);
        let f = tempfile::tempfile().unwrap();
        assert_eq!(read(&f), None, "an empty lock file");
        write(&f, &r).unwrap();
        assert_eq!(read(&f), Some(r));
        assert!(!r.replacing());
        assert!(Record { generation: 7, ..r }.replacing());
    }
}
