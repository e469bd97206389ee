//! A batch as the lanes share it: every key in one string and every value
//! in one buffer, with each record's ends. The reader copies each record in
//! and frees it at once, on its own thread; a lane then frees a batch as
//! three buffers. As separate `Record`s, each record's two buffers were
//! freed on whichever runtime thread dropped the batch last, away from the
//! thread that allocated them (the allocator's slow path, two frees a
//! record, on the threads the targets need).

use std::time::Duration;

use crate::records::{Position, Record};

/// Records packed for the lanes.
#[derive(Debug, Default)]
pub(crate) struct Packed {
    keys: String,
    values: Vec<u8>,
    ends: Vec<Ends>,
}

/// Where one record's key and value end, and what else it carries.
#[derive(Debug)]
struct Ends {
    position: Position,
    key: usize,
    value: usize,
    ttl: Option<Duration>,
}

/// One record of a [`Packed`] batch.
pub(crate) struct Rec<'a> {
    pub(crate) position: Position,
    pub(crate) key: &'a str,
    pub(crate) value: &'a [u8],
    pub(crate) ttl: Option<Duration>,
}

impl Packed {
    /// Room for `records` records the size of `like`'s (none: guessed), so
    /// a batch like the last one is filled without growing.
    pub(crate) fn with_room(records: usize, like: Option<&Packed>) -> Self {
        let per = |total: usize, n: usize, guess: usize| match n {
            0 => guess,
            n => total / n + 1,
        };
        let (k, v) = like.map_or((32, 256), |p| {
            (
                per(p.keys.len(), p.len(), 32),
                per(p.values.len(), p.len(), 256),
            )
        });
        Packed {
            keys: String::with_capacity(records * k),
            values: Vec::with_capacity(records * v),
            ends: Vec::with_capacity(records),
        }
    }

    /// Copies `r` in (and frees it).
    pub(crate) fn push(&mut self, r: Record) {
        self.keys.push_str(&r.key);
        self.values.extend_from_slice(&r.value);
        self.ends.push(Ends {
            position: r.position,
            key: self.keys.len(),
            value: self.values.len(),
            ttl: r.ttl,
        });
    }

    /// Records in the batch.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th record.
    pub(crate) fn get(&self, i: usize) -> Rec<'_> {
        let e = &self.ends[i];
        let (k0, v0) = match i {
            0 => (0, 0),
            _ => (self.ends[i - 1].key, self.ends[i - 1].value),
        };
        Rec {
            position: e.position,
            key: &self.keys[k0..e.key],
            value: &self.values[v0..e.value],
            ttl: e.ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_pushed() {
        let recs: Vec<Record> = (0..5u64)
            .map(|i| Record {
                position: Position {
                    record: i + 1,
                    line: i + 2,
                },
                key: "k".repeat(i as usize + 1) + "é",
                value: vec![b'v'; (i as usize) * 3],
                ttl: (i % 2 == 1).then(|| Duration::from_millis(i)),
            })
            .collect();
        let mut p = Packed::with_room(2, None);
        for r in recs.clone() {
            p.push(r);
        }
        let again = Packed::with_room(5, Some(&p));
        assert!(again.is_empty() && again.values.capacity() >= p.values.len());
        assert_eq!(p.len(), 5);
        for (i, r) in recs.iter().enumerate() {
            let got = p.get(i);
            assert_eq!(
                (got.position, got.key, got.value, got.ttl),
                (r.position, r.key.as_str(), r.value.as_slice(), r.ttl)
            );
        }
    }
}
