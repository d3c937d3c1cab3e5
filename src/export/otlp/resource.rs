//! The OTLP resources: one per source system for traces (`service.name` = the source), one for
//! every process for metrics (`service.name` = `valuestream`, so a series' identity does not
//! depend on which Lambda sandbox sent it). `OTEL_RESOURCE_ATTRIBUTES` adds attributes to both;
//! a `service.name` there, or `OTEL_SERVICE_NAME` (which wins), replaces the default name.

use crate::model::attr;
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as ProtoKeyValue};
use opentelemetry_sdk::Resource;

pub const NAMESPACE: &str = "valuestream";

#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// `OTEL_RESOURCE_ATTRIBUTES` without `service.name`.
    extra: Vec<(String, String)>,
    /// `OTEL_SERVICE_NAME`, else `service.name` from `OTEL_RESOURCE_ATTRIBUTES`.
    service_name: Option<String>,
}

impl Resources {
    pub fn new(attributes: &[(String, String)], service_name: Option<&str>) -> Self {
        let from_attributes = attributes
            .iter()
            .find(|(k, _)| k == attr::SERVICE_NAME)
            .map(|(_, v)| v.clone());
        Resources {
            extra: attributes
                .iter()
                .filter(|(k, _)| k != attr::SERVICE_NAME)
                .cloned()
                .collect(),
            service_name: service_name.map(str::to_string).or(from_attributes),
        }
    }

    /// The attributes of a resource whose default `service.name` is `default_name`.
    fn attributes(&self, default_name: &str) -> Vec<(String, String)> {
        let mut out = vec![(
            attr::SERVICE_NAME.to_string(),
            self.service_name
                .clone()
                .unwrap_or_else(|| default_name.to_string()),
        )];
        if !self.extra.iter().any(|(k, _)| k == attr::SERVICE_NAMESPACE) {
            out.push((attr::SERVICE_NAMESPACE.into(), NAMESPACE.into()));
        }
        out.extend(self.extra.iter().cloned());
        out
    }

    /// The resource of the spans of one source system.
    pub fn traces(&self, source: &str) -> Resource {
        Resource::builder_empty()
            .with_attributes(
                self.attributes(source)
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v)),
            )
            .build()
    }

    /// The resource of every metric point, as OTLP protobuf attributes.
    pub fn metrics(&self) -> Vec<ProtoKeyValue> {
        proto(self.attributes(NAMESPACE))
    }

    /// The resource of one process's own health counters: the metrics resource with
    /// `service.instance.id` = `instance` (replacing one from `OTEL_RESOURCE_ATTRIBUTES`: each
    /// process's counters must stay a series of their own).
    pub fn process_metrics(&self, instance: &str) -> Vec<ProtoKeyValue> {
        let mut attributes: Vec<(String, String)> = self
            .attributes(NAMESPACE)
            .into_iter()
            .filter(|(k, _)| k != attr::SERVICE_INSTANCE_ID)
            .collect();
        attributes.push((attr::SERVICE_INSTANCE_ID.into(), instance.into()));
        proto(attributes)
    }
}

fn proto(attributes: Vec<(String, String)>) -> Vec<ProtoKeyValue> {
    attributes
        .into_iter()
        .map(|(key, v)| ProtoKeyValue {
            key,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
            ..Default::default()
        })
        .collect()
}
