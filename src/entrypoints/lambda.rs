//! The Lambda entry point: one handler, state in DynamoDB, for two kinds of invocation.
//!
//! - **API Gateway HTTP API (payload v2) requests** go through the one axum router. `lambda_http`
//!   converts the event into an HTTP request and the router's answer into the API Gateway response
//!   (its `Adapter`, the same conversion `lambda_http::run` uses; public but `doc(hidden)`, which
//!   is why Cargo.toml holds lambda_http to one major, 1.x), so there is no second copy of any
//!   handler logic.
//! - **EventBridge scheduled events** (`"source": "aws.events"`, `"detail-type": "Scheduled
//!   Event"`, from the `Drain` schedule in `template.yaml`) run [`Pipeline::drain`]: finished spans
//!   whose settle period has passed, and batches a failed export left in the outbox, are exported.
//!   Then valuestream's own health goes over OTLP ([`super::export_health`]: this sandbox's
//!   counters, the store's backlog, the sync's healed counter), within what is left of the
//!   invocation. The answer is a small JSON summary, `{"status":"drained","exported":…,
//!   "failed":…,"remaining":…,"health":"sent"|"failed"|"skipped"|"off"}`; a drain that fails
//!   (the store is unreachable) is logged and answered as a function error.
//! - **The scheduled sync** (`{"valuestream":"sync"}`, the `Input` of the `SyncRule` in
//!   `template.yaml`, created when `SyncGithubRepos` names repositories) re-reads the configured
//!   repositories from the GitHub API and heals what webhooks missed ([`crate::sync`]), within
//!   60 % of the invocation's time (or `VALUESTREAM_SYNC_BUDGET_SECS`); the answer is the run's
//!   summary, `{"status":"synced","healed":…,…}`.
//! - **Anything else** is answered with a function error (`UnknownEvent`) that says what the
//!   function takes; the sandbox keeps serving the next invocation.
//!
//! A webhook invocation only records facts: no export is attempted on the request path, so an
//! answer never waits for the collector. Spans settle for `VALUESTREAM_SETTLE_SECS` and the
//! scheduled drain exports them (with a settle period of 0, at the next drain); nothing waits in
//! a buffer when a sandbox is frozen, since everything to export is in the store's outbox.

use crate::config::Config;
use crate::engine::EngineError;
use crate::export;
use crate::http::{router, AppState};
use crate::pipeline::{self, Pipeline};
use anyhow::Context as _;
use axum::Router;
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

