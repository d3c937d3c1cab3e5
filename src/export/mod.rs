//! Export of finished spans and metric points: OTLP (HTTP protobuf or gRPC) to a collector, or readable
//! lines on stdout when no endpoint is configured (local `serve`).

pub mod console;
pub mod otlp;
pub mod prometheus;

use crate::model::series::Series;
use crate::model::FinishedSpan;
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("OTLP endpoint answered {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("exporter configuration: {0}")]
    Config(String),
    #[error("OTLP export failed: {0}")]
    Failed(String),
}

/// valuestream's own health at one moment, as it goes over OTLP (docs/metrics.md,
/// "valuestream's own health"): never a DORA series, never in the outbox; sent whole each time
/// (cumulative), so a lost export is repaired by the next one.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSnapshot {
    /// This process's `service.instance.id`: its counters are its own, so each process is a
    /// series of its own (a query adds them up).
    pub instance: String,
    /// When this process started counting (the start time of its cumulative points).
    pub start_ns: u64,
    /// When the snapshot was taken (every point's time).
    pub time_ns: u64,
    /// The process's counters and histograms, cumulative since `start_ns`, sent under the
    /// process resource (`service.instance.id` = `instance`).
    pub process: Vec<prometheus::HealthFamily>,
    /// What the store holds, the same whichever process reads it (the backlog gauges, the
    /// sync's healed counter): sent under the shared metrics resource, as the DORA series are,
    /// so that two processes give one series, not two to add up.
    pub shared: Vec<prometheus::HealthFamily>,
}

#[async_trait]
pub trait Exporter: Send + Sync {
    /// Sends finished spans; an error leaves them pending in the outbox for a later retry.
    async fn export_spans(&self, spans: &[FinishedSpan]) -> Result<(), ExportError>;
    /// Sends metric points (cumulative series values); an error leaves them pending.
    async fn export_points(&self, points: &[Series]) -> Result<(), ExportError>;
    /// Whether [`Exporter::export_health`] sends anywhere (only OTLP does: `serve` without an
    /// endpoint shows its health on `GET /metrics` only).
    fn exports_health(&self) -> bool {
        false
    }
    /// Sends valuestream's own health; nothing is kept for a retry (the next snapshot holds
    /// every total).
    async fn export_health(&self, _snapshot: &HealthSnapshot) -> Result<(), ExportError> {
        Ok(())
    }
}

/// The exporter the environment asks for: OTLP when an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set,
/// otherwise `fallback`.
pub fn from_env(fallback: Box<dyn Exporter>) -> Result<Box<dyn Exporter>, ExportError> {
    let settings =
        otlp::OtlpSettings::from_env().map_err(|e| ExportError::Config(e.to_string()))?;
    from_settings(settings, fallback)
}

/// OTLP with `settings` when there are some, otherwise `fallback`.
pub fn from_settings(
    settings: Option<otlp::OtlpSettings>,
    fallback: Box<dyn Exporter>,
) -> Result<Box<dyn Exporter>, ExportError> {
    match settings {
        Some(settings) => Ok(Box::new(otlp::OtlpExporter::new(settings)?)),
        None => Ok(fallback),
    }
}

/// An exporter that sends nowhere and always succeeds (Lambda without a configured endpoint
/// logs a warning once and uses this).
pub struct Discard;

#[async_trait]
impl Exporter for Discard {
    async fn export_spans(&self, _spans: &[FinishedSpan]) -> Result<(), ExportError> {
        Ok(())
    }
    async fn export_points(&self, _points: &[Series]) -> Result<(), ExportError> {
        Ok(())
    }
}
