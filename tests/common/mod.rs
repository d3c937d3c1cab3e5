//! Shared test harness: a real OTLP/HTTP receiver that decodes the protobuf, an app built on
//! the real router, and helpers to sign and post fixtures.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric;
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use valuestream::config::Config;
use valuestream::engine::Engine;
use valuestream::export::otlp::{OtlpExporter, OtlpSettings};
use valuestream::http::{router, AppState};
use valuestream::pipeline::Pipeline;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;

pub const GITHUB_SECRET: &str = "test-github-secret";

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).unwrap()
}

// ---------------------------------------------------------------- OTLP receiver

#[derive(Default)]
struct Received {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    down: AtomicBool,
    metrics_down: AtomicBool,
    traces_down: AtomicBool,
    /// Export requests received (accepted or not), per signal.
    trace_posts: std::sync::atomic::AtomicUsize,
    metric_posts: std::sync::atomic::AtomicUsize,
    /// The headers of every request, per signal (`content-encoding: gzip` bodies are inflated).
    trace_headers: Mutex<Vec<axum::http::HeaderMap>>,
    metric_headers: Mutex<Vec<axum::http::HeaderMap>>,
    /// Answer a partial success: (rejected spans or points, message).
    partial: Mutex<Option<(i64, String)>>,
}

/// An OTLP/HTTP receiver on loopback that decodes the real protobuf. `set_down(true)` makes it
/// answer 503, as a collector that is unavailable.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Received>,
}

/// A span as the receiver decoded it, flattened for assertions.
#[derive(Clone, Debug, PartialEq)]
pub struct RSpan {
    pub service: String,
    pub namespace: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: BTreeMap<String, Value>,
    pub status_code: i32,
    pub status_message: String,
    pub links: Vec<(String, String, BTreeMap<String, Value>)>,
    /// OTLP's `dropped_links_count`: links left out past the link limit.
    pub dropped_links: u32,
    pub events: Vec<(String, u64)>,
}

impl RSpan {
    pub fn attr(&self, k: &str) -> Option<&Value> {
        self.attrs.get(k)
    }
    pub fn attr_str(&self, k: &str) -> &str {
        self.attrs
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "span {:?} has no string attribute {k}: {:?}",
                    self.name, self.attrs
                )
            })
    }
    /// The span as a golden-file value (times as RFC 3339).
    pub fn golden(&self) -> Value {
        json!({
            "service": self.service,
            "name": self.name,
            "kind": self.kind,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "start": rfc3339(self.start_ns),
            "end": rfc3339(self.end_ns),
            "status": {"code": self.status_code, "message": self.status_message},
            "attributes": self.attrs,
            "links": self.links.iter().map(|(t, s, a)| json!({"trace_id": t, "span_id": s, "attributes": a})).collect::<Vec<_>>(),
            "events": self.events.iter().map(|(n, t)| json!({"name": n, "time": rfc3339(*t)})).collect::<Vec<_>>(),
        })
    }
}

/// A metric point as the receiver decoded it.
#[derive(Clone, Debug, PartialEq)]
pub struct RPoint {
    pub name: String,
    pub unit: String,
    pub labels: BTreeMap<String, String>,
    pub start_ns: u64,
    pub time_ns: u64,
    /// Counter value, or histogram count.
    pub value: f64,
    pub sum: f64,
    pub buckets: Vec<u64>,
    pub cumulative: bool,
}

pub fn rfc3339(ns: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn ns(rfc: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64
}

fn value_json(v: &Option<AnyValue>) -> Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(f)) => json!(f),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(
            a.values
                .iter()
                .map(|v| value_json(&Some(v.clone())))
                .collect(),
        ),
        other => json!(format!("{other:?}")),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_json(&kv.value)))
        .collect()
}

