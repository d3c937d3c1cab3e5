//! A serialising HTTP reverse proxy for tests: an axum server on loopback that takes each
//! request whole, holds one lock while it forwards the request upstream (reqwest) and reads the
//! whole answer, then returns it. The upstream sees one request at a time, whatever the clients
//! do. Used in front of a threaded `moto_server`, whose `TransactWriteItems` is not atomic under
//! concurrent requests (tests/serve_order.rs shows it), to give it the isolation real DynamoDB
//! has, without hiding anything the clients do: they still race each other, only moto's
//! handling of each request is made indivisible.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    lock: tokio::sync::Mutex<()>,
    forwarded: AtomicUsize,
    /// Requests in the critical section at once: never more than 1.
    inside: AtomicUsize,
    most_inside: AtomicUsize,
}

/// A running proxy. It stops with the test's runtime.
pub struct SerialProxy {
    pub url: String,
    shared: Arc<Shared>,
}

impl SerialProxy {
    /// A proxy on a free loopback port that forwards to `upstream` (e.g. `http://127.0.0.1:5000`).
    pub async fn start(upstream: &str) -> SerialProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            lock: tokio::sync::Mutex::new(()),
            forwarded: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            most_inside: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SerialProxy {
            url: format!("http://{addr}"),
            shared,
        }
    }

    /// Requests forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// The most requests ever forwarded at the same time (1 if the proxy serialises).
    pub fn most_at_once(&self) -> usize {
        self.shared.most_inside.load(Ordering::SeqCst)
    }
}

/// Hop-by-hop and framing headers: reqwest and hyper set their own.
fn passes(name: &str) -> bool {
    !matches!(
        name,
        "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
    )
}

async fn forward(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", s.upstream);
    let mut req = s.client.request(method, &url).body(body);
    for (k, v) in &headers {
        if passes(k.as_str()) {
            req = req.header(k, v);
        }
    }
    let _one_at_a_time = s.lock.lock().await;
    let now = s.inside.fetch_add(1, Ordering::SeqCst) + 1;
    s.most_inside.fetch_max(now, Ordering::SeqCst);
    s.forwarded.fetch_add(1, Ordering::SeqCst);
    let answer = async {
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, bytes))
    }
    .await;
    s.inside.fetch_sub(1, Ordering::SeqCst);
    match answer {
        Ok((status, headers, bytes)) => {
            let mut out = Response::builder().status(status.as_u16());
            for (k, v) in &headers {
                if passes(k.as_str()) {
                    out = out.header(k, v);
                }
            }
            out.body(Body::from(bytes)).unwrap()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("serialising proxy: upstream {url}: {e}"),
        )
            .into_response(),
    }
}
