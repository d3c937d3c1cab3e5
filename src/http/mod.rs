//! The HTTP surface: one axum [`Router`] served by `serve` (axum) and by Lambda (lambda_http).
//! Routes: `POST /webhooks/{source}`, `GET /healthz`, `GET /metrics` (serve). Every error is
//! mapped to its status in [`ApiError`], with a JSON body that says why.

use crate::config::Config;
use crate::engine::outbox::Pipeline;
use crate::engine::EngineError;
use crate::model::time::{self, TimeError};
use crate::sources::{self, Delivery, SourceError, Translation};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub config: Arc<Config>,
    /// Serve `GET /metrics` (the self-hosted scrape endpoint).
    pub metrics_endpoint: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown source {0:?}: use one of github, gitlab, jenkins, jira, pagerduty, events")]
    UnknownSource(String),
    #[error("content type {0:?} is not accepted: configure the sender to send application/json")]
    UnsupportedMediaType(String),
    #[error("body is larger than the {0} bytes limit (VALUESTREAM_MAX_BODY_BYTES)")]
    TooLarge(usize),
    #[error("could not read the body: {0}")]
    BadBody(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The translated delivery breaks the time rule ([`crate::model::time`]).
    #[error("{0}: {1}")]
    Time(&'static str, Box<TimeError>),
    #[error("the store is unavailable, retry later: {0}")]
    Engine(#[from] EngineError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Source(SourceError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            ApiError::Source(SourceError::Malformed(_)) => StatusCode::BAD_REQUEST,
            ApiError::Time(..) => StatusCode::BAD_REQUEST,
            ApiError::Engine(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), reason = %self, "request refused");
        }
        (
            status,
            Json(json!({ "status": "error", "reason": self.to_string() })),
        )
            .into_response()
    }
}

/// A finished span, as the answer to a delivery lists it.
#[derive(Serialize)]
struct SpanSummary<'a> {
    source: &'a str,
    name: &'a str,
    trace_id: &'a str,
    span_id: &'a str,
    parent_span_id: Option<&'a str>,
    start: String,
    end: String,
    links: usize,
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let mut r = Router::new()
        .route("/webhooks/{source}", post(webhook))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }));
    if state.metrics_endpoint {
        r = r.route("/metrics", get(metrics));
    }
    // Every log line of a request carries its method and path; never the query string, which
    // may hold a Jenkins token.
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
    });
    r.layer(DefaultBodyLimit::max(limit))
        .layer(trace)
        .with_state(state)
}

async fn metrics(State(app): State<AppState>) -> Response {
    match crate::export::prometheus::render(app.pipeline.engine.store.as_ref()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::Engine(EngineError::Store(e)).into_response(),
    }
}

/// Accepts `application/json` and `application/*+json` (parameters such as `charset` allowed).
fn json_content_type(value: &header::HeaderValue) -> Result<(), ApiError> {
    let text = String::from_utf8_lossy(value.as_bytes());
    let refused = || ApiError::UnsupportedMediaType(text.to_string());
    let mime: mime::Mime = text.trim().parse().map_err(|_| refused())?;
    let json = mime.type_() == mime::APPLICATION
        && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    if json {
        Ok(())
    } else {
        Err(refused())
    }
}

async fn webhook(
    State(app): State<AppState>,
    Path(source): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let src = sources::by_name(&source).ok_or_else(|| ApiError::UnknownSource(source.clone()))?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(app.config.max_body_bytes)
        } else {
            ApiError::BadBody(e.body_text())
        }
    })?;
    // A missing Content-Type is accepted (some HTTP clients of deploy scripts send none); one
    // that is present must parse as a media type and be JSON: `;;;` or an empty value is not.
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        json_content_type(ct)?;
    }
    let delivery = Delivery {
        headers: &headers,
        query: query.as_deref(),
        body: &body,
    };
    // Verify before parsing.
    src.authenticate(&delivery, &app.config)?;
    let translated = src.translate(&delivery, &app.config)?;
    let inputs = match translated.translation {
        Translation::Ignored(reason) => {
            tracing::info!(source, reason, "delivery ignored");
            return Ok((StatusCode::ACCEPTED, Json(json!({"status": "ignored", "reason": reason, "delivery": translated.delivery_id}))).into_response());
        }
        Translation::Inputs(inputs) => inputs,
    };
    // One time rule for every source, before anything is stored.
    time::check(&inputs, chrono::Utc::now())
        .map_err(|e| ApiError::Time(src.name(), Box::new(e)))?;
    let applied = app
        .pipeline
        .deliver(src.name(), &translated.delivery_id, &inputs)
        .await?;
    let finished: Vec<SpanSummary> = applied
        .finished
        .iter()
        .map(|s| SpanSummary {
            source: &s.source,
            name: &s.name,
            trace_id: &s.trace_id,
            span_id: &s.span_id,
            parent_span_id: s.parent_span_id.as_deref(),
            start: s.start.to_rfc3339(),
            end: s.end.to_rfc3339(),
            links: s.links.len(),
        })
        .collect();
    let status = if applied.duplicate {
        "duplicate"
    } else {
        "processed"
    };
    tracing::info!(
        source,
        delivery = translated.delivery_id,
        status,
        finished = finished.len(),
        requests = applied.requests,
        "delivery applied"
    );
    Ok((
        StatusCode::OK,
        Json(json!({
            "status": status,
            "delivery": translated.delivery_id,
            "opened": applied.opened,
            "updated": applied.updated,
            "finished": finished,
            "export_pending": applied.pending_exports,
            "store_requests": applied.requests,
        })),
    )
        .into_response())
}
