//! Read-through in a web handler: `GET /users/{id}` answers from the cache
//! and calls the (slow) database once per key however many requests for it
//! arrive together: `Handle::get_or_set_json` runs one factory per key and
//! hands its value to every waiter (single-flight), then serves from the
//! cache until the TTL.
//!
//! ```sh
//! cargo run --example axum_read_through                     # a demo: 50 requests at once, then exits
//! cargo run --example axum_read_through -- --serve 127.0.0.1:3000
//! UNICACHE_URL='redis://127.0.0.1:6379?namespace=web' cargo run --example axum_read_through
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unicache::{Fill, Handle};

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Clone)]
struct App {
    cache: Handle,
    /// How often the "database" was asked.
    db_calls: Arc<AtomicU64>,
}

/// The route: the cache first, the database on a miss (once per key).
async fn user(
    State(app): State<App>,
    Path(id): Path<u64>,
) -> Result<Json<User>, (StatusCode, String)> {
    let db_calls = app.db_calls.clone();
    let found = app
        .cache
        .get_or_set_json(
            &format!("user:{id}"),
            Some(Duration::from_secs(60)),
            move || async move {
                db_calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await; // the slow query
                Ok(Fill::Cache(User {
                    id,
                    name: format!("user {id}"),
                }))
            },
        )
        .await;
    // A cache that is down is a 503 here; with `fail_safe=1` in the URL a
    // stale copy would be served instead.
    found
        .map(Json)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// One plain HTTP/1.1 GET (the demo needs no HTTP client crate).
async fn fetch(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("UNICACHE_URL").unwrap_or_else(|_| "memory://?capacity=10000".into());
    let app = App {
        cache: unicache::open(&url).await?,
        db_calls: Arc::new(AtomicU64::new(0)),
    };
    let router = axum::Router::new()
        .route("/users/{id}", get(user))
        .with_state(app.clone());
    let args: Vec<String> = std::env::args().collect();
    if let Some(addr) = args
        .iter()
        .position(|a| a == "--serve")
        .and_then(|i| args.get(i + 1))
    {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "serving on http://{addr}/users/1 (cache: {})",
            unicache::open::redact(&url)
        );
        axum::serve(listener, router).await?;
        return Ok(());
    }

    // The demo: 50 requests for one user at once, on a free loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let answers = futures::future::join_all((0..50).map(|_| fetch(addr, "/users/7"))).await;
    let ok = answers
        .iter()
        .filter(|a| {
            a.as_ref()
                .is_ok_and(|a| a.starts_with("HTTP/1.1 200") && a.contains("\"user 7\""))
        })
        .count();
    let calls = app.db_calls.load(Ordering::Relaxed);
    println!("50 concurrent requests: {ok} answered 200, the database was asked {calls} time(s)");
    let again = fetch(addr, "/users/7").await?;
    println!("one more request: {}", again.lines().next().unwrap_or(""));
    let stats = app.cache.cache().stats().await?;
    println!("cache: {} hits, {} misses", stats.hits, stats.misses);
    if ok != 50 || app.db_calls.load(Ordering::Relaxed) != 1 {
        return Err("expected 50 answers from one database call".into());
    }
    Ok(())
}
