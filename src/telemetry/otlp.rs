//! OTLP export of the spans (`--otlp-endpoint`): a batch span processor
//! hands them to an OTLP/gRPC collector (the OpenTelemetry Collector,
//! Jaeger's port 4317, Tempo...). A collector that cannot be reached costs
//! the bus nothing but the spans: the batch runs on its own thread, a full
//! queue drops spans, and a warning says so once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::Uri;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Level;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::TARGET;

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go: the URL of an OTLP/gRPC collector, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    /// `http://HOST:PORT` or `https://HOST:PORT`; the error says what is
    /// wrong with `value`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let expected = "expected the URL of an OTLP/gRPC collector such as http://localhost:4317";
        let uri: Uri = value
            .parse()
            .map_err(|error| format!("{expected}, got {value:?}: {error}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(scheme) => return Err(format!("{expected}, got the scheme {scheme:?} in {value:?}")),
            None => return Err(format!("{expected}, got {value:?} without http:// or https://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{expected}, got {value:?} without a host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{expected}, got {value:?} with a path: OTLP/gRPC has none (the HTTP protocol's /v1/traces is not supported)"
            ));
        }
        Ok(Self(value.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export to {endpoint}: {reason}")]
pub struct ExportError {
    endpoint: String,
    reason: String,
}

/// The span pipeline to one collector; [`Exporter::shutdown`] flushes it.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Starts exporting to `endpoint`. Call it inside the Tokio runtime
    /// that will outlive the exporter: the gRPC channel's connection task
    /// runs there. Connects lazily; nothing is sent until spans are.
    pub fn start(endpoint: &OtlpEndpoint) -> Result<Self, ExportError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.as_str())
            .build()
            .map_err(|error| ExportError {
                endpoint: endpoint.as_str().to_owned(),
                reason: error.to_string(),
            })?;
        let resource = Resource::builder()
            .with_service_name("agentbus")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(WarnOnFailure::new(exporter, endpoint))
            .with_resource(resource)
            .build();
        Ok(Self { provider })
    }

    /// The tracing layer that turns the bus's spans into OpenTelemetry
    /// spans for this exporter: only the spans of [`super`], and the
    /// bus's INFO events inside them as span events.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("agentbus"))
            // Every span starts in one module: its location says nothing.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            // Busy and idle time cost two clock reads per poll.
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_target("agentbus", Level::INFO)
                    .with_target(TARGET, Level::DEBUG),
            )
    }

    /// Exports what is still queued and stops. Blocks: call it outside the
    /// runtime's tasks, while the runtime still runs.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(target: TARGET, %error, "flushing the last spans over OTLP failed; they are lost");
        }
    }
}

/// Says once that the collector cannot take spans (and once that it can
/// again), instead of a line for every failed batch or none at all.
#[derive(Debug)]
struct WarnOnFailure<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E> WarnOnFailure<E> {
    fn new(inner: E, endpoint: &OtlpEndpoint) -> Self {
        Self {
            inner,
            endpoint: endpoint.as_str().to_owned(),
            failing: AtomicBool::new(false),
        }
    }

    fn observe(&self, result: &OTelSdkResult, spans: usize) {
        match result {
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: TARGET,
                        endpoint = %self.endpoint,
                        %error,
                        spans,
                        "cannot export spans over OTLP; dropping them until the collector takes them again"
                    );
                } else {
                    tracing::debug!(target: TARGET, %error, spans, "dropped spans: OTLP export failed");
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: TARGET, endpoint = %self.endpoint, "exporting spans over OTLP again");
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for WarnOnFailure<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.observe(&result, spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls_are_checked() {
        for good in [
            "http://localhost:4317",
            "https://otel.example.com",
            "http://127.0.0.1:4317/",
        ] {
            assert!(OtlpEndpoint::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            OtlpEndpoint::parse("http://127.0.0.1:4317/").unwrap().as_str(),
            "http://127.0.0.1:4317"
        );
        for (bad, says) in [
            ("localhost:4317", "without http://"),
            ("127.0.0.1:4317", "without http://"),
            ("grpc://localhost:4317", "scheme \"grpc\""),
            ("http://localhost:4318/v1/traces", "with a path"),
            ("http://", "http://"),
            ("not a url", "not a url"),
        ] {
            let error = OtlpEndpoint::parse(bad).unwrap_err();
            assert!(error.contains("http://localhost:4317"), "{error}");
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
