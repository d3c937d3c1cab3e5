//! The standard OpenTelemetry exporter settings (`OTEL_EXPORTER_OTLP_*`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_SERVICE_NAME`), read and checked once at start. A value the exporter cannot honour is a
//! start-up error naming its variable, never a silent fallback.

use crate::config::{endpoint_url, ConfigError, Settings};
use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderName, HeaderValue};
use std::time::Duration;

/// Default of `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: i64 = 3000;
/// Longest wait for a TCP connection to the collector (the request timeout bounds the rest).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) const BASE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub(crate) const TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub(crate) const METRICS: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub(crate) const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub(crate) const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub(crate) const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The wire protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (collector port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (collector port 4318), the default.
    HttpProtobuf,
}

/// Request body compression (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Where and how one signal (traces or metrics) is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalSettings {
    pub protocol: Protocol,
    /// The full URL: `…/v1/traces` or `…/v1/metrics` for HTTP, the collector's origin for gRPC.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Compression,
    /// PEM certificates trusted for the collector's TLS certificate, besides the public roots.
    pub certificate: Option<Vec<u8>>,
}

impl SignalSettings {
    /// OTLP/HTTP protobuf to `url`, no extra headers, no compression.
    pub fn http(url: impl Into<String>, timeout: Duration) -> Self {
        SignalSettings {
            protocol: Protocol::HttpProtobuf,
            url: url.into(),
            headers: Vec::new(),
            timeout,
            compression: Compression::None,
            certificate: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    pub traces: SignalSettings,
    pub metrics: SignalSettings,
    /// `OTEL_RESOURCE_ATTRIBUTES`, in the order given.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: Option<String>,
}

impl OtlpSettings {
    /// OTLP/HTTP protobuf to a collector at `base` (`/v1/traces`, `/v1/metrics`), no headers.
    pub fn http(base: &str, timeout: Duration) -> Self {
        let base = base.trim_end_matches('/');
        OtlpSettings {
            traces: SignalSettings::http(format!("{base}/v1/traces"), timeout),
            metrics: SignalSettings::http(format!("{base}/v1/metrics"), timeout),
            resource_attributes: Vec::new(),
            service_name: None,
        }
    }

    /// Same settings over another protocol, with `url` as each signal's endpoint for gRPC.
    pub fn with_protocol(mut self, protocol: Protocol, grpc_url: &str) -> Self {
        for s in [&mut self.traces, &mut self.metrics] {
            s.protocol = protocol;
            if protocol == Protocol::Grpc {
                s.url = grpc_url.to_string();
            }
        }
        self
    }

    /// Reads the standard variables; `None` when no endpoint is set.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Every variable is checked, also those an override makes unused, so a typo never waits
    /// for the day it matters. Setting one signal's endpoint without the other (and without
    /// the base) is an error: half the telemetry would be dropped without a word.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let env = Settings::new(get);
        let base = env.text(BASE).map(|v| endpoint_url(BASE, &v)).transpose()?;
        let general = Common::read(&env, "")?;
        let traces = Common::read(&env, "TRACES_")?;
        let metrics = Common::read(&env, "METRICS_")?;
        let resource_attributes = match env.text(RESOURCE_ATTRIBUTES) {
            Some(text) => parse_resource_attributes(&text)?,
            None => Vec::new(),
        };
        let service_name = env.text(SERVICE_NAME);
        let url = |specific: &str, path: &str, own: &Common| {
            let protocol = own.protocol.or(general.protocol);
            signal_url(env.text(specific), specific, path, base.as_ref(), protocol)
        };
        let traces = url(TRACES, "v1/traces", &traces)?.map(|u| signal(u, traces, &general));
        let metrics = url(METRICS, "v1/metrics", &metrics)?.map(|u| signal(u, metrics, &general));
        let (traces, metrics) = match (traces, metrics) {
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
            traces,
            metrics,
            resource_attributes,
            service_name,
        }))
    }
}

/// The settings that exist in a general and a per-signal form (`OTEL_EXPORTER_OTLP_X` and
/// `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_X`); the per-signal one wins.
struct Common {
    protocol: Option<Protocol>,
    headers: Option<Vec<(String, String)>>,
    timeout_ms: Option<i64>,
    compression: Option<Compression>,
    certificate: Option<Vec<u8>>,
}

