//! The OTLP exporter against real receivers: the Rust OTLP/HTTP receiver of tests/common (axum,
//! prost decoding, gzip inflated by flate2) and a Python OTLP/gRPC receiver (grpcio with the
//! opentelemetry-proto stubs, tests/common/otlp_grpc_receiver.py). Spans and metric points
//! arrive the same over both protocols, compressed, with the configured headers; partial
//! successes are logged with their counts; a collector that never answers is given up on within
//! the timeout; the real `serve` binary takes all of it from the standard variables.

mod common;

use common::grpc_receiver::{GrpcReceiver, Mode};
use common::moto::{free_port, Background};
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use valuestream::engine::metrics::{MetricKind, Series};
use valuestream::export::otlp::{Compression, OtlpExporter, OtlpSettings, Protocol};
use valuestream::export::{ExportError, Exporter};
use valuestream::model::{AttrValue, FinishedSpan, Kind, SpanEvent, SpanLink};
use valuestream::store::embedded::EmbeddedStore;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Settings for a receiver: gzip and an API-key header on both signals.
fn settings(protocol: Protocol, url: &str) -> OtlpSettings {
    let mut s = OtlpSettings::http(url, TIMEOUT).with_protocol(protocol, url);
    for signal in [&mut s.traces, &mut s.metrics] {
        signal.compression = Compression::Gzip;
        signal.headers = vec![("x-api-key".into(), "k1 two".into())];
    }
    s
}

/// Sends every batch to each exporter in turn: one pipeline, two collectors.
struct Tee(Vec<Arc<dyn Exporter>>);

