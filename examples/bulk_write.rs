//! Bulk-writing records from code: what `unicache write` does, as a library
//! call. Records stream from any `Read` (here JSON Lines built in memory,
//! two of them bad on purpose) into two caches at once, in batches, and
//! the report accounts for every record: written, skipped (and why), or
//! failed.
//!
//! ```sh
//! cargo run --example bulk_write             # memory:// and a SQLite file in a temp dir
//! cargo run --example bulk_write -- URL...   # or caches of your own
//! ```

use std::sync::Arc;

use unicache::writer::{Progress, Target, WriteOptions, write_records};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        let sqlite = dir.path().join("bulk.sqlite3");
        urls = vec!["memory://".into(), format!("sqlite:{}", sqlite.display())];
    }
    let mut targets = Vec::new();
    for url in &urls {
        // `Target::name` is shown in reports: never a password.
        let name = unicache::open::redact(url);
        targets.push(Target {
            name,
            cache: unicache::open(url).await?.into(),
        });
    }

    // 10,000 records keyed by their "key" field, plus one without a key
    // and one line that is not JSON: both are skipped and reported.
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!("{{\"key\":\"user:{i}\",\"name\":\"user {i}\"}}\n"));
    }
    input.push_str("{\"name\":\"no key\"}\n{not json\n");

    let mut options = WriteOptions::default();
    options.batch_size = 500;
    let progress = Arc::new(Progress::default());
    let report = write_records(
        Box::new(std::io::Cursor::new(input.into_bytes())),
        "generated",
        &targets,
        &options,
        progress,
    )
    .await?;

    println!(
        "read {}, written {}, skipped {}, failed {}",
        report.records_read, report.records_written, report.records_skipped, report.records_failed
    );
    for r in &report.rejects {
        println!("  rejected: {}", serde_json::to_string(r)?);
    }
    for t in &targets {
        let back = t.cache.get("user:42").await?;
        println!(
            "{}: user:42 = {:?}",
            t.name,
            back.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
    }
    assert_eq!(report.records_read, 10_002);
    assert_eq!(
        report.records_written + report.records_skipped + report.records_failed,
        10_002
    );
    Ok(())
}
