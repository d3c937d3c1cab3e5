//! A real OTLP/gRPC receiver for tests: `tests/common/otlp_grpc_receiver.py` (grpcio with the
//! opentelemetry-proto stubs, from the project's `.venv`) on a free loopback port. It writes
//! every export request it receives, with its metadata, to a temporary directory; this side
//! decodes them with prost into the same flattened spans and points as the HTTP [`Receiver`].
//!
//! [`Receiver`]: super::Receiver

use super::moto::{repo, venv_tool, Background};
use super::{decode_health, decode_points, decode_spans, HPoint, RPoint, RSpan};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the receiver answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Accept every export.
    Ok,
    /// Accept, answering a partial success: 2 spans / 3 data points rejected.
    Partial,
    /// Never answer.
    Hang,
    /// Accept, over TLS (tests/fixtures/otlp/collector.pem, signed by ca.pem); the URL is https.
    Tls,
}

/// The gRPC metadata of each request, in arrival order.
pub type Metadata = Vec<BTreeMap<String, String>>;

pub struct GrpcReceiver {
    /// `http://127.0.0.1:PORT`, the collector address for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub url: String,
    dir: tempfile::TempDir,
    pub process: Background,
}

impl GrpcReceiver {
    /// Starts the receiver and waits (at most 30 s) until it serves.
    pub async fn start(mode: Mode) -> GrpcReceiver {
        let dir = tempfile::tempdir().unwrap();
        let script = repo().join("tests/common/otlp_grpc_receiver.py");
        let mode_arg = match mode {
            Mode::Ok => "ok",
            Mode::Partial => "partial",
            Mode::Hang => "hang",
            Mode::Tls => "tls",
        };
        let mut process = Background::spawn_clean(
            "otlp-grpc",
            &venv_tool("python"),
            &[
                script.to_str().unwrap(),
                dir.path().to_str().unwrap(),
                mode_arg,
            ],
            &[],
            &repo(),
        );
        let port_file = dir.path().join("port");
        let started = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            assert!(
                !process.exited(),
                "the gRPC receiver exited (is grpcio installed? run scripts/install-test-deps):\n{}",
                process.log_tail(30)
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the gRPC receiver did not start within 30 s:\n{}",
                process.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        GrpcReceiver {
            url: match mode {
                Mode::Tls => format!("https://127.0.0.1:{port}"),
                _ => format!("http://127.0.0.1:{port}"),
            },
            dir,
            process,
        }
    }

    /// The requests of one kind (`traces`, `metrics`) received so far, in arrival order, each
    /// with its gRPC metadata.
    fn requests<T: Message + Default>(&self, kind: &str) -> Vec<(T, BTreeMap<String, String>)> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(&format!(".{kind}.json")))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|json| {
                let stem = json.trim_end_matches(".json");
                let pb = std::fs::read(self.dir.path().join(format!("{stem}.pb"))).unwrap();
                let meta: BTreeMap<String, String> =
                    serde_json::from_slice(&std::fs::read(self.dir.path().join(&json)).unwrap())
                        .unwrap();
                (T::decode(&pb[..]).unwrap(), meta)
            })
            .collect()
    }

    pub fn spans(&self) -> Vec<RSpan> {
        let reqs: Vec<ExportTraceServiceRequest> = self
            .requests("traces")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        decode_spans(&reqs)
    }

    pub fn points(&self) -> Vec<RPoint> {
        let reqs: Vec<ExportMetricsServiceRequest> = self
            .requests("metrics")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        decode_points(&reqs)
    }

    /// valuestream's own health points received so far (scope `valuestream.health`).
    pub fn health(&self) -> Vec<HPoint> {
        let reqs: Vec<ExportMetricsServiceRequest> = self
            .requests("metrics")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        decode_health(&reqs)
    }

    /// The metadata of every trace and metric export request.
    pub fn metadata(&self) -> (Metadata, Metadata) {
        (
            self.requests::<ExportTraceServiceRequest>("traces")
                .into_iter()
                .map(|(_, m)| m)
                .collect(),
            self.requests::<ExportMetricsServiceRequest>("metrics")
                .into_iter()
                .map(|(_, m)| m)
                .collect(),
        )
    }
}
