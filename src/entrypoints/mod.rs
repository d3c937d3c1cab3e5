//! The two hosts of the one router: the Lambda function and the command line.

pub mod cli;
pub mod lambda;
pub mod sync;

pub use crate::pipeline::open_store;

pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a log file or journal gets no escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().without_time().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// valuestream's own health over OTLP, as the hosts send it (Lambda: after each scheduled
/// drain; `serve`: every `VALUESTREAM_HEALTH_EXPORT_SECS`), never on a request: the pipeline's
/// snapshot plus the sync's healed counter read from the store, all within `within` (the
/// store's and the exporter's own timeouts bound each request; this bounds the whole).
pub async fn export_health(
    pipeline: &crate::pipeline::Pipeline,
    within: std::time::Duration,
) -> crate::pipeline::HealthExport {
    use crate::pipeline::HealthExport;
    if !pipeline.exporter.exports_health() {
        return HealthExport::Off;
    }
    let work = async {
        let cursors = crate::sync::cursors(pipeline.engine.store.as_ref()).await?;
        let shared = crate::sync::healed_family(&cursors).into_iter().collect();
        pipeline.export_health(shared).await
    };
    match tokio::time::timeout(within, work).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the store for valuestream's own health failed; not exported this time");
            HealthExport::Failed
        }
        Err(_) => {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "exporting valuestream's own health did not finish in time; not exported this time"
            );
            HealthExport::Failed
        }
    }
}
