//! Our cumulative metric points as an OTLP `ExportMetricsServiceRequest`, encoded here with the
//! `opentelemetry-proto` types. `opentelemetry-otlp`'s `MetricExporter` cannot carry them: its
//! input, `opentelemetry_sdk::metrics::data::ResourceMetrics` (and `Sum`, `Histogram`, their data
//! points), has only crate-private fields and no public constructor in opentelemetry_sdk 0.33, so
//! only the SDK's own meter pipeline can fill it; and it holds one start time per metric, where
//! every series here has its own start time (its first observation, kept in the store).

use crate::model::series::{self as metrics, MetricKind, Series};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn str_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "valuestream".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Cumulative points, one resource for every process: series identity must not depend on which
/// Lambda sandbox sent it.
pub fn metrics_request(points: &[Series], resource: Vec<KeyValue>) -> ExportMetricsServiceRequest {
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
                attributes: resource,
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
