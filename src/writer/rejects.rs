//! Skipped and failed records: the summary's first few and the rejects file.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::OutputFile;
use crate::records::{Position, Rejected};

pub(super) const MAX_SAMPLES: usize = 20;

/// One skipped or failed record, as listed in the summary and written to the
/// rejects file.
#[derive(Debug, Clone, Serialize)]
pub struct RejectEntry {
    /// Where it was in the input.
    pub position: Position,
    /// The target it failed on; `None` when it was skipped while reading.
    pub target: Option<String>,
    /// Why.
    pub reason: String,
    /// Its text (compact JSON when it parsed).
    pub record: String,
}

/// Shared sink for rejected/failed records.
pub(super) struct Rejects {
    pub(super) file: Option<OutputFile>,
    pub(super) sample: Vec<RejectEntry>,
    pub(super) omitted: u64,
    pub(super) error: Option<String>,
}

impl Rejects {
    /// Creates the rejects file at `path`, if any (an [`OutputFile`]).
    pub(super) fn open(path: Option<&Path>) -> Result<Rejects, crate::Error> {
        let file = match path {
            None => None,
            Some(p) => Some(OutputFile::create(p).map_err(|e| {
                crate::Error::new(crate::ErrorKind::Io, format!("cannot write rejects to {e}"))
            })?),
        };
        Ok(Rejects {
            file,
            sample: Vec::new(),
            omitted: 0,
            error: None,
        })
    }

    pub(super) fn push(&mut self, r: Rejected, target: Option<&str>) {
        let entry = RejectEntry {
            position: r.position,
            target: target.map(str::to_string),
            reason: r.reason,
            record: r.raw,
        };
        if let Some(f) = &mut self.file
            && self.error.is_none()
        {
            let res = serde_json::to_writer(&mut *f, &entry)
                .map_err(std::io::Error::from)
                .and_then(|_| f.write_all(b"\n"));
            if let Err(e) = res {
                self.error = Some(format!("cannot write rejects to {e}"));
            }
        }
        if self.sample.len() < MAX_SAMPLES {
            self.sample.push(entry);
        } else {
            self.omitted += 1;
        }
    }

    /// Completes the rejects file; returns the first error.
    pub(super) fn finish(&mut self) -> Option<String> {
        if let Some(f) = self.file.take()
            && self.error.is_none()
            && let Err(e) = f.commit()
        {
            self.error = Some(format!("cannot write rejects to {e}"));
        }
        self.error.take()
    }

    /// The summary's pointer to the full list, when it is cut short.
    pub(super) fn note(&self, path: Option<&Path>) -> Option<String> {
        (self.omitted > 0).then(|| match path {
            Some(p) => format!(
                "only the first {MAX_SAMPLES} are listed; all are in {}",
                p.display()
            ),
            None => format!(
                "only the first {MAX_SAMPLES} are listed; write them all with --rejects PATH"
            ),
        })
    }
}
