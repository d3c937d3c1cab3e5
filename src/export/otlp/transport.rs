//! The connections to the collector, shared by both signals: one `reqwest` client for OTLP/HTTP
//! (handed to `opentelemetry-otlp` through its `HttpClient` trait, so only our reqwest and TLS
//! stack is linked) and one `tonic` channel for OTLP/gRPC. Metric points go over the same
//! client or channel with the same endpoint, header, timeout, compression and certificate
//! handling; partial-success answers are logged with their counts.

use super::settings::{Compression, Protocol, SignalSettings, CONNECT_TIMEOUT};
use crate::export::ExportError;
use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A client or channel to one collector.
#[derive(Clone, Debug)]
pub enum Transport {
    Http(reqwest::Client),
    Grpc(Channel),
}

impl Transport {
    /// The transport for `signal`, reusing `shared` (the other signal's) when it fits: same
    /// protocol and certificate, and for gRPC the same collector address.
    pub fn for_signal(
        signal: &SignalSettings,
        shared: Option<(&SignalSettings, &Transport)>,
    ) -> Result<Transport, ExportError> {
        if let Some((other, transport)) = shared {
            let same_peer = match signal.protocol {
                Protocol::HttpProtobuf => true,
                Protocol::Grpc => other.url == signal.url && other.timeout == signal.timeout,
            };
            if other.protocol == signal.protocol
                && other.certificate == signal.certificate
                && same_peer
            {
                return Ok(transport.clone());
            }
        }
        match signal.protocol {
            Protocol::HttpProtobuf => http_client(signal).map(Transport::Http),
            Protocol::Grpc => grpc_channel(signal).map(Transport::Grpc),
        }
    }
}

fn config_error(e: impl std::fmt::Display) -> ExportError {
    ExportError::Config(e.to_string())
}

fn http_client(signal: &SignalSettings) -> Result<reqwest::Client, ExportError> {
    let mut builder =
        reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT.min(signal.timeout));
    if let Some(pem) = &signal.certificate {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(config_error)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(config_error)
}

/// A lazily connecting channel: nothing waits for the collector at start.
fn grpc_channel(signal: &SignalSettings) -> Result<Channel, ExportError> {
    let mut endpoint = Endpoint::from_shared(signal.url.clone())
        .map_err(config_error)?
        .connect_timeout(CONNECT_TIMEOUT.min(signal.timeout))
        .timeout(signal.timeout);
    if signal.url.starts_with("https:") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = &signal.certificate {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(config_error)?;
    }
    Ok(endpoint.connect_lazy())
}

/// gRPC metadata from the configured headers (checked at start to be valid header names and
/// visible-ASCII values).
pub fn metadata(headers: &[(String, String)]) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (k, v) in headers {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// Our reqwest client as `opentelemetry-http`'s client: each request bounded by `timeout`,
/// connection set-up by [`CONNECT_TIMEOUT`].
#[derive(Clone, Debug)]
pub struct ReqwestHttpClient {
    pub client: reqwest::Client,
    pub timeout: Duration,
}

#[async_trait]
impl HttpClient for ReqwestHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        *request.timeout_mut() = Some(self.timeout);
        let response = self.client.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut out = Response::builder().status(status).body(body)?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, ExportError> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(body)
        .and_then(|_| encoder.finish())
        .map_err(|e| ExportError::Failed(format!("gzip: {e}")))
}

/// Sends one metrics request and logs a partial success.
pub async fn send_metrics(
    transport: &Transport,
    signal: &SignalSettings,
    request: ExportMetricsServiceRequest,
) -> Result<(), ExportError> {
    let response = match transport {
        Transport::Http(client) => post_metrics(client, signal, request).await?,
        Transport::Grpc(channel) => {
            let mut client = MetricsServiceClient::new(channel.clone());
            if signal.compression == Compression::Gzip {
                client = client.send_compressed(CompressionEncoding::Gzip);
            }
            let mut grpc_request = tonic::Request::new(request);
            *grpc_request.metadata_mut() = metadata(&signal.headers);
            grpc_request.set_timeout(signal.timeout);
            let answer = tokio::time::timeout(signal.timeout, client.export(grpc_request))
                .await
                .map_err(|_| {
                    ExportError::Unreachable(format!(
                        "{}: no answer within {:?}",
                        signal.url, signal.timeout
                    ))
                })?
                .map_err(|status| {
                    ExportError::Failed(format!(
                        "{}: gRPC status {:?}: {}",
                        signal.url,
                        status.code(),
                        status.message().chars().take(300).collect::<String>()
                    ))
                })?;
            answer.into_inner()
        }
    };
    if let Some(partial) = response.partial_success {
        if partial.rejected_data_points > 0 || !partial.error_message.is_empty() {
            tracing::warn!(
                rejected_data_points = partial.rejected_data_points,
                error_message = %partial.error_message,
                "the OTLP collector rejected part of a metrics export (partial success)"
            );
        }
    }
    Ok(())
}

async fn post_metrics(
    client: &reqwest::Client,
    signal: &SignalSettings,
    request: ExportMetricsServiceRequest,
) -> Result<ExportMetricsServiceResponse, ExportError> {
    let url = &signal.url;
    let mut body = request.encode_to_vec();
    let mut req = client
        .post(url)
        .timeout(signal.timeout)
        .header("content-type", "application/x-protobuf");
    if signal.compression == Compression::Gzip {
        body = gzip(&body)?;
        req = req.header("content-encoding", "gzip");
    }
    for (k, v) in &signal.headers {
        req = req.header(k, v);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| ExportError::Unreachable(format!("{url}: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| ExportError::Unreachable(format!("{url}: {e}")))?;
    if status.is_success() {
        // An empty or undecodable body is a full success, as the specification allows.
        Ok(ExportMetricsServiceResponse::decode(body).unwrap_or_default())
    } else {
        Err(ExportError::Rejected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        })
    }
}