/// A signal's URL: its own variable, else the base (with the signal's path for OTLP/HTTP; as is
/// for gRPC, which takes no path); `None` when neither is set.
fn signal_url(
    own: Option<String>,
    specific: &str,
    path: &str,
    base: Option<&reqwest::Url>,
    protocol: Option<Protocol>,
) -> Result<Option<(reqwest::Url, Protocol)>, ConfigError> {
    let protocol = protocol.unwrap_or(Protocol::HttpProtobuf);
    let (url, var) = match own {
        Some(text) => (endpoint_url(specific, &text)?, specific),
        None => match base {
            Some(b) if protocol == Protocol::HttpProtobuf => (
                reqwest::Url::parse(&format!("{}/{path}", b.as_str().trim_end_matches('/')))
                    .map_err(|e| ConfigError::new(BASE, format!("accepts a URL: {e}")))?,
                BASE,
            ),
            Some(b) => (b.clone(), BASE),
            None => return Ok(None),
        },
    };
    if protocol == Protocol::Grpc && !matches!(url.path(), "" | "/") {
        return Err(ConfigError::new(
            var,
            format!(
                "accepts a gRPC collector address without a path (e.g. http://collector:4317) \
                 when the protocol is grpc; {:?} has the path {:?}",
                url.as_str(),
                url.path()
            ),
        ));
    }
    Ok(Some((url, protocol)))
}

/// A signal's settings: its own, else the general ones, else the defaults.
fn signal(
    (url, protocol): (reqwest::Url, Protocol),
    own: Common,
    general: &Common,
) -> SignalSettings {
    SignalSettings {
        protocol,
        url: url.to_string(),
        headers: own.headers.or(general.headers.clone()).unwrap_or_default(),
        timeout: Duration::from_millis(
            own.timeout_ms
                .or(general.timeout_ms)
                .unwrap_or(DEFAULT_TIMEOUT_MS) as u64,
        ),
        compression: own
            .compression
            .or(general.compression)
            .unwrap_or(Compression::None),
        certificate: own.certificate.or(general.certificate.clone()),
    }
}

impl Common {
    fn read<F: Fn(&str) -> Option<String>>(
        env: &Settings<F>,
        signal: &str,
    ) -> Result<Self, ConfigError> {
        let var = |what: &str| format!("OTEL_EXPORTER_OTLP_{signal}{what}");
        let protocol = match env.text(&var("PROTOCOL")) {
            None => None,
            Some(v) => Some(match v.as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                _ => {
                    return Err(ConfigError::new(
                        &var("PROTOCOL"),
                        format!("accepts grpc or http/protobuf, got {v:?}"),
                    ))
                }
            }),
        };
        let headers = env
            .text(&var("HEADERS"))
            .map(|h| parse_headers_for(&var("HEADERS"), &h))
            .transpose()?;
        let timeout_ms = match env.text(&var("TIMEOUT")) {
            None => None,
            Some(_) => Some(env.int(
                &var("TIMEOUT"),
                DEFAULT_TIMEOUT_MS,
                1..=60_000,
                "milliseconds",
            )?),
        };
        let compression = match env.text(&var("COMPRESSION")) {
            None => None,
            Some(v) => Some(match v.to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => {
                    return Err(ConfigError::new(
                        &var("COMPRESSION"),
                        format!("accepts gzip or none, got {v:?}"),
                    ))
                }
            }),
        };
        let certificate = env
            .text(&var("CERTIFICATE"))
            .map(|path| read_certificate(&var("CERTIFICATE"), &path))
            .transpose()?;
        Ok(Common {
            protocol,
            headers,
            timeout_ms,
            compression,
            certificate,
        })
    }
}

/// A PEM file of one or more certificates, read and parsed at start.
fn read_certificate(var: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let accepts = |why: String| {
        ConfigError::new(
            var,
            format!("accepts the path of a PEM file of CA certificates; {path:?} {why}"),
        )
    };
    let pem = std::fs::read(path).map_err(|e| accepts(format!("cannot be read: {e}")))?;
    let parsed = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| accepts(format!("is not PEM: {e}")))?;
    if parsed.is_empty() {
        return Err(accepts("holds no certificate".into()));
    }
    Ok(pem)
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: a W3C-baggage-style `key=value,key2=value2` list whose values
/// are percent-encoded, as the OpenTelemetry specification defines. Each key must be an HTTP
/// header name and each decoded value an HTTP header value of visible ASCII; a value is never
/// echoed in an error (it is often an API key).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    parse_headers_for(HEADERS, text)
}

