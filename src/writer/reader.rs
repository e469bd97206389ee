//! The reader thread: parses and keys records into batches and hands each
//! batch to every lane.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::batch::Packed;
use super::{Batch, Progress, WriteOptions, rejects::Rejects};
use crate::error::Error;
use crate::records::{InputError, InputFormat, Item, read_records, sniff};

pub(super) fn format_name(f: Option<InputFormat>) -> &'static str {
    match f {
        Some(InputFormat::Seed) => "seed",
        Some(InputFormat::Array) => "array",
        Some(InputFormat::Jsonl | InputFormat::Entries) => "jsonl",
        Some(InputFormat::CacheFile) => "json",
        _ => "unknown",
    }
}

/// What the reader thread comes back with.
pub(super) struct ReaderOutcome {
    pub(super) result: Result<(), InputError>,
    pub(super) skipped: u64,
    /// Known as soon as the first bytes were read, even when reading failed later.
    pub(super) format: Option<InputFormat>,
}

/// Starts the thread that parses and keys records into batches and hands
/// each batch to every lane.
pub(super) fn spawn_reader(
    input: Box<dyn Read + Send>,
    source: &str,
    options: &WriteOptions,
    senders: Vec<mpsc::Sender<Batch>>,
    rejects: &Arc<Mutex<Rejects>>,
    progress: &Arc<Progress>,
) -> Result<std::thread::JoinHandle<ReaderOutcome>, Error> {
    let batch_size = options.batch_size.max(1);
    let policy = options.keys.clone();
    let format = options.format;
    let src = source.to_string();
    let rj = rejects.clone();
    let prog = progress.clone();
    let meters = crate::observe::writer::InputMeters::new();
    let send = move |batch: Packed| -> bool {
        let b: Batch = Arc::new(batch);
        // A lane that ended early (it never does on errors) is ignored.
        senders
            .iter()
            .map(|tx| tx.blocking_send(b.clone()).is_ok())
            .fold(false, |a, ok| a | ok)
            || senders.is_empty()
    };
    std::thread::Builder::new()
        .name("unicache-reader".into())
        .spawn(move || {
            // The format is known before the first record, so a run that
            // stops later still reports it.
            let (format, r) = match sniff(input, &src, format) {
                Ok(found) => found,
                Err(e) => {
                    return ReaderOutcome {
                        result: Err(e),
                        skipped: 0,
                        format: None,
                    };
                }
            };
            let mut batch = Packed::with_room(batch_size, None);
            let mut skipped = 0u64;
            let res = read_records(r, &src, format, &policy, |item| {
                prog.read.fetch_add(1, Ordering::Relaxed);
                meters.read();
                match item {
                    Item::Record(r) => {
                        batch.push(r);
                        if batch.len() >= batch_size {
                            let next = Packed::with_room(batch_size, Some(&batch));
                            return send(std::mem::replace(&mut batch, next));
                        }
                    }
                    Item::Rejected(r) => {
                        skipped += 1;
                        meters.skipped();
                        rj.lock().unwrap_or_else(|p| p.into_inner()).push(r, None);
                    }
                }
                true
            });
            if !batch.is_empty() {
                send(batch);
            }
            ReaderOutcome {
                result: res.map(|_| ()),
                skipped,
                format: Some(format),
            }
        })
        .map_err(|e| Error::from(e).with_context("op", "spawn reader"))
}
