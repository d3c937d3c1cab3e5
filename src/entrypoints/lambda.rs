//! The Lambda entry point: the router behind API Gateway HTTP API (payload v2) through
//! `lambda_http`, state in DynamoDB. Telemetry is exported synchronously inside each invocation
//! (before the response), so nothing waits in a buffer when the sandbox is frozen; a failed
//! export stays in the outbox.

use super::open_store;
use crate::config::Config;
use crate::engine::outbox::Pipeline;
use crate::engine::Engine;
use crate::export;
use crate::http::{router, AppState};
use anyhow::Context;
use std::sync::Arc;

pub async fn run() -> anyhow::Result<()> {
    super::init_logging(true);
    let app = match start().await {
        Ok(app) => app,
        Err(e) => {
            // One clear line in CloudWatch; `main` exits non-zero, so the runtime reports an
            // init error instead of serving with a broken setting.
            tracing::error!(error = format!("{e:#}"), "valuestream cannot start");
            return Err(e);
        }
    };
    lambda_http::run(app)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

/// Reads and checks every setting, then connects: the router to serve.
async fn start() -> anyhow::Result<axum::Router> {
    let mut config = Config::from_env()?;
    // Unsigned traffic is a local-trial switch; never in Lambda.
    config.allow_unsigned = false;
    config
        .table
        .as_ref()
        .context("VALUESTREAM_TABLE must be set when running in Lambda")?;
    let otlp = export::otlp::OtlpSettings::from_env()?;
    let exporter = export::from_env(Box::new(export::Discard))?;
    if otlp.is_none() {
        tracing::warn!("OTEL_EXPORTER_OTLP_ENDPOINT is not set: finished spans and metric points are discarded");
    }
    let store = open_store(&config, None).await?;
    let config = Arc::new(config);
    let pipeline = Pipeline::new(Engine::new(store, config.clone()), Arc::from(exporter))
        .drain_after_first_delivery();
    Ok(router(AppState {
        pipeline: Arc::new(pipeline),
        config,
        metrics_endpoint: false,
    }))
}
