//! OTLP export of finished spans and metric points, configured by the standard
//! `OTEL_EXPORTER_OTLP_*`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` variables, over
//! OTLP/HTTP protobuf or OTLP/gRPC, optionally gzip-compressed.
//!
//! Spans go through `opentelemetry-otlp`'s `SpanExporter`: each finished span becomes an SDK
//! `SpanData` with its deterministic IDs and payload times ([`spans`]) and is handed to the
//! exporter's `export` directly. No SDK tracer, sampler or batch processor is used: they assign
//! their own IDs and timestamps and buffer in memory, while valuestream exports historical spans
//! from a store and needs each batch's success to decide whether it leaves the outbox (nothing
//! may linger in a frozen Lambda sandbox's buffers). The exporter's own retries are off; the
//! outbox retries.
//!
//! Metric points keep their protobuf encoding ([`metrics`] says why `opentelemetry-otlp`'s
//! `MetricExporter` cannot carry them) and share the trace exporter's transport and settings
//! ([`transport`]).
//!
//! valuestream's own health goes over the same metrics transport, in a request of its own
//! ([`health`]: scope `valuestream.health`, the process's counters under its
//! `service.instance.id`).

pub mod health;
pub mod metrics;
pub mod resource;
pub mod settings;
pub mod spans;
pub mod transport;

pub use resource::NAMESPACE;
pub use settings::{
    parse_headers, parse_resource_attributes, Compression, OtlpSettings, Protocol, SignalSettings,
    CONNECT_TIMEOUT, DEFAULT_TIMEOUT_MS,
};

use super::{ExportError, Exporter};
use crate::model::series::Series;
use crate::model::FinishedSpan;
use async_trait::async_trait;
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanExporter as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use resource::Resources;
use std::collections::HashMap;
use tokio::time::Instant;
use transport::{ReqwestHttpClient, Transport};

pub struct OtlpExporter {
    settings: OtlpSettings,
    resources: Resources,
    /// `set_resource` needs `&mut`: one source's spans at a time.
    spans: tokio::sync::Mutex<opentelemetry_otlp::SpanExporter>,
    metrics: Transport,
}

impl OtlpExporter {
    /// Builds both exporters; nothing connects before the first export.
    pub fn new(settings: OtlpSettings) -> Result<Self, ExportError> {
        let traces = Transport::for_signal(&settings.traces, None)?;
        let metrics = Transport::for_signal(&settings.metrics, Some((&settings.traces, &traces)))?;
        let spans = span_exporter(&settings.traces, &traces)?;
        Ok(OtlpExporter {
            resources: Resources::new(
                &settings.resource_attributes,
                settings.service_name.as_deref(),
            ),
            settings,
            spans: tokio::sync::Mutex::new(spans),
            metrics,
        })
    }
}

fn span_exporter(
    signal: &SignalSettings,
    transport: &Transport,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let built = match transport {
        Transport::Http(client) => {
            // `with_headers` percent-decodes the values: hand them over encoded.
            let headers: HashMap<String, String> = signal
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        utf8_percent_encode(v, NON_ALPHANUMERIC).to_string(),
                    )
                })
                .collect();
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(ReqwestHttpClient {
                    client: client.clone(),
                    timeout: signal.timeout,
                })
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(signal.url.clone())
                .with_timeout(signal.timeout)
                .with_headers(headers)
                .with_retry_policy(RetryPolicy::disabled());
            if signal.compression == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()
        }
        Transport::Grpc(channel) => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel.clone())
                .with_timeout(signal.timeout)
                .with_metadata(transport::metadata(&signal.headers))
                .with_retry_policy(RetryPolicy::disabled());
            if signal.compression == Compression::Gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            builder.build()
        }
    };
    built.map_err(|e| ExportError::Config(e.to_string()))
}

#[async_trait]
impl Exporter for OtlpExporter {
    /// One export per source system (each has its own resource), all within one
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`.
    async fn export_spans(&self, spans: &[FinishedSpan]) -> Result<(), ExportError> {
        if spans.is_empty() {
            return Ok(());
        }
        let signal = &self.settings.traces;
        let deadline = Instant::now() + signal.timeout;
        let late = || {
            ExportError::Unreachable(format!(
                "{}: no answer within {:?}",
                signal.url, signal.timeout
            ))
        };
        let mut exporter = tokio::time::timeout_at(deadline, self.spans.lock())
            .await
            .map_err(|_| late())?;
        for (resource, batch) in spans::by_source(spans, &self.resources) {
            exporter.set_resource(&resource);
            tokio::time::timeout_at(deadline, exporter.export(batch))
                .await
                .map_err(|_| late())?
                .map_err(|e| ExportError::Failed(format!("{}: {e}", signal.url)))?;
        }
        Ok(())
    }

    async fn export_points(&self, points: &[Series]) -> Result<(), ExportError> {
        if points.is_empty() {
            return Ok(());
        }
        let request = metrics::metrics_request(points, self.resources.metrics());
        transport::send_metrics(&self.metrics, &self.settings.metrics, request).await
    }

    fn exports_health(&self) -> bool {
        true
    }

    /// One metrics request to the metrics endpoint, bounded like every other by
    /// `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` ([`health`]).
    async fn export_health(
        &self,
        snapshot: &crate::export::HealthSnapshot,
    ) -> Result<(), ExportError> {
        let request = health::health_request(
            snapshot,
            self.resources.process_metrics(&snapshot.instance),
            self.resources.metrics(),
        );
        if request.resource_metrics.is_empty() {
            return Ok(());
        }
        transport::send_metrics(&self.metrics, &self.settings.metrics, request).await
    }
}
