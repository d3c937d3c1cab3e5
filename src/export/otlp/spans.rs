//! Our finished spans as the OpenTelemetry SDK's `SpanData`, ready for `opentelemetry-otlp`'s
//! span exporter: the deterministic trace/span/parent IDs, links, attributes, events, status and
//! payload start/end times are carried over as they are (no SDK tracer or sampler is involved).

use super::resource::Resources;
use crate::model::series as metrics;
use crate::model::{AttrValue, Attrs, FinishedSpan, Kind};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use opentelemetry_sdk::Resource;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The instrumentation scope of every span and metric: valuestream itself.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("valuestream")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Int(i) => Value::I64(*i),
        AttrValue::Float(f) => Value::F64(*f),
        AttrValue::Str(s) => Value::String(s.clone().into()),
        AttrValue::StrList(l) => Value::Array(Array::String(
            l.iter().cloned().map(StringValue::from).collect(),
        )),
    }
}

fn key_values(attrs: &Attrs) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), value(v)))
        .collect()
}

fn time(t: crate::model::Time) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(metrics::time_ns(t))
}

fn trace_id(hex: &str) -> TraceId {
    TraceId::from_hex(hex).unwrap_or(TraceId::INVALID)
}

fn span_id(hex: &str) -> SpanId {
    SpanId::from_hex(hex).unwrap_or(SpanId::INVALID)
}

/// A span context as the spans were recorded: sampled (they are exported), not remote.
fn context(trace: &str, span: &str) -> SpanContext {
    SpanContext::new(
        trace_id(trace),
        span_id(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// One finished span as `SpanData`.
pub fn span_data(s: &FinishedSpan) -> SpanData {
    let mut events = SpanEvents::default();
    events.events = s
        .events
        .iter()
        .map(|e| Event::new(e.name.clone(), time(e.time), key_values(&e.attributes), 0))
        .collect();
    let mut links = SpanLinks::default();
    links.links = s
        .links
        .iter()
        .map(|l| {
            Link::new(
                context(&l.trace_id, &l.span_id),
                key_values(&l.attributes),
                0,
            )
        })
        .collect();
    links.dropped_count = s.dropped_links;
    SpanData {
        span_context: context(&s.trace_id, &s.span_id),
        parent_span_id: s
            .parent_span_id
            .as_deref()
            .map(span_id)
            .unwrap_or(SpanId::INVALID),
        parent_span_is_remote: false,
        span_kind: match s.kind {
            Kind::PipelineRun => SpanKind::Server,
            _ => SpanKind::Internal,
        },
        name: s.name.clone().into(),
        start_time: time(s.start),
        end_time: time(s.end),
        attributes: key_values(&s.attributes),
        dropped_attributes_count: 0,
        events,
        links,
        status: if s.error {
            Status::error(s.status_message.clone().unwrap_or_default())
        } else {
            Status::Ok
        },
        instrumentation_scope: scope(),
    }
}

/// The spans grouped by source system, each group with its resource (one resource per source,
/// so each shows as its own service in a trace view), sources in name order.
pub fn by_source(spans: &[FinishedSpan], resources: &Resources) -> Vec<(Resource, Vec<SpanData>)> {
    let mut groups: BTreeMap<&str, Vec<SpanData>> = BTreeMap::new();
    for s in spans {
        groups
            .entry(s.source.as_str())
            .or_default()
            .push(span_data(s));
    }
    groups
        .into_iter()
        .map(|(source, spans)| (resources.traces(source), spans))
        .collect()
}