#[async_trait::async_trait]
impl Exporter for Tee {
    async fn export_spans(&self, spans: &[FinishedSpan]) -> Result<(), ExportError> {
        for e in &self.0 {
            e.export_spans(spans).await?;
        }
        Ok(())
    }
    async fn export_points(&self, points: &[Series]) -> Result<(), ExportError> {
        for e in &self.0 {
            e.export_points(points).await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_points_arrive_the_same_over_grpc_and_gzipped_http_with_headers() {
    let http = Receiver::start().await;
    let grpc = GrpcReceiver::start(Mode::Ok).await;
    let tee = Tee(vec![
        Arc::new(OtlpExporter::new(settings(Protocol::HttpProtobuf, &http.url)).unwrap()),
        Arc::new(OtlpExporter::new(settings(Protocol::Grpc, &grpc.url)).unwrap()),
    ]);
    let app = app_exporting(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
        http.clone(),
        Arc::new(tee),
    );
    let deliveries = [
        ("github/issues/opened.payload.json", None),
        ("github/pull_request/opened.payload.json", Some(opened_pr())),
        ("github/pull_request/closed.payload.json", Some(merged_pr())),
        ("github/issues/closed.derived.payload.json", None),
        ("github/workflow_run/requested.payload.json", None),
        ("github/workflow_run/completed.payload.json", None),
        ("github/deployment_status/payload.json", None),
    ];
    for (i, (rel, body)) in deliveries.into_iter().enumerate() {
        let event = rel.split('/').nth(1).unwrap();
        let body = body.unwrap_or_else(|| fixture(rel));
        let (status, answer) = app.github(event, &format!("d-{i}"), body).await;
        assert!(status.is_success(), "{rel}: {status} {answer}");
        assert_eq!(answer["export_pending"], false, "{rel}: {answer}");
    }

    let spans = http.spans();
    assert!(spans.len() >= 4, "spans over HTTP: {spans:?}");
    assert!(spans.iter().any(|s| !s.parent_span_id.is_empty()));
    assert!(spans.iter().any(|s| s.kind == 2), "a SERVER span (the run)");
    assert_eq!(grpc.spans(), spans, "the same spans over gRPC as over HTTP");
    let points = http.points();
    assert!(!points.is_empty());
    assert!(points.iter().any(|p| !p.buckets.is_empty()), "a histogram");
    assert_eq!(
        grpc.points(),
        points,
        "the same points over gRPC as over HTTP"
    );

    // Every HTTP request was gzip-compressed (the receiver inflated it) and carried the header.
    let (trace_headers, metric_headers) = http.headers();
    assert!(!trace_headers.is_empty() && !metric_headers.is_empty());
    for h in trace_headers.iter().chain(&metric_headers) {
        assert_eq!(h["content-encoding"], "gzip", "{h:?}");
        assert_eq!(h["x-api-key"], "k1 two", "{h:?}");
        assert_eq!(h["content-type"], "application/x-protobuf", "{h:?}");
    }
    // And every gRPC call carried it as metadata.
    let (trace_meta, metric_meta) = grpc.metadata();
    assert_eq!(trace_meta.len(), trace_headers.len());
    assert_eq!(metric_meta.len(), metric_headers.len());
    for m in trace_meta.iter().chain(&metric_meta) {
        assert_eq!(
            m.get("x-api-key").map(String::as_str),
            Some("k1 two"),
            "{m:?}"
        );
    }
}

/// One finished span with a parent, a link, an event, an error status and attributes of every
/// type, and one counter and one histogram point.
fn sample() -> (Vec<FinishedSpan>, Vec<Series>) {
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let span = FinishedSpan {
        source: "github".into(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: "b7ad6b7169203331".into(),
        parent_span_id: Some("00f067aa0ba902b7".into()),
        name: "deploy prod".into(),
        kind: Kind::Deployment,
        start: t("2024-05-01T10:00:00.123Z"),
        end: t("2024-05-01T10:05:00Z"),
        attributes: [
            ("s".to_string(), AttrValue::Str("x".into())),
            ("i".to_string(), AttrValue::Int(-3)),
            ("f".to_string(), AttrValue::Float(1.5)),
            ("b".to_string(), AttrValue::Bool(true)),
            (
                "l".to_string(),
                AttrValue::StrList(vec!["a".into(), "b".into()]),
            ),
        ]
        .into_iter()
        .collect(),
        events: vec![SpanEvent {
            name: "approved".into(),
            time: t("2024-05-01T10:01:00Z"),
            attributes: Default::default(),
        }],
        links: vec![SpanLink {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "53995c3f42cd8ad8".into(),
            attributes: [("why".to_string(), AttrValue::Str("caused".into()))]
                .into_iter()
                .collect(),
        }],
        dropped_links: 0,
        error: true,
        status_message: Some("failed".into()),
    };
    let counter = Series {
        name: valuestream::engine::metrics::DEPLOYMENTS.into(),
        kind: MetricKind::Counter,
        labels: [("repository".to_string(), "o/r".to_string())]
            .into_iter()
            .collect(),
        start_ns: 1_714_557_600_000_000_000,
        time_ns: 1_714_557_900_000_000_000,
        count: 4,
        sum: 0.0,
        sum_ms: 0,
        buckets: vec![],
    };
    let histogram = Series {
        name: valuestream::engine::metrics::LEAD_TIME.into(),
        kind: MetricKind::Histogram,
        count: 2,
        sum: 3.5,
        sum_ms: 3500,
        buckets: {
            let mut b = vec![0; valuestream::engine::metrics::BUCKETS.len() + 1];
            b[1] = 2;
            b
        },
        ..counter.clone()
    };
    (vec![span], vec![counter, histogram])
}

/// The sample span exactly as it must arrive.
fn assert_sample_arrived(spans: &[RSpan], service: &str) {
    assert_eq!(spans.len(), 1, "{spans:?}");
    let s = &spans[0];
    assert_eq!(s.service, service);
    assert_eq!(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s.span_id, "b7ad6b7169203331");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(s.start_ns, ns("2024-05-01T10:00:00.123Z"));
    assert_eq!(s.end_ns, ns("2024-05-01T10:05:00Z"));
    assert_eq!((s.status_code, s.status_message.as_str()), (2, "failed"));
    assert_eq!(s.kind, 1, "INTERNAL");
    assert_eq!(s.attrs["l"], serde_json::json!(["a", "b"]));
    assert_eq!(s.attrs["i"], serde_json::json!(-3));
    assert_eq!(s.attrs["f"], serde_json::json!(1.5));
    assert_eq!(s.attrs["b"], serde_json::json!(true));
    assert_eq!(
        s.links,
        vec![(
            "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
            "53995c3f42cd8ad8".to_string(),
            [("why".to_string(), serde_json::json!("caused"))]
                .into_iter()
                .collect()
        )]
    );
    assert_eq!(
        s.events,
        vec![("approved".into(), ns("2024-05-01T10:01:00Z"))]
    );
}

/// Log lines written while `f` runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Exports the sample through `exporter` with a log subscriber on this (current-thread)
/// runtime's thread: the log text.
async fn export_logged(exporter: &OtlpExporter) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (spans, points) = sample();
    exporter.export_spans(&spans).await.unwrap();
    exporter.export_points(&points).await.unwrap();
    captured.text()
}

#[tokio::test]
async fn a_grpc_partial_success_is_logged_with_its_counts() {
    let grpc = GrpcReceiver::start(Mode::Partial).await;
    let exporter = OtlpExporter::new(settings(Protocol::Grpc, &grpc.url)).unwrap();
    let log = export_logged(&exporter).await;
    assert!(log.contains("rejected_spans=2"), "{log}");
    assert!(log.contains("2 spans too old"), "{log}");
    assert!(log.contains("rejected_data_points=3"), "{log}");
    assert!(log.contains("3 points refused"), "{log}");
    // A partial success is a success: what was accepted arrived.
    assert_sample_arrived(&grpc.spans(), "github");
    assert_eq!(grpc.points().len(), 2);
}

#[tokio::test]
async fn an_http_partial_success_is_logged_with_its_counts() {
    let http = Receiver::start().await;
    http.set_partial(Some((5, "five refused")));
    let exporter = OtlpExporter::new(settings(Protocol::HttpProtobuf, &http.url)).unwrap();
    let log = export_logged(&exporter).await;
    assert!(log.contains("rejected_spans=5"), "{log}");
    assert!(log.contains("rejected_data_points=5"), "{log}");
    assert!(log.contains("five refused"), "{log}");
    assert_sample_arrived(&http.spans(), "github");
    let points = http.points();
    assert_eq!(points.len(), 2);
    let lead = points
        .iter()
        .find(|p| p.name == valuestream::engine::metrics::LEAD_TIME)
        .unwrap();
    assert_eq!((lead.value, lead.sum, lead.cumulative), (2.0, 3.5, true));
    assert_eq!(
        lead.start_ns, 1_714_557_600_000_000_000,
        "the series' own start time"
    );
    // Without a partial success nothing is logged.
    http.set_partial(None);
    let log = export_logged(&exporter).await;
    assert!(!log.contains("rejected"), "{log}");
}

/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` reach the resource of both signals.
#[tokio::test]
async fn resource_settings_name_the_service() {
    let http = Receiver::start().await;
    let mut s = settings(Protocol::HttpProtobuf, &http.url);
    s.service_name = Some("delivery-metrics".into());
    s.resource_attributes = vec![("deployment.environment".into(), "prod".into())];
    let exporter = OtlpExporter::new(s).unwrap();
    export_logged(&exporter).await;
    assert_sample_arrived(&http.spans(), "delivery-metrics");
}

/// A TCP proxy in front of `upstream` that counts the bytes clients send.
async fn counting_proxy(upstream: &str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    counter.fetch_add(n, Ordering::SeqCst);
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    (url, sent)
}

/// gRPC metadata does not show the request's compression to grpcio's handler, so the wire
/// shows it: the same compressible spans and points take several times fewer bytes with
/// `gzip` than with `none`, and arrive the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_compresses_spans_and_points_on_the_wire() {
    use std::sync::atomic::Ordering;
    let grpc = GrpcReceiver::start(Mode::Ok).await;
    let (mut spans, base_points) = sample();
    spans[0]
        .attributes
        .insert("long".into(), AttrValue::Str("0123456789".repeat(2000)));
    let points: Vec<Series> = (0..200)
        .flat_map(|i| {
            base_points.iter().map(move |p| {
                let mut p = p.clone();
                p.labels.insert(
                    "repository".into(),
                    format!("some-owner/some-repository-{i}").into(),
                );
                p
            })
        })
        .collect();
    let mut bytes = Vec::new();
    for compression in [Compression::None, Compression::Gzip] {
        let (url, sent) = counting_proxy(&grpc.url).await;
        let mut s = settings(Protocol::Grpc, &url);
        s.traces.compression = compression;
        s.metrics.compression = compression;
        let exporter = OtlpExporter::new(s).unwrap();
        exporter.export_spans(&spans).await.unwrap();
        let after_spans = sent.load(Ordering::SeqCst);
        exporter.export_points(&points).await.unwrap();
        let after_points = sent.load(Ordering::SeqCst);
        bytes.push((after_spans, after_points - after_spans));
    }
    let [(plain_spans, plain_points), (gzip_spans, gzip_points)] = bytes[..] else {
        unreachable!()
    };
    println!("bytes sent: spans {plain_spans} plain, {gzip_spans} gzip; points {plain_points} plain, {gzip_points} gzip");
    assert!(gzip_spans * 4 < plain_spans, "{bytes:?}");
    assert!(gzip_points * 4 < plain_points, "{bytes:?}");
    let received = grpc.spans();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0], received[1], "the same span either way");
    assert_eq!(grpc.points().len(), 2 * points.len());
}

/// `OTEL_EXPORTER_OTLP_CERTIFICATE` over gRPC: a collector whose certificate is signed by a
/// private CA is trusted with that CA's PEM file, and refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_certificate_is_trusted_for_grpc_over_tls() {
    let tls = GrpcReceiver::start(Mode::Tls).await;
    let ca = fixtures_dir().join("otlp/ca.pem");
    let settings_from = |with_ca: bool| {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", tls.url.clone());
        let mut vars = vec![
            base,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000".to_string()),
        ];
        if with_ca {
            vars.push((
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                ca.to_str().unwrap().to_string(),
            ));
        }
        OtlpSettings::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .unwrap()
            .unwrap()
    };
    let (spans, points) = sample();
    let untrusted = OtlpExporter::new(settings_from(false)).unwrap();
    let err = untrusted.export_spans(&spans).await.unwrap_err();
    assert!(tls.spans().is_empty(), "{err}");
    let trusted = OtlpExporter::new(settings_from(true)).unwrap();
    trusted.export_spans(&spans).await.unwrap();
    trusted.export_points(&points).await.unwrap();
    assert_sample_arrived(&tls.spans(), "github");
    assert_eq!(tls.points().len(), 2);
}

/// A collector that takes the connection (or the call) and never answers: each export gives up
/// within the timeout, with an error, and nothing waits longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_grpc_collector_is_given_up_on_within_the_timeout() {
    let hang = GrpcReceiver::start(Mode::Hang).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute = format!("http://{}", listener.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(1200);
    for url in [&hang.url, &mute] {
        let mut s = settings(Protocol::Grpc, url);
        s.traces.timeout = timeout;
        s.metrics.timeout = timeout;
        let exporter = OtlpExporter::new(s).unwrap();
        let (spans, points) = sample();
        let started = Instant::now();
        let err = exporter.export_spans(&spans).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took < timeout + Duration::from_millis(800),
            "{url}: spans took {took:?}: {err}"
        );
        let started = Instant::now();
        let err = exporter.export_points(&points).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took < timeout + Duration::from_millis(800),
            "{url}: points took {took:?}: {err}"
        );
    }
}

/// The real binary, configured only by the standard variables: gRPC, gzip, headers, resource;
/// a delivery's spans and points arrive, and the collector's partial success is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_over_grpc_from_the_standard_variables() {
    let grpc = GrpcReceiver::start(Mode::Partial).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = Background::spawn_clean(
        "serve-grpc",
        std::path::Path::new(env!("CARGO_BIN_EXE_valuestream")),
        &["serve", "--addr", &addr, "--data-dir", "state"],
        &[
            ("VALUESTREAM_ALLOW_UNSIGNED", "yes"),
            ("VALUESTREAM_SETTLE_SECS", "0"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &grpc.url),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%20k"),
            ("OTEL_SERVICE_NAME", "vs-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("VALUESTREAM_HEALTH_EXPORT_SECS", "1"),
        ],
        dir.path(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // An issue opened then closed: one finished span, and its metric points.
    let mut pending = vec![
        ("grpc-1", "github/issues/opened.payload.json"),
        ("grpc-2", "github/issues/closed.derived.payload.json"),
    ];
    pending.reverse();
    loop {
        assert!(!serve.exited(), "serve exited:\n{}", serve.log_tail(30));
        assert!(
            Instant::now() < deadline,
            "no spans over gRPC within 60 s:\n{}",
            serve.log_tail(30)
        );
        if let Some((delivery, rel)) = pending.last().copied() {
            let answer = client
                .post(format!("http://{addr}/webhooks/github"))
                .header("content-type", "application/json")
                .header("x-github-event", "issues")
                .header("x-github-delivery", delivery)
                .body(fixture(rel))
                .send()
                .await;
            if matches!(answer, Ok(r) if r.status().is_success()) {
                pending.pop();
            }
            continue;
        }
        if !grpc.spans().is_empty() && !grpc.points().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = grpc.spans();
    assert!(spans.iter().all(|s| s.service == "vs-test"), "{spans:?}");
    // serve's health timer (VALUESTREAM_HEALTH_EXPORT_SECS=1): the two deliveries, counted by
    // this process under its own service.instance.id, with the configured resource.
    let deadline = Instant::now() + Duration::from_secs(20);
    let processed = loop {
        let health = grpc.health();
        let latest = health
            .iter()
            .filter(|p| {
                p.name == "valuestream.health.deliveries"
                    && p.labels.get("answer").map(String::as_str) == Some("processed")
                    && p.labels.get("source").map(String::as_str) == Some("github")
            })
            .max_by_key(|p| p.time_ns)
            .cloned();
        if let Some(p) = latest.filter(|p| p.value >= 2.0) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no health over gRPC within 20 s: {health:#?}\n{}",
            serve.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(processed.value, 2.0);
    assert_eq!(processed.resource["service.name"], "vs-test");
    assert_eq!(processed.resource["deployment.environment"], "test");
    assert_eq!(processed.resource["service.instance.id"].len(), 32);
    assert!(processed.start_ns > 0 && processed.start_ns < processed.time_ns);
    let (trace_meta, metric_meta) = grpc.metadata();
    for m in trace_meta.iter().chain(&metric_meta) {
        assert_eq!(m.get("x-api-key").map(String::as_str), Some("s k"), "{m:?}");
    }
    // The partial successes are logged (bounded wait for the log line).
    let deadline = Instant::now() + Duration::from_secs(10);
    let ansi = regex::Regex::new(r"\x1b\[[0-9;]*m").unwrap();
    loop {
        let log = ansi.replace_all(&serve.log(), "").into_owned();
        if log.contains("rejected_spans=2") && log.contains("rejected_data_points=3") {
            break;
        }
        assert!(Instant::now() < deadline, "no partial-success log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