/// Decodes one OTLP request into `into` (inflating a gzip body), or answers as a collector
/// that is down would.
fn accept<T: Message + Default>(
    down: &AtomicBool,
    into: &Mutex<Vec<T>>,
    headers: &axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    if down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body = match headers.get("content-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => body.to_vec(),
        Some(b"gzip") => {
            use std::io::Read;
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return StatusCode::BAD_REQUEST;
            }
            out
        }
        Some(_) => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
    };
    match T::decode(&body[..]) {
        Ok(req) => {
            into.lock().unwrap().push(req);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// The answer's body: empty (full success) or a partial success.
fn partial_answer<R: Message>(
    status: StatusCode,
    partial: &Mutex<Option<(i64, String)>>,
    answer: impl Fn(i64, String) -> R,
) -> (StatusCode, Vec<u8>) {
    match (status, partial.lock().unwrap().clone()) {
        (StatusCode::OK, Some((n, message))) => (status, answer(n, message).encode_to_vec()),
        _ => (status, Vec::new()),
    }
}

async fn traces(
    State(s): State<Arc<Received>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    s.trace_posts.fetch_add(1, Ordering::SeqCst);
    s.trace_headers.lock().unwrap().push(headers.clone());
    if s.traces_down.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    }
    let status = accept(&s.down, &s.traces, &headers, body);
    partial_answer(status, &s.partial, |n, error_message| {
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: n,
                error_message,
            }),
        }
    })
}

