//! DynamoDB faults through the real router: a TCP proxy (written here, on tokio) in front of a
//! real DynamoDB-compatible server (moto_server) refuses connections, or accepts them and never
//! answers, or passes traffic through. Deliveries and `GET /metrics` get a 503 with a reason
//! within a bounded time, and a delivery refused that way is processed (not lost, not a
//! duplicate) once DynamoDB answers again.

mod common;

use axum::http::StatusCode;
use common::moto::Moto;
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use valuestream::store::dynamodb::{bounded, DynamoStore};
use valuestream::store::Store;

/// The production default of `VALUESTREAM_DYNAMODB_TIMEOUT_MS`, so the test proves the default.
const OPERATION_TIMEOUT: Duration =
    Duration::from_millis(valuestream::config::DYNAMODB_TIMEOUT_MS as u64);
/// What a sender such as GitHub waits for an answer.
const SENDER_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Nothing listens: connections are refused.
    Refuse,
    /// Connections are accepted and never answered.
    Hang,
    /// Bytes flow both ways to the server behind.
    Pass,
}

/// A TCP proxy on a fixed loopback port. Each switch closes every connection it holds (so a
/// pooled keep-alive connection cannot slip past the new mode) and then listens, or not.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = Proxy {
            addr,
            upstream,
            accept: None,
        };
        p.accept = Some(tokio::spawn(serve(listener, Mode::Pass, upstream)));
        p
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn set(&mut self, mode: Mode) {
        if let Some(task) = self.accept.take() {
            task.abort();
            // Wait until the task (its listener and every connection it spawned) is dropped.
            let _ = task.await;
        }
        if mode != Mode::Refuse {
            let listener = TcpListener::bind(self.addr)
                .await
                .unwrap_or_else(|e| panic!("re-binding the proxy on {}: {e}", self.addr));
            self.accept = Some(tokio::spawn(serve(listener, mode, self.upstream)));
        }
    }
}

async fn serve(listener: TcpListener, mode: Mode, upstream: SocketAddr) {
    // Connections live in this set: aborting the accept task drops them all.
    let mut conns = JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        match mode {
            Mode::Pass => {
                conns.spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
            Mode::Hang => {
                conns.spawn(async move {
                    // Hold the connection open, read nothing, answer nothing.
                    let _held = inbound;
                    std::future::pending::<()>().await;
                });
            }
            Mode::Refuse => unreachable!("nothing listens in refuse mode"),
        }
        // Reap finished pass-through connections.
        while conns.try_join_next().is_some() {}
    }
}

/// The router on the DynamoDB store, its client through `proxy` with the production timeouts.
async fn app_through(moto: &Moto, proxy: &Proxy) -> (App, String) {
    let direct = moto.store().await; // creates a fresh table, directly
    let table = direct.table().to_string();
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .endpoint_url(proxy.url());
    let client = aws_sdk_dynamodb::Client::from_conf(bounded(conf, OPERATION_TIMEOUT).build());
    let store: Arc<dyn Store> = Arc::new(DynamoStore::with_client(client, &table));
    (app_with(store, test_config(&[])).await, table)
}

/// Items in the table, read directly from moto (not through the proxy).
async fn items(moto: &Moto, table: &str) -> usize {
    moto.client()
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items()
        .len()
}

/// The test's own bound on a call that production code must bound: a regression fails here
/// instead of hanging the suite.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = tokio::time::timeout(SENDER_LIMIT + Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer after {:?}", t.elapsed()));
    (out, t.elapsed())
}

/// Log lines written while the test runs (the router's `tracing` output).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init()
            .expect("this test binary installs the only subscriber");
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn reason(body: &serde_json::Value) -> String {
    body["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_that_hangs_or_refuses_gets_503_in_bounded_time_and_loses_nothing() {
    let logs = Logs::install();
    let moto = Moto::start().await;
    let upstream: SocketAddr = moto.url.trim_start_matches("http://").parse().unwrap();
    let mut proxy = Proxy::start(upstream).await;
    let (app, table) = app_through(&moto, &proxy).await;

    // Hang: connections are accepted and never answered.
    proxy.set(Mode::Hang).await;
    let ((status, body), took) = within(
        "hang: delivery",
        app.github("pull_request", "fault-1", merged_pr()),
    )
    .await;
    println!("hang: delivery answered {status} in {took:?}: {body}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < SENDER_LIMIT, "answered in {took:?}");
    assert!(took >= Duration::from_secs(1), "it really waited: {took:?}");
    assert!(reason(&body).contains("timed out"), "{body}");
    assert!(reason(&body).contains("retry later"), "{body}");

    let ((status, text), took) = within("hang: /metrics", app.get("/metrics")).await;
    println!("hang: /metrics answered {status} in {took:?}: {text}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(took < SENDER_LIMIT, "answered in {took:?}");
    assert!(text.contains("timed out"), "{text}");
    let log = logs.text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("request failed")
            && l.contains("timed out")),
        "the router logs a line for each 503:\n{log}"
    );

    // Refuse: nothing listens.
    proxy.set(Mode::Refuse).await;
    let ((status, body), took) = within(
        "refuse: delivery",
        app.github("pull_request", "fault-1", merged_pr()),
    )
    .await;
    println!("refuse: delivery answered {status} in {took:?}: {body}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        took < Duration::from_secs(3),
        "refused connections answer fast: {took:?}"
    );
    assert!(!reason(&body).is_empty(), "{body}");
    let ((status, text), took) = within("refuse: /metrics", app.get("/metrics")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Nothing of the refused delivery was written, and nothing exported.
    assert_eq!(
        items(&moto, &table).await,
        0,
        "refused deliveries wrote nothing"
    );
    assert!(app.receiver.spans().is_empty());

    // Pass-through again: the sender's retry of the same delivery is processed, not a
    // duplicate (it was never recorded), and its span is exported once.
    proxy.set(Mode::Pass).await;
    let ((status, body), _) = within(
        "pass: delivery",
        app.github("pull_request", "fault-1", merged_pr()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "processed", "{body}");
    assert_eq!(body["finished"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        items(&moto, &table).await > 0,
        "the table holds the delivery's items"
    );
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert!(spans[0].name.starts_with("PR #2"), "{}", spans[0].name);
    // A further redelivery is now a duplicate, and /metrics answers.
    let ((status, body), _) = within(
        "pass: redelivery",
        app.github("pull_request", "fault-1", merged_pr()),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    let ((status, text), _) = within("pass: /metrics", app.get("/metrics")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("valuestream_change_duration"), "{text}");
}
