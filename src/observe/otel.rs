//! OpenTelemetry metrics over OTLP/HTTP (cargo feature `otel`): the
//! layer's `metrics`-facade figures bridged to an OpenTelemetry
//! `SdkMeterProvider` whose periodic reader pushes them, protobuf-encoded,
//! to a collector's `/v1/metrics`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use unicache::observe::otel::OtlpMetrics;
//!
//! // Pushes every 10 s to a collector on its default OTLP/HTTP port.
//! let otlp = OtlpMetrics::new("http://127.0.0.1:4318", Duration::from_secs(10))?;
//! metrics::set_global_recorder(otlp.recorder())?;
//! // ... open caches with CacheOptions::observe(true) and use them ...
//! otlp.shutdown()?; // a last export of the final figures
//! # Ok(()) }
//! ```
//!
//! Counters are exported as cumulative sums, gauges as gauges, latencies as
//! explicit-bucket histograms (the SDK's default buckets); the labels become
//! attributes; the resource's `service.name` is `unicache`.

use std::time::Duration;

use metrics_exporter_opentelemetry::Recorder;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::error::{Error, ErrorKind, Result};

/// How long one export may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// An OTLP/HTTP metrics pipeline. Dropping it without
/// [`OtlpMetrics::shutdown`] loses the figures since the last export.
#[derive(Debug)]
pub struct OtlpMetrics {
    provider: SdkMeterProvider,
    endpoint: String,
}

/// The URL exported to: a base URL (`http://host:4318`, as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`) gets `/v1/metrics` appended; one with a
/// path is used as given.
pub fn metrics_url(endpoint: &str) -> Result<String> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| invalid(format!("OTLP endpoint {endpoint:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "OTLP endpoint {endpoint:?}: only http:// and https:// (OTLP/HTTP) are supported"
        )));
    }
    Ok(if matches!(url.path(), "" | "/") {
        format!("{}/v1/metrics", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_string()
    })
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

impl OtlpMetrics {
    /// Builds the pipeline; it exports every `interval` (at least 10 ms)
    /// from a thread of its own. Nothing is sent until a recorder from
    /// [`OtlpMetrics::recorder`] has been installed and counts something.
    pub fn new(endpoint: &str, interval: Duration) -> Result<Self> {
        let url = metrics_url(endpoint)?;
        let exporter = MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| invalid(format!("OTLP exporter for {url}: {e}")))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(interval.max(Duration::from_millis(10)))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(Resource::builder().with_service_name("unicache").build())
            .build();
        Ok(OtlpMetrics {
            provider,
            endpoint: url,
        })
    }

    /// The URL the figures go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A `metrics` recorder feeding this pipeline, to install with
    /// `metrics::set_global_recorder` (alone, or beside another recorder
    /// through `metrics_util::layers::Fanout`).
    pub fn recorder(&self) -> Recorder {
        Recorder::with_meter(self.provider.meter("unicache"))
    }

    /// Exports the figures now. Blocks until the collector answered (or
    /// [`EXPORT_TIMEOUT`]): call it from a blocking context.
    pub fn flush(&self) -> Result<()> {
        self.provider
            .force_flush()
            .map_err(|e| self.export_error(e))
    }

    /// A last export, then stops the pipeline's thread. Blocks like
    /// [`OtlpMetrics::flush`].
    pub fn shutdown(self) -> Result<()> {
        self.provider.shutdown().map_err(|e| self.export_error(e))
    }

    fn export_error(&self, e: impl std::fmt::Display) -> Error {
        let text = e.to_string().replace(['\n', '\r'], " ");
        Error::new(
            ErrorKind::Connection,
            format!("OTLP export to {}: {text}", self.endpoint),
        )
    }
}
