//! The HTTP surface: one axum [`Router`] served by `serve` (axum) and by Lambda (lambda_http).
//! Routes: `POST /webhooks/{source}`, `GET /healthz`, `GET /correlations` (what slow and failing
//! work has in common, [`crate::analysis::correlations`]), `GET /metrics` (serve: the stored
//! series, then valuestream's own health, then the scheduled sync's healed counter,
//! [`crate::sync`]). Every error is mapped to its status in [`ApiError`], with a JSON body that
//! says why; every delivery's answer is counted by source and answer
//! ([`crate::pipeline::health`]).

use crate::config::Config;
use crate::engine::{Applied, EngineError};
use crate::model::time::{self, TimeError};
use crate::model::Input;
use crate::pipeline::health::answer_label;
use crate::pipeline::Pipeline;
use crate::sources::registry::{self, SourceEntry};
use crate::sources::{Delivery, SourceError, Translated, Translation};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
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
    #[error("unknown source {0:?}: use one of {names}", names = registry::names())]
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
    #[error(transparent)]
    Query(#[from] crate::analysis::correlations::QueryError),
    #[error("the store is unavailable, retry later: {0}")]
    Engine(#[from] EngineError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) | ApiError::Query(_) => StatusCode::BAD_REQUEST,
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
        (status, Json(Answer::error(self.to_string()))).into_response()
    }
}

/// What became of a delivery; serialized as `processed`, `duplicate`, `ignored` or `error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Its facts were recorded.
    #[default]
    Processed,
    /// Every fact was recorded before, under this delivery ID.
    Duplicate,
    /// A well-formed delivery of an event the service does not use.
    Ignored,
    /// Refused or failed (`reason` says why).
    Error,
}

impl Status {
    /// The word the JSON answer carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Processed => "processed",
            Status::Duplicate => "duplicate",
            Status::Ignored => "ignored",
            Status::Error => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a delivery, as the router sends it and `replay` reads it back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub status: Status,
    /// Why a delivery was ignored or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Work items seen for the first time.
    #[serde(default)]
    pub opened: u32,
    /// Facts added to items already known.
    #[serde(default)]
    pub updated: u32,
    /// Closing facts recorded: their spans are exported once settled.
    #[serde(default)]
    pub closed: u32,
    /// Facts the store did not hold before (0: every fact was known, e.g. the same event under
    /// another delivery ID).
    #[serde(default)]
    pub facts: u32,
    /// Seconds before the spans this delivery finished are exported.
    #[serde(default)]
    pub settle_secs: i64,
    #[serde(default)]
    pub store_requests: u32,
}

impl Answer {
    fn error(reason: String) -> Self {
        Answer {
            status: Status::Error,
            reason: Some(reason),
            ..Answer::default()
        }
    }

    /// One line for a person: `processed (2 span(s) closed)`, `ignored <why>`.
    pub fn summary(&self) -> String {
        format!(
            "{} {}{}",
            self.status,
            self.reason.as_deref().unwrap_or_default(),
            if self.closed == 0 {
                String::new()
            } else {
                format!("({} span(s) closed)", self.closed)
            }
        )
    }

    /// A well-formed delivery of an event the service does not use.
    fn ignored(delivery: String, reason: String) -> Self {
        Answer {
            status: Status::Ignored,
            reason: Some(reason),
            delivery: Some(delivery),
            ..Answer::default()
        }
    }