async fn metrics(
    State(s): State<Arc<Received>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
    };
    s.metric_posts.fetch_add(1, Ordering::SeqCst);
    s.metric_headers.lock().unwrap().push(headers.clone());
    if s.metrics_down.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    }
    let status = accept(&s.down, &s.metrics, &headers, body);
    partial_answer(status, &s.partial, |n, error_message| {
        ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message,
            }),
        }
    })
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Received::default());
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Answers 500 to metrics only, accepting traces (a partial collector outage).
    pub fn set_metrics_down(&self, down: bool) {
        self.state.metrics_down.store(down, Ordering::SeqCst);
    }

    /// Answers 500 to traces only, accepting metrics.
    pub fn set_traces_down(&self, down: bool) {
        self.state.traces_down.store(down, Ordering::SeqCst);
    }

    /// How many trace and metric export requests arrived (accepted or not).
    pub fn posts(&self) -> (usize, usize) {
        (
            self.state.trace_posts.load(Ordering::SeqCst),
            self.state.metric_posts.load(Ordering::SeqCst),
        )
    }

    /// Answers every accepted export with a partial success rejecting `n` spans or points.
    pub fn set_partial(&self, partial: Option<(i64, &str)>) {
        *self.state.partial.lock().unwrap() = partial.map(|(n, m)| (n, m.to_string()));
    }

    /// The headers of every trace and metric export request received.
    pub fn headers(&self) -> (Vec<axum::http::HeaderMap>, Vec<axum::http::HeaderMap>) {
        (
            self.state.trace_headers.lock().unwrap().clone(),
            self.state.metric_headers.lock().unwrap().clone(),
        )
    }

    pub fn clear(&self) {
        self.state.traces.lock().unwrap().clear();
        self.state.metrics.lock().unwrap().clear();
    }

    pub fn spans(&self) -> Vec<RSpan> {
        decode_spans(&self.state.traces.lock().unwrap())
    }

    pub fn span(&self, name_prefix: &str) -> RSpan {
        let found: Vec<RSpan> = self
            .spans()
            .into_iter()
            .filter(|s| s.name.starts_with(name_prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one span named {name_prefix}*, got {:?}",
            self.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found.into_iter().next().unwrap()
    }

    pub fn points(&self) -> Vec<RPoint> {
        decode_points(&self.state.metrics.lock().unwrap())
    }

    /// valuestream's own health points received so far (scope `valuestream.health`).
    pub fn health(&self) -> Vec<HPoint> {
        decode_health(&self.state.metrics.lock().unwrap())
    }

    /// The latest (highest sample time) point of every series: the exact totals.
    pub fn latest_points(&self) -> Vec<RPoint> {
        latest_points(self.points())
    }
}

/// The spans of OTLP trace export requests, flattened for assertions.
pub fn decode_spans(requests: &[ExportTraceServiceRequest]) -> Vec<RSpan> {
    let mut out = Vec::new();
    for req in requests {
        for rs in &req.resource_spans {
            let res = attrs(
                &rs.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
            );
            let service = res
                .get("service.name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let namespace = res
                .get("service.namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(RSpan {
                        service: service.clone(),
                        namespace: namespace.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        name: s.name.clone(),
                        kind: s.kind,
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        attrs: attrs(&s.attributes),
                        status_code: s.status.as_ref().map(|st| st.code).unwrap_or_default(),
                        status_message: s
                            .status
                            .as_ref()
                            .map(|st| st.message.clone())
                            .unwrap_or_default(),
                        dropped_links: s.dropped_links_count,
                        links: s
                            .links
                            .iter()
                            .map(|l| {
                                (
                                    hex::encode(&l.trace_id),
                                    hex::encode(&l.span_id),
                                    attrs(&l.attributes),
                                )
                            })
                            .collect(),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), e.time_unix_nano))
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

/// The points of OTLP metric export requests, flattened for assertions.
pub fn decode_points(requests: &[ExportMetricsServiceRequest]) -> Vec<RPoint> {
    let mut out = Vec::new();
    for req in requests {
        for rm in &req.resource_metrics {
            // The DORA series only: valuestream's own health has a scope of its own.
            for sm in rm
                .scope_metrics
                .iter()
                .filter(|sm| sm.scope.as_ref().is_none_or(|s| s.name != HEALTH_SCOPE))
            {
                for m in &sm.metrics {
                    let label = |kvs: &[KeyValue]| {
                        attrs(kvs)
                            .into_iter()
                            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    };
                    match &m.data {
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                let value = match p.value {
                                    Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => i as f64,
                                    Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d)) => d,
                                    None => f64::NAN,
                                };
                                out.push(RPoint {
                                    name: m.name.clone(),
                                    unit: m.unit.clone(),
                                    labels: label(&p.attributes),
                                    start_ns: p.start_time_unix_nano,
                                    time_ns: p.time_unix_nano,
                                    value,
                                    sum: 0.0,
                                    buckets: vec![],
                                    cumulative: s.aggregation_temporality == 2,
                                });
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                out.push(RPoint {
                                    name: m.name.clone(),
                                    unit: m.unit.clone(),
                                    labels: label(&p.attributes),
                                    start_ns: p.start_time_unix_nano,
                                    time_ns: p.time_unix_nano,
                                    value: p.count as f64,
                                    sum: p.sum.unwrap_or_default(),
                                    buckets: p.bucket_counts.clone(),
                                    cumulative: h.aggregation_temporality == 2,
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

/// The instrumentation scope of valuestream's own health over OTLP.
pub const HEALTH_SCOPE: &str = "valuestream.health";

/// One point of valuestream's own health as a receiver decoded it: its resource, its kind
/// (`gauge`, `sum` or `histogram`) and temporality, for assertions.
#[derive(Clone, Debug, PartialEq)]
pub struct HPoint {
    pub resource: BTreeMap<String, String>,
    pub name: String,
    pub unit: String,
    pub kind: &'static str,
    pub cumulative: bool,
    pub monotonic: bool,
    pub labels: BTreeMap<String, String>,
    pub start_ns: u64,
    pub time_ns: u64,
    /// A gauge's or counter's value, a histogram's count.
    pub value: f64,
    pub sum: f64,
    pub bounds: Vec<f64>,
    pub buckets: Vec<u64>,
}

/// The health points of `requests` (scope `valuestream.health`), in arrival order.
pub fn decode_health(requests: &[ExportMetricsServiceRequest]) -> Vec<HPoint> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
    let strings = |kvs: &[KeyValue]| -> BTreeMap<String, String> {
        attrs(kvs)
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let number = |v: &Option<N>| match v {
        Some(N::AsInt(i)) => *i as f64,
        Some(N::AsDouble(d)) => *d,
        None => f64::NAN,
    };
    let mut out = Vec::new();
    for req in requests {
        for rm in &req.resource_metrics {
            let resource = strings(
                &rm.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
            );
            for sm in rm
                .scope_metrics
                .iter()
                .filter(|sm| sm.scope.as_ref().is_some_and(|s| s.name == HEALTH_SCOPE))
            {
                for m in &sm.metrics {
                    let base = HPoint {
                        resource: resource.clone(),
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        kind: "",
                        cumulative: false,
                        monotonic: false,
                        labels: BTreeMap::new(),
                        start_ns: 0,
                        time_ns: 0,
                        value: 0.0,
                        sum: 0.0,
                        bounds: vec![],
                        buckets: vec![],
                    };
                    match &m.data {
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                out.push(HPoint {
                                    kind: "gauge",
                                    labels: strings(&p.attributes),
                                    start_ns: p.start_time_unix_nano,
                                    time_ns: p.time_unix_nano,
                                    value: number(&p.value),
                                    ..base.clone()
                                });
                            }
                        }
                        Some(metric::Data::Sum(sum)) => {
                            for p in &sum.data_points {
                                out.push(HPoint {
                                    kind: "sum",
                                    cumulative: sum.aggregation_temporality == 2,
                                    monotonic: sum.is_monotonic,
                                    labels: strings(&p.attributes),
                                    start_ns: p.start_time_unix_nano,
                                    time_ns: p.time_unix_nano,
                                    value: number(&p.value),
                                    ..base.clone()
                                });
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                out.push(HPoint {
                                    kind: "histogram",
                                    cumulative: h.aggregation_temporality == 2,
                                    labels: strings(&p.attributes),
                                    start_ns: p.start_time_unix_nano,
                                    time_ns: p.time_unix_nano,
                                    value: p.count as f64,
                                    sum: p.sum.unwrap_or_default(),
                                    bounds: p.explicit_bounds.clone(),
                                    buckets: p.bucket_counts.clone(),
                                    ..base.clone()
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

/// The latest (highest sample time) point of every series: the exact totals.
pub fn latest_points(points: Vec<RPoint>) -> Vec<RPoint> {
    let mut latest: BTreeMap<(String, Vec<(String, String)>), RPoint> = BTreeMap::new();
    for p in points {
        let key = (p.name.clone(), p.labels.clone().into_iter().collect());
        match latest.get(&key) {
            Some(q) if q.time_ns >= p.time_ns => {}
            _ => {
                latest.insert(key, p);
            }
        }
    }
    latest.into_values().collect()
}

// ---------------------------------------------------------------- the app under test

pub struct App {
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub pipeline: Arc<Pipeline>,
    pub receiver: Receiver,
    pub config: Arc<Config>,
    /// Drain right after every delivery, as serve does with a settle period of 0 (default on).
    pub auto_drain: Arc<AtomicBool>,
}

impl App {
    /// Stops (or resumes) draining after every delivery: the test drains itself.
    pub fn set_auto_drain(&self, on: bool) {
        self.auto_drain.store(on, Ordering::SeqCst);
    }
}

/// Config for tests: the GitHub secret set, plus `extra` pairs.
pub fn test_config(extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![("VALUESTREAM_GITHUB_SECRET", GITHUB_SECRET)];
    pairs.extend_from_slice(extra);
    Config::from_pairs(&pairs).unwrap()
}

pub async fn app() -> App {
    app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
    )
    .await
}

pub async fn app_with(store: Arc<dyn Store>, config: Config) -> App {
    let receiver = Receiver::start().await;
    app_on(store, config, receiver)
}

pub fn app_on(store: Arc<dyn Store>, config: Config, receiver: Receiver) -> App {
    let settings = OtlpSettings::http(&receiver.url, std::time::Duration::from_secs(2));
    let exporter = Arc::new(OtlpExporter::new(settings).unwrap());
    app_exporting(store, config, receiver, exporter)
}

/// The app exporting through `exporter` (`receiver` is what tests read back).
pub fn app_exporting(
    store: Arc<dyn Store>,
    config: Config,
    receiver: Receiver,
    exporter: Arc<dyn valuestream::export::Exporter>,
) -> App {
    let config = Arc::new(config);
    let pipeline = Arc::new(
        Pipeline::new(Engine::new(store.clone(), config.clone()), exporter).with_retry_secs(0),
    );
    let router = router(AppState {
        pipeline: pipeline.clone(),
        config: config.clone(),
        metrics_endpoint: true,
    });
    App {
        router,
        store,
        pipeline,
        receiver,
        config,
        auto_drain: Arc::new(AtomicBool::new(true)),
    }
}

/// A settled span as tests read it from an answer.
pub fn span_summary(s: &valuestream::model::FinishedSpan) -> Value {
    json!({
        "source": s.source,
        "name": s.name,
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "start": s.start.to_rfc3339(),
        "end": s.end.to_rfc3339(),
        "links": s.links.len(),
    })
}

pub fn github_signature(body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(GITHUB_SECRET, body))
}

impl App {
    pub async fn post(
        &self,
        source: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        self.post_path(&format!("/webhooks/{source}"), headers, body)
            .await
    }

    pub async fn post_path(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::post(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        if status.is_success()
            && path.starts_with("/webhooks/")
            && self.auto_drain.load(Ordering::SeqCst)
        {
            // As serve's drainer does with a settle period of 0, right after the answer: settle
            // what the delivery finished and export it. The spans it settled are added to the
            // answer as `finished`, and whether batches still wait as `export_pending`.
            let d = self.pipeline.drain_all().await.unwrap();
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "finished".into(),
                    json!(d.settled.iter().map(span_summary).collect::<Vec<_>>()),
                );
                obj.insert("export_pending".into(), json!(d.remaining));
            }
        }
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Posts a GitHub delivery, signed with the test secret.
    pub async fn github(&self, event: &str, delivery: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let sig = github_signature(&body);
        self.post(
            "github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
            ],
            body,
        )
        .await
    }

    /// Posts a GitHub fixture file (`github/<event>/<file>`).
    pub async fn github_fixture(&self, rel: &str, delivery: &str) -> (StatusCode, Value) {
        let event = rel.split('/').nth(1).unwrap().to_string();
        self.github(&event, delivery, fixture(rel)).await
    }
}

/// The head branch that names issue 1 of Hello-World as the change's parent.
pub const VSTRACE_BRANCH: &str = "feature/vstrace-github-Hello-World-1/fix";

/// The pull_request `opened` fixture on [`VSTRACE_BRANCH`].
pub fn opened_pr() -> Vec<u8> {
    edit("github/pull_request/opened.payload.json", |v| {
        v["pull_request"]["head"]["ref"] = json!(VSTRACE_BRANCH)
    })
}

/// `scripts/bench-load`'s mix for one repository: issue opened, PR opened, workflow run
/// requested and completed, PR merged, deployment created and succeeded, issue closed (the run
/// fixtures come from another repository: moved into the issue's and PR's).
pub fn mix() -> Vec<(&'static str, Vec<u8>)> {
    let repository = fixture_json("github/issues/opened.payload.json")["repository"].clone();
    let run = |rel: &str| edit(rel, |v| v["repository"] = repository.clone());
    vec![
        ("issues", fixture("github/issues/opened.payload.json")),
        ("pull_request", opened_pr()),
        (
            "workflow_run",
            run("github/workflow_run/requested.payload.json"),
        ),
        (
            "workflow_run",
            run("github/workflow_run/completed.payload.json"),
        ),
        ("pull_request", merged_pr()),
        ("deployment", fixture("github/deployment/payload.json")),
        (
            "deployment_status",
            fixture("github/deployment_status/payload.json"),
        ),
        (
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
        ),
    ]
}

/// The pull_request `closed` fixture, merged, on [`VSTRACE_BRANCH`].
pub fn merged_pr() -> Vec<u8> {
    edit("github/pull_request/closed.payload.json", |v| {
        v["pull_request"]["head"]["ref"] = json!(VSTRACE_BRANCH);
        v["pull_request"]["merged"] = json!(true);
        v["pull_request"]["merged_at"] = json!("2019-05-15T15:21:18Z");
        v["pull_request"]["merge_commit_sha"] = json!("c4295bd74fb0f4fda03689c3df3f2803b658fd85");
    })
}

/// What issue 1 (opened → closed) and PR 2 (opened on [`VSTRACE_BRANCH`] → merged) must give,
/// whichever host carried them: one trace, the PR a child of the issue, payload times.
pub fn assert_issue_and_pr_trace(issue: &RSpan, change: &RSpan) {
    use valuestream::model::ids;
    let issue_key = "github/issue/codertocat/hello-world/1";
    assert_eq!(issue.trace_id, ids::trace_id(issue_key));
    assert_eq!(issue.span_id, ids::span_id(issue_key, 0));
    assert_eq!(issue.parent_span_id, "", "the issue is the root");
    assert_eq!(change.trace_id, issue.trace_id, "one trace");
    assert_eq!(
        change.parent_span_id, issue.span_id,
        "the PR's parent is the issue"
    );
    assert_eq!(
        change.span_id,
        ids::span_id("github/change/codertocat/hello-world/2", 0)
    );
    // Payload times, not arrival times.
    assert_eq!(issue.start_ns, ns("2019-05-15T15:20:18Z"));
    assert_eq!(issue.end_ns, ns("2019-05-15T19:40:12Z"));
    assert_eq!(change.start_ns, ns("2019-05-15T15:20:33Z"));
    assert_eq!(change.end_ns, ns("2019-05-15T15:21:18Z"));
    // Each source is its own service.
    assert_eq!(
        (issue.service.as_str(), issue.namespace.as_str()),
        ("github", "valuestream")
    );
    assert_eq!(change.attr_str("vcs.ref.head.name"), VSTRACE_BRANCH);
}

/// Every record of an embedded store, for "the store is unchanged" checks.
pub fn dump(store: &EmbeddedStore) -> Vec<valuestream::store::Record> {
    store.dump().unwrap()
}

/// Edits a JSON fixture: applies `f` and re-serializes.
pub fn edit(rel: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = fixture_json(rel);
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Compares `actual` to the golden file `rel` (under tests/fixtures), or writes it when
/// `UPDATE_GOLDEN=1`.
pub fn golden(rel: &str, actual: &Value) {
    let path = fixtures_dir().join(rel);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &pretty).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("golden file {rel} is missing: run with UPDATE_GOLDEN=1 and review it")
    });
    let expected: Value = serde_json::from_str(&expected).unwrap();
    if &expected != actual {
        panic!("{rel} differs from the output (UPDATE_GOLDEN=1 rewrites it; review the diff):\n{pretty}");
    }
}

// ---------------------------------------------------------------- golden files

pub fn point(app: &App, name: &str) -> Option<RPoint> {
    let mut found: Vec<RPoint> = app
        .receiver
        .latest_points()
        .into_iter()
        .filter(|p| p.name == name)
        .collect();
    assert!(found.len() <= 1, "one series of {name}: {found:#?}");
    found.pop()
}

/// What a golden file holds: the answer, the exported spans and metric points (as in
/// github_golden.rs), and the work items the delivery left open.
pub async fn golden_value(
    status: StatusCode,
    body: Value,
    app: &App,
    store: &EmbeddedStore,
) -> Value {
    let mut points: Vec<Value> = app
        .receiver
        .latest_points()
        .iter()
        .map(|p| json!({"name": p.name, "unit": p.unit, "labels": p.labels, "count": p.value, "sum": p.sum}))
        .collect();
    points.sort_by_key(|p| p.to_string());
    let mut open: Vec<Value> = Vec::new();
    for r in dump(store) {
        let Some(key) = r.key.pk.strip_prefix("item#") else {
            continue;
        };
        let Some(p) = app.pipeline.engine.preview(key).await.unwrap() else {
            continue;
        };
        if !p.open {
            continue;
        }
        open.push(json!({"key": r.key.pk, "name": p.name, "kind": p.kind,
            "generation": p.generation, "start": p.start, "trace_id": p.trace_id,
            "span_id": p.span_id, "parent_span_id": p.parent_span_id,
            "attributes": p.attributes, "events": p.events}));
    }
    json!({
        "status": status.as_u16(),
        "answer": body["status"],
        "delivery": body["delivery"],
        "opened": body.get("opened"),
        "updated": body.get("updated"),
        "reason": body.get("reason"),
        "spans": app.receiver.spans().iter().map(RSpan::golden).collect::<Vec<_>>(),
        "metrics": points,
        "open_items": open,
    })
}

pub fn fixture_stems(dir: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(fixtures_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.ends_with(".expected.json"))
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect();
    out.sort();
    out
}

pub mod grpc_receiver;
pub mod moto;
pub mod outbox;
pub mod proxy;
pub mod stuck;
