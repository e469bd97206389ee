//! Export: every live entry of a namespace, streamed from a read-only
//! connection of its own in batches.

use super::*;

/// Runs [`SELECT_ENTRIES`] and sends its rows in batches until done or
/// the receiver is gone. A row that cannot be read is an error item naming
/// its key; the rows after it still come.
pub(super) fn stream_entries(
    conn: &Connection,
    path: &Path,
    ns: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<Entry>>>,
) {
    let now = now_millis() as i64;
    let run = || -> rusqlite::Result<()> {
        let mut st = conn.prepare(SELECT_ENTRIES)?;
        let mut rows = st.query(params![ns, now])?;
        let mut batch = Vec::with_capacity(ENTRY_BATCH);
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            let value: Option<Vec<u8>> = row.get(1)?;
            let exp: Option<i64> = row.get(2)?;
            let Some(value) = value else {
                let sent = std::mem::take(&mut batch);
                if tx.blocking_send(Ok(sent)).is_err()
                    || tx.blocking_send(Err(null_value(path, &key))).is_err()
                {
                    return Ok(());
                }
                continue;
            };
            let ttl = exp.map(|t| Duration::from_millis(t.saturating_sub(now).max(1) as u64));
            batch.push(Entry::new(key, Bytes::from(value), ttl));
            if batch.len() == ENTRY_BATCH
                && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
            {
                return Ok(()); // the reader stopped listening
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = tx.blocking_send(Err(sql_err(path, e).with_context("op", "entries")));
    }
}