    /// A delivery the pipeline recorded (or had recorded before).
    fn applied(delivery: String, applied: &Applied, settle_secs: i64) -> Self {
        Answer {
            status: if applied.duplicate {
                Status::Duplicate
            } else {
                Status::Processed
            },
            reason: None,
            delivery: Some(delivery),
            opened: applied.opened,
            updated: applied.updated,
            closed: applied.closed,
            facts: applied.facts,
            settle_secs,
            store_requests: applied.requests,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let mut r = Router::new();
    // One route per registered source; any other name is answered 404 with the list.
    for entry in registry::SOURCES {
        state.pipeline.health.register_source(entry.name);
        r = r.route(
            entry.route,
            post(
                move |State(app): State<AppState>,
                      RawQuery(query): RawQuery,
                      headers: HeaderMap,
                      body: Result<Bytes, BytesRejection>| {
                    counted(app, entry, query, headers, body)
                },
            ),
        );
    }
    r = r
        .route("/webhooks/{source}", post(unknown_source))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/correlations", get(correlations));
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
    let read = async {
        let series = app.pipeline.series().await.map_err(EngineError::Store)?;
        let health = app
            .pipeline
            .health_families()
            .await
            .map_err(EngineError::Store)?;
        // The scheduled sync's healed counter (crate::sync), after the DORA series and the health.
        let healed = crate::sync::exposition(app.pipeline.engine.store.as_ref())
            .await
            .map_err(EngineError::Store)?;
        Ok::<_, EngineError>((series, health, healed))
    };
    match read.await {
        Ok((series, health, healed)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            format!(
                "{}{}{healed}",
                crate::export::prometheus::render_series(&series),
                crate::export::prometheus::render_health(&health),
            ),
        )
            .into_response(),
        Err(e) => ApiError::Engine(e).into_response(),
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

/// `GET /correlations?kind=issue|change|run|deployment&by=duration|failure[&threshold_s=N]`.
async fn correlations(
    State(app): State<AppState>,
    query: Result<
        axum::extract::Query<Vec<(String, String)>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, ApiError> {
    use crate::analysis::correlations;
    let axum::extract::Query(pairs) = query.map_err(|e| ApiError::BadBody(e.body_text()))?;
    let q = correlations::Query::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let series = correlations::read_series(app.pipeline.engine.store.as_ref(), q.kind)
        .await
        .map_err(|e| ApiError::Engine(EngineError::Store(e)))?;
    Ok(Json(correlations::correlate(&q, &series)?).into_response())
}

async fn unknown_source(State(app): State<AppState>, Path(source): Path<String>) -> ApiError {
    // Counted under one name: the path's own name would be a label anyone can multiply.
    let e = ApiError::UnknownSource(source);
    app.pipeline
        .health
        .delivery("unknown", answer_label(e.status().as_u16(), "error"));
    e
}

/// [`webhook`], its answer counted in the health metrics by source and answer.
async fn counted(
    app: AppState,
    entry: &'static SourceEntry,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let health = app.pipeline.health.clone();
    let (status, answer) = match webhook(app, entry, query, headers, body).await {
        Ok((status, answer)) => (status, answer),
        Err(e) => {
            let status = e.status();
            health.delivery(entry.name, answer_label(status.as_u16(), "error"));
            return e.into_response();
        }
    };
    health.delivery(
        entry.name,
        answer_label(status.as_u16(), answer.status.as_str()),
    );
    (status, Json(answer)).into_response()
}

/// `POST /webhooks/<source>`: read the body, verify and translate it, check and enrich the
/// inputs, record them, answer.
#[tracing::instrument(name = "webhook", skip_all, fields(source = entry.name))]
async fn webhook(
    app: AppState,
    entry: &'static SourceEntry,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Answer), ApiError> {
    let body = read_body(&app.config, &headers, body)?;
    let delivery = Delivery {
        headers: &headers,
        query: query.as_deref(),
        body: &body,
    };
    let translated = verify_and_translate(entry, &delivery, &app.config)?;
    let inputs = match translated.translation {
        Translation::Ignored(ignored) => {
            let reason = ignored.to_string();
            tracing::info!(source = entry.name, reason, "delivery ignored");
            let answer = Answer::ignored(translated.delivery_id, reason);
            return Ok((StatusCode::ACCEPTED, answer));
        }
        Translation::Inputs(inputs) => prepare(entry, &app.config, inputs)?,
    };
    let applied = app
        .pipeline
        .deliver(entry.name, &translated.delivery_id, &inputs)
        .await?;
    let answer = Answer::applied(translated.delivery_id, &applied, app.config.settle_secs);
    tracing::info!(
        source = entry.name,
        delivery = answer.delivery,
        status = answer.status.as_str(),
        closed = applied.closed,
        requests = applied.requests,
        "delivery applied"
    );
    Ok((StatusCode::OK, answer))
}

/// The body, within the size limit, of a JSON content type. A missing Content-Type is accepted
/// (some HTTP clients of deploy scripts send none); one that is present must parse as a media
/// type and be JSON: `;;;` or an empty value is not.
fn read_body(
    config: &Config,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(config.max_body_bytes)
        } else {
            ApiError::BadBody(e.body_text())
        }
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        json_content_type(ct)?;
    }
    Ok(body)
}

/// Verifies the delivery (before its body is parsed), then translates it.
#[tracing::instrument(name = "translate", skip_all, fields(source = entry.name))]
fn verify_and_translate(
    entry: &SourceEntry,
    delivery: &Delivery,
    config: &Config,
) -> Result<Translated, ApiError> {
    entry.source.authenticate(delivery, config)?;
    Ok(entry.source.translate(delivery, config)?)
}

/// One time rule for every source, before anything is stored; then the repository attributes
/// (team, language, deployment type, user keys), for every source alike.
fn prepare(
    entry: &SourceEntry,
    config: &Config,
    mut inputs: Vec<Input>,
) -> Result<Vec<Input>, ApiError> {
    time::check(&inputs, chrono::Utc::now())
        .map_err(|e| ApiError::Time(entry.name, Box::new(e)))?;
    config.repository_attributes.enrich(&mut inputs);
    Ok(inputs)
}
