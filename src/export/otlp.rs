//! OTLP/HTTP protobuf export, configured by the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! The wire types come from `opentelemetry-proto`; this module only builds the requests and POSTs
//! them. The OpenTelemetry SDK's tracer and meter pipelines are not used on purpose: they assign
//! their own span IDs and timestamps and aggregate metrics in process memory, while valuestream
//! exports historical spans with deterministic IDs and payload times, and cumulative metric state
//! that lives in the store. Each batch is sent synchronously and its success decides whether it
//! leaves the outbox, so nothing is left in a frozen Lambda sandbox's buffers.

use super::{ExportError, Exporter};
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
use prost::Message;
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

impl OtlpSettings {
    /// Reads the standard variables; `None` when no endpoint is set.
    pub fn from_env() -> Result<Option<Self>, ExportError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ExportError> {
        let base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        let signal = |specific: &str, path: &str| {
            get(specific).or_else(|| {
                base.as_ref()
                    .map(|b| format!("{}/{path}", b.trim_end_matches('/')))
            })
        };
        let (Some(traces_url), Some(metrics_url)) = (
            signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "v1/traces"),
            signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "v1/metrics"),
        ) else {
            return Ok(None);
        };
        let headers = get("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| parse_headers(&h))
            .transpose()?
            .unwrap_or_default();
        let timeout = match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|_| {
                ExportError::Config(format!(
                    "OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds, got {ms:?}"
                ))
            })?),
            None => Duration::from_millis(3000),
        };
        Ok(Some(OtlpSettings {
            traces_url,
            metrics_url,
            headers,
            timeout,
        }))
    }
}

/// `key=value,key2=value2` with percent-encoded values, as the OpenTelemetry spec defines.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ExportError> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ExportError::Config("OTEL_EXPORTER_OTLP_HEADERS: expected key=value pairs".into())
            })?;
            Ok((k.trim().to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct OtlpExporter {
    settings: OtlpSettings,
    client: reqwest::Client,
}

impl OtlpExporter {
    pub fn new(settings: OtlpSettings) -> Result<Self, ExportError> {
        let client = reqwest::Client::builder()
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
