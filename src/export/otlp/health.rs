//! valuestream's own health as an OTLP `ExportMetricsServiceRequest` (docs/metrics.md,
//! "valuestream's own health"), apart from the DORA series: its own instrumentation scope
//! (`valuestream.health`), and two resources.
//!
//! - **The process's counters and histograms** (deliveries, export failures, drains, store
//!   requests, settle failures) are cumulative since the process started: start time = process
//!   start, one resource per process (`service.instance.id`). A Lambda sandbox that is recycled
//!   takes its totals with it; the next one is a new instance with a new start time, which a
//!   backend sees as a new series, not as a reset of the old one.
//! - **What the store holds** (the settle and outbox gauges, the sync's healed counter with its
//!   record's creation as start time) is the same whichever process reads it: it goes under the
//!   shared metrics resource, as the DORA series do, so two processes give one series.
//!
//! Gauges are OTLP gauges (double); counters monotonic cumulative sums (integer); histograms
//! explicit-bucket, cumulative. Attribute keys are the Prometheus label names as they are.

use crate::export::prometheus::{HealthFamily, HealthKind, HealthValue};
use crate::export::HealthSnapshot;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The instrumentation scope of every health metric (the DORA series' is `valuestream`).
pub const SCOPE: &str = crate::model::attr::HEALTH_SCOPE;

fn str_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn metrics(families: &[HealthFamily], start_ns: u64, time_ns: u64) -> Vec<Metric> {
    families
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| {
            let attributes = |labels: &[(&'static str, String)]| -> Vec<KeyValue> {
                labels.iter().map(|(k, v)| str_kv(k, v)).collect()
            };
            let number = |v: &HealthValue| match v {
                HealthValue::Number(n) => *n,
                HealthValue::Histogram { count, .. } => *count as f64,
            };
            let data = match f.kind {
                HealthKind::Gauge => metric::Data::Gauge(Gauge {
                    data_points: f
                        .samples
                        .iter()
                        .map(|s| NumberDataPoint {
                            attributes: attributes(&s.labels),
                            time_unix_nano: time_ns,
                            value: Some(number_data_point::Value::AsDouble(number(&s.value))),
                            ..Default::default()
                        })
                        .collect(),
                }),
                HealthKind::Counter => metric::Data::Sum(Sum {
                    data_points: f
                        .samples
                        .iter()
                        .map(|s| NumberDataPoint {
                            attributes: attributes(&s.labels),
                            start_time_unix_nano: s.start_ns.unwrap_or(start_ns),
                            time_unix_nano: time_ns,
                            value: Some(number_data_point::Value::AsInt(
                                number(&s.value).max(0.0) as i64
                            )),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                HealthKind::Histogram => metric::Data::Histogram(Histogram {
                    data_points: f
                        .samples
                        .iter()
                        .filter_map(|s| match &s.value {
                            HealthValue::Histogram {
                                bounds,
                                counts,
                                sum,
                                count,
                            } => Some(HistogramDataPoint {
                                attributes: attributes(&s.labels),
                                start_time_unix_nano: s.start_ns.unwrap_or(start_ns),
                                time_unix_nano: time_ns,
                                count: *count,
                                sum: Some(*sum),
                                bucket_counts: counts.clone(),
                                explicit_bounds: bounds.to_vec(),
                                ..Default::default()
                            }),
                            HealthValue::Number(_) => None,
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            Metric {
                name: f.otel_name.to_string(),
                description: f.help.to_string(),
                unit: f.unit.to_string(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect()
}

fn resource_metrics(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: SCOPE.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The snapshot as one request: the process's families under `process_resource`, the store's
/// under `shared_resource` (a resource with no metric is left out).
pub fn health_request(
    snapshot: &HealthSnapshot,
    process_resource: Vec<KeyValue>,
    shared_resource: Vec<KeyValue>,
) -> ExportMetricsServiceRequest {
    let mut resource_metrics_out = Vec::new();
    for (resource, families) in [
        (process_resource, &snapshot.process),
        (shared_resource, &snapshot.shared),
    ] {
        let m = metrics(families, snapshot.start_ns, snapshot.time_ns);
        if !m.is_empty() {
            resource_metrics_out.push(resource_metrics(resource, m));
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: resource_metrics_out,
    }
}