pub async fn run() -> anyhow::Result<()> {
    super::init_logging(true);
    let handler = match start().await {
        Ok(handler) => handler,
        Err(e) => {
            // One clear line in CloudWatch; `main` exits non-zero, so the runtime reports an
            // init error instead of serving with a broken setting.
            tracing::error!(error = format!("{e:#}"), "valuestream cannot start");
            return Err(e);
        }
    };
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        let handler = handler.clone();
        async move { handler.handle(event).await }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

/// Reads and checks every setting, then connects: the handler to serve.
async fn start() -> anyhow::Result<Handler> {
    let mut config = Config::from_env()?;
    // Unsigned traffic is a local-trial switch; never in Lambda.
    config.allow_unsigned = false;
    config
        .table
        .as_ref()
        .context("VALUESTREAM_TABLE must be set when running in Lambda")?;
    let otlp = export::otlp::OtlpSettings::from_env()?;
    let sync_settings = crate::sync::SyncSettings::from_env()?;
    if otlp.is_none() {
        tracing::warn!("OTEL_EXPORTER_OTLP_ENDPOINT is not set: finished spans and metric points are discarded");
    }
    // Webhook secrets from Secrets Manager when VALUESTREAM_SECRET_ARN is set (read now; an
    // unreadable secret fails the cold start), re-read on a request once their TTL has passed.
    let secrets = crate::secrets::start_from_env(&config).await?;
    // A missing API token fails the sync invocations only, never the webhooks.
    if sync_settings.enabled() {
        if let Err(e) = sync_settings.check_tokens(&config) {
            tracing::error!(error = %e, "the scheduled sync cannot run");
        }
    }
    let config = Arc::new(config);
    // No drain on the first delivery: the scheduled drain sends whatever a sandbox left behind.
    let exporter = export::from_settings(otlp, Box::new(export::Discard))?;
    let pipeline = pipeline::build(config.clone(), None, exporter).await?;
    let sync = sync_settings.enabled().then(|| {
        Arc::new(super::sync::Syncer::new(
            sync_settings,
            pipeline.clone(),
            config.clone(),
        ))
    });
    let handler = Handler {
        app: router(AppState {
            pipeline: pipeline.clone(),
            config,
            metrics_endpoint: false,
        }),
        pipeline,
        secrets,
        sync,
    };
    Ok(handler)
}

/// Why an invocation was answered with a function error.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error("not an event this function takes ({0}); it takes API Gateway HTTP API (payload 2.0) requests, EventBridge scheduled events (\"source\": \"aws.events\", \"detail-type\": \"Scheduled Event\") and the sync rule's {{\"valuestream\": \"sync\"}}")]
    UnknownEvent(String),
    #[error("the scheduled sync failed: {0}")]
    Sync(String),
    #[error("draining the outbox failed: {0}")]
    Drain(#[from] EngineError),
    #[error("the router's answer could not be turned into an API Gateway response: {0}")]
    Response(#[from] serde_json::Error),
}

impl From<LambdaError> for Diagnostic {
    fn from(e: LambdaError) -> Diagnostic {
        let error_type = match &e {
            LambdaError::UnknownEvent(_) => "UnknownEvent",
            LambdaError::Drain(_) => "DrainFailed",
            LambdaError::Sync(_) => "SyncFailed",
            LambdaError::Response(_) => "InvalidResponse",
        };
        Diagnostic {
            error_type: error_type.to_string(),
            error_message: e.to_string(),
        }
    }
}

/// The parts of an EventBridge event the handler reads (a scheduled rule's event also carries
/// `version`, `id`, `account`, `time`, `region`, `resources` and an empty `detail`).
/// `aws_lambda_events::eventbridge::EventBridgeEvent` has the full shape, but its feature pulls in
/// `serde_with` for two strings.
#[derive(Debug, Deserialize)]
pub struct EventBridgeEvent {
    pub source: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    #[serde(default)]
    pub time: Option<String>,
}

/// What one invocation asks for.
#[derive(Debug)]
pub enum Invocation {
    /// An API Gateway request for the router.
    Http(Box<LambdaRequest>),
    /// A scheduled drain.
    Scheduled(EventBridgeEvent),
    /// A scheduled sync (the `SyncRule`'s constant input `{"valuestream": "sync"}`).
    Sync,
}

/// Tells the two event kinds apart; anything else is [`LambdaError::UnknownEvent`].
pub fn classify(event: Value) -> Result<Invocation, LambdaError> {
    if !event.is_object() {
        return Err(LambdaError::UnknownEvent(format!(
            "a JSON {}, not an object",
            json_kind(&event)
        )));
    }
    if let Some(marker) = event.get("valuestream") {
        if marker == "sync" {
            return Ok(Invocation::Sync);
        }
        return Err(LambdaError::UnknownEvent(format!(
            "\"valuestream\": {marker}; the only one is \"sync\""
        )));
    }
    if event.get("detail-type").is_some() {
        let e: EventBridgeEvent = serde_json::from_value(event)
            .map_err(|e| LambdaError::UnknownEvent(format!("an EventBridge event? {e}")))?;
        if e.source == "aws.events" && e.detail_type == "Scheduled Event" {
            return Ok(Invocation::Scheduled(e));
        }
        return Err(LambdaError::UnknownEvent(format!(
            "an EventBridge event from {:?} of detail-type {:?}",
            e.source, e.detail_type
        )));
    }
    if event.get("requestContext").is_some() {
        // lambda_http's own reading of the event (it also knows REST and ALB shapes when those
        // features are on; only payload v2 is enabled here).
        return serde_json::from_value::<LambdaRequest>(event)
            .map(|r| Invocation::Http(Box::new(r)))
            .map_err(|e| LambdaError::UnknownEvent(format!("an API Gateway request? {e}")));
    }
    let mut keys: Vec<&str> = event
        .as_object()
        .map(|m| m.keys().map(String::as_str).take(8).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    Err(LambdaError::UnknownEvent(format!(
        "an object with neither \"requestContext\" nor \"detail-type\"; its keys: {keys:?}"
    )))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The function: the router for API Gateway requests, the drain for scheduled events.
#[derive(Clone)]
pub struct Handler {
    pub app: Router,
    pub pipeline: Arc<Pipeline>,
    /// Webhook secrets read from Secrets Manager, if any.
    pub secrets: Option<Arc<crate::secrets::WebhookSecrets>>,
    /// The scheduled sync, when `VALUESTREAM_SYNC_GITHUB_REPOS` names repositories.
    pub sync: Option<Arc<super::sync::Syncer>>,
}

impl Handler {
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, LambdaError> {
        let LambdaEvent { payload, context } = event;
        match classify(payload) {
            Ok(Invocation::Http(request)) => {
                if let Some(secrets) = &self.secrets {
                    secrets.refresh_if_due().await;
                }
                // lambda_http's adapter: event -> http::Request (with the Lambda context as an
                // extension) -> router -> the response shape of the event's origin.
                let adapter = lambda_http::Adapter::from(self.app.clone());
                let response = match adapter.oneshot(LambdaEvent::new(*request, context)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok(serde_json::to_value(response)?)
            }
            Ok(Invocation::Scheduled(event)) => self.drain(event, context.deadline()).await,
            Ok(Invocation::Sync) => self.sync(context.deadline()).await,
            Err(e) => {
                tracing::warn!(error = %e, request_id = %context.request_id, "unknown event");
                Err(e)
            }
        }
    }

    /// One sync run, bounded by the invocation's deadline (less a margin for the answer).
    async fn sync(&self, deadline: std::time::SystemTime) -> Result<Value, LambdaError> {
        let Some(syncer) = &self.sync else {
            tracing::info!("sync event, but VALUESTREAM_SYNC_GITHUB_REPOS names no repository");
            return Ok(json!({"status": "sync off", "repositories": 0}));
        };
        // A rotated token (the secret's github_token) is read like the webhook secrets.
        if let Some(secrets) = &self.secrets {
            secrets.refresh_if_due().await;
        }
        let left = deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(std::time::Duration::from_secs(2));
        match syncer.run(syncer.settings.limits(left)).await {
            Ok(report) => Ok(report.to_json()),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "scheduled sync failed");
                Err(LambdaError::Sync(format!("{e:#}")))
            }
        }
    }

    /// One drain, and more while a backlog is left and the invocation has time for another
    /// (each settles for at most `SETTLE_BUDGET`, then exports for at most `EXPORT_BUDGET`).
    async fn drain(
        &self,
        event: EventBridgeEvent,
        deadline: std::time::SystemTime,
    ) -> Result<Value, LambdaError> {
        let scheduled_at = event.time.unwrap_or_default();
        let started = std::time::Instant::now();
        // room for another drain: its settle budget and its export budget
        let room = crate::engine::drain::SETTLE_BUDGET + crate::pipeline::EXPORT_BUDGET;
        let has_room = || {
            deadline
                .duration_since(std::time::SystemTime::now())
                .is_ok_and(|left| left >= room)
        };
        let mut result = self.pipeline.drain().await;
        let mut drains = 1;
        while let Ok(d) = result {
            if !d.cut_short() || !has_room() {
                result = Ok(d);
                break;
            }
            result = self.pipeline.drain().await.map(|next| d.then(next));
            drains += 1;
        }
        // valuestream's own health, after the drains (so that it counts them), bounded by what
        // is left of the invocation; a drain that failed still sends what it can.
        let left = health_budget(deadline, std::time::SystemTime::now());
        let health = if left.is_zero() {
            crate::pipeline::HealthExport::Skipped
        } else {
            super::export_health(&self.pipeline, left).await
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(d) => {
                tracing::info!(
                    exported = d.exported,
                    failed = d.failed,
                    remaining = d.remaining,
                    unsettled = d.unsettled,
                    unexported = d.unexported,
                    drains,
                    health = health.as_str(),
                    health_within_ms = left.as_millis() as u64,
                    elapsed_ms,
                    scheduled_at,
                    "scheduled drain"
                );
                Ok(json!({
                    "status": "drained",
                    "exported": d.exported,
                    "failed": d.failed,
                    "remaining": d.remaining,
                    "unsettled": d.unsettled,
                    "unexported": d.unexported,
                    "health": health.as_str(),
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, elapsed_ms, scheduled_at, "scheduled drain failed");
                Err(LambdaError::Drain(e))
            }
        }
    }
}

/// The time valuestream's own health may take after a drain: what is left of the invocation
/// less a second for the answer; [`HEALTH_WITHOUT_DEADLINE`] when the runtime gave no deadline
/// (a deadline more than a day past: a local emulator's `0`).
fn health_budget(
    deadline: std::time::SystemTime,
    now: std::time::SystemTime,
) -> std::time::Duration {
    match deadline.duration_since(now) {
        Ok(left) => left.saturating_sub(std::time::Duration::from_secs(1)),
        Err(past) if past.duration() > std::time::Duration::from_secs(86_400) => {
            HEALTH_WITHOUT_DEADLINE
        }
        Err(_) => std::time::Duration::ZERO,
    }
}

/// See [`health_budget`].
pub const HEALTH_WITHOUT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn event_file(rel: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_health_takes_what_is_left_of_the_invocation() {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let now = SystemTime::now();
        assert_eq!(
            health_budget(now + Duration::from_secs(10), now),
            Duration::from_secs(9)
        );
        assert_eq!(
            health_budget(now + Duration::from_millis(500), now),
            Duration::ZERO
        );
        assert_eq!(
            health_budget(now - Duration::from_secs(5), now),
            Duration::ZERO
        );
        assert_eq!(health_budget(UNIX_EPOCH, now), HEALTH_WITHOUT_DEADLINE);
    }

    #[test]
    fn the_scheduled_event_file_is_a_drain() {
        match classify(event_file("events/scheduled/drain.json")).unwrap() {
            Invocation::Scheduled(e) => assert_eq!(e.time.as_deref(), Some("2026-11-23T12:00:00Z")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_webhook_event_file_is_an_http_request() {
        match classify(event_file("events/github/ping.json")).unwrap() {
            Invocation::Http(r) => assert_eq!(
                lambda_http::Request::from(*r).uri().path(),
                "/webhooks/github"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_sync_rule_input_is_a_sync() {
        assert!(matches!(
            classify(json!({"valuestream": "sync"})).unwrap(),
            Invocation::Sync
        ));
        let e = classify(json!({"valuestream": "drain"})).unwrap_err();
        assert!(e.to_string().contains("the only one is"), "{e}");
    }

    #[test]
    fn other_events_are_refused_with_a_reason() {
        let cases = [
            (json!({"hello": "world"}), "its keys: [\"hello\"]"),
            (json!([1, 2]), "a JSON array"),
            (json!("drain"), "a JSON string"),
            (json!(null), "a JSON null"),
            (
                json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}),
                "from \"aws.ec2\" of detail-type \"EC2 Instance State-change Notification\"",
            ),
            (
                json!({"source": "my.app", "detail-type": "Scheduled Event"}),
                "from \"my.app\"",
            ),
            (json!({"detail-type": 7}), "an EventBridge event?"),
            (json!({"requestContext": 7}), "an API Gateway request?"),
        ];
        for (event, want) in cases {
            let e = classify(event.clone()).expect_err(&event.to_string());
            let text = e.to_string();
            assert!(text.contains(want), "{event}: {text}");
            assert!(
                text.contains("Scheduled Event"),
                "says what it takes: {text}"
            );
            let d = Diagnostic::from(e);
            assert_eq!(d.error_type, "UnknownEvent");
        }
    }
}
