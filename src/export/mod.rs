//! Export of finished spans and metric points: OTLP (HTTP protobuf or gRPC) to a collector, or readable
//! lines on stdout when no endpoint is configured (local `serve`).

pub mod console;
pub mod otlp;
pub mod prometheus;

use crate::engine::metrics::Series;
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

#[async_trait]
pub trait Exporter: Send + Sync {
    /// Sends finished spans; an error leaves them pending in the outbox for a later retry.
    async fn export_spans(&self, spans: &[FinishedSpan]) -> Result<(), ExportError>;
    /// Sends metric points (cumulative series values); an error leaves them pending.
    async fn export_points(&self, points: &[Series]) -> Result<(), ExportError>;
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