fn parse_headers_for(var: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (n, k, value) in key_values(var, text, "values percent-encoded")? {
        let bad = |why: String| {
            ConfigError::new(
                var,
                format!(
                    "accepts key=value pairs separated by commas (values percent-encoded); {why}"
                ),
            )
        };
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(format!("member {n}: {k:?} is not an HTTP header name")))?;
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
        out.push((name.as_str().to_string(), value));
    }
    Ok(out)
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,key2=value2`, values percent-encoded; a repeated key
/// or a control character is refused.
pub fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, k, value) in key_values(RESOURCE_ATTRIBUTES, text, "values percent-encoded")? {
        let bad = |why: String| {
            ConfigError::new(
                RESOURCE_ATTRIBUTES,
                format!("accepts key=value pairs separated by commas (values percent-encoded); member {n} {why}"),
            )
        };
        if k.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(format!(
                "has the key {k:?} with a space or control character"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(bad(format!("({k:?}) decodes to a control character")));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(bad(format!("repeats the key {k:?}")));
        }
        out.push((k, value));
    }
    Ok(out)
}

/// Splits `k=v,k2=v2` (blank members skipped), percent-decoding each value: (member number,
/// key, value).
fn key_values(
    var: &str,
    text: &str,
    form: &str,
) -> Result<Vec<(usize, String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, member) in text.split(',').enumerate() {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        let n = i + 1;
        let bad = |why: String| {
            ConfigError::new(
                var,
                format!("accepts key=value pairs separated by commas ({form}); {why}"),
            )
        };
        let (k, v) = member
            .split_once('=')
            .ok_or_else(|| bad(format!("member {n} has no '='")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(bad(format!("member {n} has an empty key")));
        }
        let value = percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| bad(format!("the value of {k:?} does not decode to UTF-8")))?;
        out.push((n, k.to_string(), value.into_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn settings_from_standard_variables() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%3Db,tenant=t1"),
        ];
        let s = OtlpSettings::from_lookup(lookup(&vars)).unwrap().unwrap();
        assert_eq!(s.traces.url, "http://c:4318/v1/traces");
        assert_eq!(s.metrics.url, "http://c:4318/v1/metrics");
        assert_eq!(s.traces.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            s.traces.headers,
            vec![
                ("x-api-key".into(), "a=b".into()),
                ("tenant".into(), "t1".into())
            ]
        );
        assert_eq!(s.traces.headers, s.metrics.headers);
        assert!(OtlpSettings::from_lookup(|_| None).unwrap().is_none());
    }

    /// gRPC takes the base as the collector's address; per-signal settings replace the general
    /// ones for their signal only.
    #[test]
    fn grpc_and_per_signal_settings() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:4318/v1/metrics",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%20b",
            ),
            ("OTEL_SERVICE_NAME", "vs"),
        ];
        let s = OtlpSettings::from_lookup(lookup(&vars)).unwrap().unwrap();
        assert_eq!(s.traces.protocol, Protocol::Grpc);
        assert_eq!(s.traces.url, "http://c:4317/");
        assert_eq!(s.traces.compression, Compression::Gzip);
        assert_eq!(s.traces.headers, vec![("b".into(), "2".into())]);
        assert_eq!(s.traces.timeout, Duration::from_millis(1000));
        assert_eq!(s.metrics.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.metrics.url, "http://m:4318/v1/metrics");
        assert_eq!(s.metrics.compression, Compression::None);
        assert_eq!(s.metrics.headers, vec![("a".into(), "1".into())]);
        assert_eq!(s.metrics.timeout, Duration::from_millis(2000));
        assert_eq!(
            s.resource_attributes,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "a b".into())
            ]
        );
        assert_eq!(s.service_name.as_deref(), Some("vs"));
    }

    #[test]
    fn certificate_is_read_and_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for path in [&junk, &missing] {
            let path = path.to_str().unwrap();
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", path),
            ];
            let err = OtlpSettings::from_lookup(lookup(&vars)).unwrap_err();
            assert_eq!(err.var, "OTEL_EXPORTER_OTLP_CERTIFICATE", "{err}");
        }
    }
}
