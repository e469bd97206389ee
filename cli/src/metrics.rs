//! Prometheus exposition for the CLI: the recorder (installed only when a
//! command asks for metrics) and a tiny HTTP server for `/metrics`.
//!
//! The server is ours rather than the exporter's hyper listener: it refreshes
//! each cache's own figures (`stats()`: evictions, entries) before every
//! scrape, and `write` can keep it up after the run until the final figures
//! have been scraped once (`--metrics-linger`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Latency buckets (seconds): 1 µs to 10 s, so the histogram serves both
/// in-process (sub-microsecond) and network backends.
const BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    prometheus_builder()?
        .install_recorder()
        .context("installing the metrics recorder")
}

fn prometheus_builder() -> anyhow::Result<PrometheusBuilder> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .context("metrics buckets")
}

/// The recorders a command installed: Prometheus for `/metrics`, an
/// OTLP/HTTP pipeline for `--otlp-endpoint`, or both through a fan-out.
pub struct Recorders {
    /// Renders the exposition, when Prometheus was asked for.
    pub prometheus: Option<PrometheusHandle>,
    #[cfg(feature = "otel")]
    otlp: Option<unicache::observe::otel::OtlpMetrics>,
}

impl Recorders {
    /// Installs what was asked for as the process's recorder: Prometheus
    /// with `prometheus`, OTLP/HTTP pushes to `otlp` (endpoint, interval).
    pub fn install(prometheus: bool, otlp: Option<(&str, Duration)>) -> anyhow::Result<Self> {
        let Some((endpoint, every)) = otlp else {
            return Ok(Recorders {
                prometheus: prometheus.then(install).transpose()?,
                #[cfg(feature = "otel")]
                otlp: None,
            });
        };
        #[cfg(feature = "otel")]
        {
            let pipeline = unicache::observe::otel::OtlpMetrics::new(endpoint, every)?;
            let mut fanout =
                metrics_util::layers::FanoutBuilder::default().add_recorder(pipeline.recorder());
            let mut handle = None;
            if prometheus {
                let recorder = prometheus_builder()?.build_recorder();
                handle = Some(recorder.handle());
                fanout = fanout.add_recorder(recorder);
            }
            metrics::set_global_recorder(fanout.build())
                .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
            Ok(Recorders {
                prometheus: handle,
                otlp: Some(pipeline),
            })
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = (endpoint, every);
            anyhow::bail!(
                "--otlp-endpoint: this unicache was built without OpenTelemetry; rebuild with --features otel"
            )
        }
    }

    /// Whether any recorder counts (the observe layer is worth turning on).
    pub fn any(&self) -> bool {
        #[cfg(feature = "otel")]
        if self.otlp.is_some() {
            return true;
        }
        self.prometheus.is_some()
    }

    /// Pushes the final figures to the OTLP endpoint (a failure is a
    /// warning: the command's own work is done).
    pub async fn finish(self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.otlp {
            let done = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = done {
                super::note(&format!("warning: {e}"));
            }
        }
    }
}

/// Refreshes the caches' own figures (the observe layer publishes them on
/// `stats()`), then renders the exposition.
pub async fn render(handle: &PrometheusHandle, caches: &[Arc<dyn unicache::Cache>]) -> String {
    for c in caches {
        // A cache that cannot answer keeps its last figures.
        let _ = tokio::time::timeout(Duration::from_secs(2), c.stats()).await;
    }
    handle.render()
}

/// A running `/metrics` server.
pub struct Server {
    /// The address it listens on (the port is known when 0 was asked for).
    pub addr: SocketAddr,
    scraped: watch::Receiver<u64>,
    finished: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (before any target is opened: a busy port creates
    /// nothing).
    pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}"))
    }

    /// Serves `/metrics` on `listener` until dropped.
    pub fn start(
        listener: TcpListener,
        handle: PrometheusHandle,
        caches: Vec<Arc<dyn unicache::Cache>>,
    ) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        let (tx, scraped) = watch::channel(0u64);
        let finished = Arc::new(AtomicBool::new(false));
        let state = Arc::new((handle, caches, tx, finished.clone()));
        let task = tokio::spawn(async move {
            loop {
                let conn = match listener.accept().await {
                    Ok((conn, _)) => conn,
                    Err(_) => {
                        // Out of descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let ok = tokio::time::timeout(Duration::from_secs(10), async {
                        serve(conn, &state.0, &state.1, &state.3).await
                    })
                    .await;
                    if matches!(ok, Ok(Ok(true))) {
                        state.2.send_modify(|n| *n += 1);
                    }
                });
            }
        });
        Ok(Server {
            addr,
            scraped,
            finished,
            task,
        })
    }

    /// Serves on after the run until one more scrape has been answered, or
    /// `linger` has passed, whichever comes first.
    pub async fn linger(mut self, linger: Duration) {
        if linger.is_zero() {
            return;
        }
        self.scraped.mark_unchanged();
        self.finished.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(linger, self.scraped.changed()).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one request; true when it was a `/metrics` scrape rendered after
/// the run had `finished` (so it holds the final figures).
async fn serve(
    mut conn: tokio::net::TcpStream,
    handle: &PrometheusHandle,
    caches: &[Arc<dyn unicache::Cache>],
    finished: &AtomicBool,
) -> std::io::Result<bool> {
    // The request head, at most 8 KiB; the body (if any) is ignored.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body, scrape) = match (method, path) {
        ("GET", "/metrics") => {
            let last = finished.load(Ordering::SeqCst);
            let body = render(handle, caches).await;
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body,
                last,
            )
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics\n".into(),
            false,
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".into(),
            false,
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await?;
    Ok(scrape)
}
