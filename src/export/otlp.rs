//! OTLP/HTTP protobuf export, configured by the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! The wire types come from `opentelemetry-proto`; this module only builds the requests and POSTs
//! them. The OpenTelemetry SDK's tracer and meter pipelines are not used on purpose: they assign
//! their own span IDs and timestamps and aggregate metrics in process memory, while valuestream
//! exports historical spans with deterministic IDs and payload times, and cumulative metric state
//! that lives in the store. Each batch is sent synchronously and its success decides whether it
//! leaves the outbox, so nothing is left in a frozen Lambda sandbox's buffers.

use super::{ExportError, Exporter};
use crate::config::{endpoint_url, ConfigError, Settings};
use crate::engine::metrics::{self, MetricKind, Series};
use crate::model::{AttrValue, Attrs, FinishedSpan, Kind};
use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use percent_encoding::percent_decode_str;
use prost::Message;
use reqwest::header::{HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::time::Duration;

pub const NAMESPACE: &str = "valuestream";

#[derive(Clone, Debug)]
pub struct OtlpSettings {
    pub traces_url: String,
    pub metrics_url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Default of `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: i64 = 3000;
/// Longest wait for a TCP connection to the collector (the request timeout bounds the rest).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl OtlpSettings {
    /// Reads the standard variables; `None` when no endpoint is set.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Every variable is checked, also those an override makes unused, so a typo never waits
    /// for the day it matters. Setting one signal's endpoint without the other (and without
    /// the base) is an error: half the telemetry would be dropped without a word.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let env = Settings::new(get);
        let url = |name: &str| -> Result<Option<reqwest::Url>, ConfigError> {
            env.text(name).map(|v| endpoint_url(name, &v)).transpose()
        };
        let base = url(BASE)?;
        let signal = |specific: &str, path: &str| -> Result<Option<String>, ConfigError> {
            Ok(match url(specific)? {
                Some(u) => Some(u.to_string()),
                None => base
                    .as_ref()
                    .map(|b| format!("{}/{path}", b.as_str().trim_end_matches('/'))),
            })
        };
        let traces = signal(TRACES, "v1/traces")?;
        let metrics = signal(METRICS, "v1/metrics")?;
        let headers = match env.text(HEADERS) {
            Some(h) => parse_headers(&h)?,
            None => Vec::new(),
        };
        let timeout_ms = env.int(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            DEFAULT_TIMEOUT_MS,
            1..=60_000,
            "milliseconds",
        )?;
        let (traces_url, metrics_url) = match (traces, metrics) {
            (Some(t), Some(m)) => (t, m),
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    TRACES,
                    format!("is set but metrics have no endpoint: set {BASE} or {METRICS} too"),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    METRICS,
                    format!("is set but traces have no endpoint: set {BASE} or {TRACES} too"),
                ))
            }
        };
        Ok(Some(OtlpSettings {
            traces_url,
            metrics_url,
            headers,
            timeout: Duration::from_millis(timeout_ms as u64),
        }))
    }
}

const BASE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const METRICS: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";

/// `OTEL_EXPORTER_OTLP_HEADERS`: a W3C-baggage-style `key=value,key2=value2` list whose values
/// are percent-encoded, as the OpenTelemetry specification defines. Each key must be an HTTP
/// header name and each decoded value an HTTP header value of visible ASCII; a value is never
/// echoed in an error (it is often an API key).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, member) in text.split(',').enumerate() {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        let n = i + 1;
        let bad = |why: String| {
            ConfigError::new(
                HEADERS,
                format!(
                    "accepts key=value pairs separated by commas (values percent-encoded); {why}"
                ),
            )
        };
        let (k, v) = member
            .split_once('=')
            .ok_or_else(|| bad(format!("member {n} has no '='")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(bad(format!("member {n} has an empty key")));
        }
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(format!("member {n}: {k:?} is not an HTTP header name")))?;
        let value = percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| bad(format!("the value of {k:?} does not decode to UTF-8")))?;
        if value.chars().any(char::is_control) {
            return Err(bad(format!(
                "the value of {k:?} decodes to a control character"
            )));
        }
        if !value.is_ascii() || HeaderValue::from_str(&value).is_err() {
            return Err(bad(format!(
                "the value of {k:?} is not a valid HTTP header value (visible ASCII only)"
            )));
        }
        out.push((name.as_str().to_string(), value.into_owned()));
    }
    Ok(out)
}

pub struct OtlpExporter {
    settings: OtlpSettings,
    client: reqwest::Client,
}

impl OtlpExporter {
    pub fn new(settings: OtlpSettings) -> Result<Self, ExportError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| ExportError::Config(e.to_string()))?;
        Ok(OtlpExporter { settings, client })
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), ExportError> {
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (k, v) in &self.settings.headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ExportError::Unreachable(format!("{url}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = resp.text().await.unwrap_or_default();
            Err(ExportError::Rejected {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            })
        }
    }
}

#[async_trait]
impl Exporter for OtlpExporter {
    async fn export_spans(&self, spans: &[FinishedSpan]) -> Result<(), ExportError> {
        if spans.is_empty() {
            return Ok(());
        }
        self.post(
            &self.settings.traces_url,
            traces_request(spans).encode_to_vec(),
        )
        .await
    }
    async fn export_points(&self, points: &[Series]) -> Result<(), ExportError> {
        if points.is_empty() {
            return Ok(());
        }
        self.post(
            &self.settings.metrics_url,
            metrics_request(points).encode_to_vec(),
        )
        .await
    }
}

fn kv(key: &str, value: &AttrValue) -> KeyValue {
    let v = match value {
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Float(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::StrList(l) => any_value::Value::ArrayValue(ArrayValue {
            values: l
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

fn kvs(attrs: &Attrs) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| kv(k, v)).collect()
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    kv(key, &AttrValue::Str(value.to_string()))
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "valuestream".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn nanos(t: crate::model::Time) -> u64 {
    metrics::time_ns(t)
}

fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

/// One resource per source system, so each shows as its own service in a trace view.
pub fn traces_request(spans: &[FinishedSpan]) -> ExportTraceServiceRequest {
    let mut by_source: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for s in spans {
        let kind = match s.kind {
            Kind::PipelineRun => span::SpanKind::Server,
            _ => span::SpanKind::Internal,
        };
        by_source.entry(s.source.as_str()).or_default().push(Span {
            trace_id: hex_bytes(&s.trace_id),
            span_id: hex_bytes(&s.span_id),
            parent_span_id: s
                .parent_span_id
                .as_deref()
                .map(hex_bytes)
                .unwrap_or_default(),
            name: s.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: kvs(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| span::Event {
                    time_unix_nano: nanos(e.time),
                    name: e.name.clone(),
                    attributes: kvs(&e.attributes),
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| span::Link {
                    trace_id: hex_bytes(&l.trace_id),
                    span_id: hex_bytes(&l.span_id),
                    attributes: kvs(&l.attributes),
                    ..Default::default()
                })
                .collect(),
            status: Some(if s.error {
                Status {
                    code: status::StatusCode::Error as i32,
                    message: s.status_message.clone().unwrap_or_default(),
                }
            } else {
                Status {
                    code: status::StatusCode::Ok as i32,
                    message: String::new(),
                }
            }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: by_source
            .into_iter()
            .map(|(source, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        str_kv("service.name", source),
                        str_kv("service.namespace", NAMESPACE),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// Cumulative points, one resource for every process: series identity must not depend on which
/// Lambda sandbox sent it.
pub fn metrics_request(points: &[Series]) -> ExportMetricsServiceRequest {
    let mut metrics_out = Vec::new();
    for p in points {
        let def = metrics::def(&p.name);
        let attributes: Vec<KeyValue> = p.labels.iter().map(|(k, v)| str_kv(k, v)).collect();
        let data = match p.kind {
            MetricKind::Counter => metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes,
                    start_time_unix_nano: p.start_ns,
                    time_unix_nano: p.time_ns,
                    value: Some(number_data_point::Value::AsInt(p.count as i64)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            MetricKind::Histogram => metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: p.start_ns,
                    time_unix_nano: p.time_ns,
                    count: p.count,
                    sum: Some(p.sum),
                    bucket_counts: p.buckets.clone(),
                    explicit_bounds: metrics::BUCKETS.to_vec(),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        };
        metrics_out.push(Metric {
            name: p.name.clone(),
            description: def.description.into(),
            unit: def.unit.into(),
            data: Some(data),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    str_kv("service.name", NAMESPACE),
                    str_kv("service.namespace", NAMESPACE),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: metrics_out,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_standard_variables() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%3Db,tenant=t1"),
        ];
        let s = OtlpSettings::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.traces_url, "http://c:4318/v1/traces");
        assert_eq!(s.metrics_url, "http://c:4318/v1/metrics");
        assert_eq!(
            s.headers,
            vec![
                ("x-api-key".into(), "a=b".into()),
                ("tenant".into(), "t1".into())
            ]
        );
        assert!(OtlpSettings::from_lookup(|_| None).unwrap().is_none());
    }
}
