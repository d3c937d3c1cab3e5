//! The Lambda path for real: the `valuestream` binary as a Lambda function behind `cargo lambda
//! watch`'s runtime API and function-URL emulator (API Gateway HTTP API v2 events), state in
//! DynamoDB (moto_server), telemetry to an OTLP receiver. Driven over HTTP with signed fixtures,
//! and with the `Drain` schedule's EventBridge event (events/scheduled/drain.json) through the
//! Invoke API.
//!
//! The emulator runs with `--only-lambda-apis` and the test starts the function itself: the
//! binary cargo built for this test run (`CARGO_BIN_EXE_valuestream`), pointed at the emulator's
//! runtime API as the Lambda service would. Letting the watcher `cargo run` the function instead
//! would build a second copy (a `cargo test` build unifies dev-dependency features, so a plain
//! `cargo run` artifact differs) and would run whatever source is on disk rather than the binary
//! under test.
//!
//! URL shape: `http://127.0.0.1:<port>/lambda-url/valuestream/<path>` (function-URL style; the
//! emulator turns it into an HTTP API v2 event with `rawPath` `/<path>`), and
//! `POST http://127.0.0.1:<port>/2015-03-31/functions/valuestream/invocations` with an event
//! file as the body (what `cargo lambda invoke --data-file` sends).

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::moto::{free_port, repo, venv_tool, Background, Moto, AWS_ENV};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use valuestream::model::ids::delivery_tag;
use valuestream::sources::verify::hmac_sha256_hex;

const SECRET: &str = "local-github-secret";
const FUNCTION: &str = "valuestream";

struct Lambda {
    base: String,
    http: reqwest::Client,
    // Dropped in this order: the function first, then the emulator.
    function: Background,
    watcher: Background,
}

impl Lambda {
    /// The emulator, then the function (with `extra_env` besides what Lambda and template.yaml
    /// set), ready once it has answered `GET /healthz`.
    async fn start(moto_url: &str, table: &str, otlp: &str, extra_env: &[(&str, &str)]) -> Lambda {
        let cargo_lambda = venv_tool("cargo-lambda");
        let port = free_port();
        let path = format!(
            "{}:{}",
            repo().join(".venv/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let port_s = port.to_string();
        let mut watcher = Background::spawn(
            "cargo-lambda-watch",
            &cargo_lambda,
            &[
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
                &port_s,
            ],
            &[("PATH", &path), ("RUST_LOG", "info")],
            &repo(),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                !watcher.exited(),
                "cargo lambda watch exited\n{}",
                watcher.log_tail(40)
            );
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch is not listening on {port} after 60 s\n{}",
                watcher.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let runtime_api = format!("http://127.0.0.1:{port}/.rt/{FUNCTION}");
        let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
        env.extend([
            // What the Lambda service sets.
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/valuestream"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test"),
            // What template.yaml sets.
            ("VALUESTREAM_TABLE", table),
            ("VALUESTREAM_GITHUB_SECRET", SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("RUST_LOG", "info"),
            // Local only: DynamoDB is moto.
            ("AWS_ENDPOINT_URL_DYNAMODB", moto_url),
        ]);
        env.extend_from_slice(extra_env);
        let function = Background::spawn_clean(
            "valuestream-lambda",
            std::path::Path::new(env!("CARGO_BIN_EXE_valuestream")),
            &[],
            &env,
            &repo(),
        );
        let lambda = Lambda {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            function,
            watcher,
        };
        // The first invocation: a generous timeout for a cold start on a busy machine.
        let (s, b) = lambda.get("/healthz").await;
        assert_eq!(s, 200, "healthz through the function URL: {b}");
        lambda
    }

    fn url(&self, path: &str) -> String {
        format!("{}/lambda-url/{FUNCTION}{path}", self.base)
    }

    fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.function.log_tail(30),
            self.watcher.log_tail(15)
        )
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.logs()));
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.logs()));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
        (status, v)
    }

    async fn github(&self, event: &str, delivery: &str, body: Vec<u8>) -> (u16, Value) {
        let sig = format!("sha256={}", hmac_sha256_hex(SECRET, &body));
        self.post(
            "/webhooks/github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
            ],
            body,
        )
        .await
    }

    /// An event file through the Invoke API, as `cargo lambda invoke --data-file` sends it.
    async fn invoke(&self, event: &[u8]) -> Value {
        let (status, function_error, answer) = self.invoke_raw(event).await;
        assert!(
            (200..300).contains(&status) && function_error.is_none(),
            "invoke: {status} {function_error:?} {answer}\n{}",
            self.logs()
        );
        answer
    }

    /// The Invoke API's status, its `X-Amz-Function-Error` header (set when the function
    /// answered with an error) and the answer.
    async fn invoke_raw(&self, event: &[u8]) -> (u16, Option<String>, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/2015-03-31/functions/{FUNCTION}/invocations",
                self.base
            ))
            .body(event.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoke: {e}\n{}", self.logs()));
        let status = resp.status().as_u16();
        let function_error = resp
            .headers()
            .get("x-amz-function-error")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let text = resp.text().await.unwrap();
        let answer = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
        (status, function_error, answer)
    }

    /// The scheduled event of `events/scheduled/drain.json` through the Invoke API: what the
    /// `Drain` schedule of template.yaml sends. Returns the drain's summary.
    async fn drain(&self) -> Value {
        let event = std::fs::read(repo().join("events/scheduled/drain.json")).unwrap();
        let answer = self.invoke(&event).await;
        assert_eq!(answer["status"], "drained", "{answer}");
        for field in ["exported", "failed"] {
            assert!(answer[field].is_u64(), "{field} in {answer}");
        }
        assert!(answer["remaining"].is_boolean(), "{answer}");
        answer
    }
}

type Item = HashMap<String, AttributeValue>;

/// Every item of the table, by `pk|sk` (a Scan is fine in a test; the service never scans).
async fn table_items(moto: &Moto, table: &str) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = moto
            .client()
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let key = format!(
                "{}|{}",
                item["pk"].as_s().unwrap(),
                item["sk"].as_s().unwrap()
            );
            out.insert(key, item.clone());
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return out,
        }
    }
}

fn data(item: &Item) -> Value {
    // Through the store's own decoding: large record data is stored DEFLATE-compressed.
    valuestream::store::dynamodb::decode(item, 0)
        .unwrap()
        .expect("a live record")
        .data
        .to_value()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deliveries_through_the_lambda_runtime() {
    let moto = Moto::start().await;
    let table = moto.store().await.table().to_string();
    let receiver = Receiver::start().await;
    // Finished spans are due at once (no settle period); the scheduled drain below exports
    // whatever the request path left.
    let lambda = Lambda::start(
        &moto.url,
        &table,
        &receiver.url,
        &[("VALUESTREAM_SETTLE_SECS", "0")],
    )
    .await;

    // Issue opened: state in DynamoDB, nothing exported yet.
    let (s, b) = lambda
        .github(
            "issues",
            "lambda-1",
            fixture("github/issues/opened.payload.json"),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", lambda.logs());
    assert_eq!(
        (b["status"].as_str(), b["opened"].as_u64()),
        (Some("processed"), Some(1)),
        "{b}"
    );
    let items = table_items(&moto, &table).await;
    let issue_item = &items["item#github/issue/codertocat/hello-world/1|_"];
    assert_eq!(
        data(issue_item)["facts"].as_array().map(Vec::len),
        Some(1),
        "the issue's one fact is stored"
    );
    assert_eq!(
        data(issue_item)["facts"][0]["deliveries"],
        json!([delivery_tag("github", "lambda-1")]),
        "the fact keeps the tag of the delivery that brought it"
    );
    assert!(
        !items.keys().any(|k| k.starts_with("delivery#")),
        "no separate delivery record: {:?}",
        items.keys()
    );
    for item in items.values() {
        let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
        assert!(
            ttl > valuestream::store::now_epoch(),
            "every item has a future ttl"
        );
        assert!(item.contains_key("v"));
    }
    assert!(receiver.spans().is_empty());

    // The change that names the issue in its branch, then its merge.
    let (s, b) = lambda.github("pull_request", "lambda-2", opened_pr()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("processed")), "{b}");
    let (s, b) = lambda.github("pull_request", "lambda-3", merged_pr()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("processed")), "{b}");
    assert_eq!(
        (b["closed"].as_u64(), b["settle_secs"].as_i64()),
        (Some(1), Some(0)),
        "{b}"
    );
    // Exported by the time a scheduled drain has answered.
    lambda.drain().await;
    let change = receiver.span("PR #2");

    let (s, b) = lambda
        .github(
            "issues",
            "lambda-4",
            fixture("github/issues/closed.derived.payload.json"),
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("processed")), "{b}");
    let drained = lambda.drain().await;
    let issue = receiver.span("ISSUE #1");
    // After the drain, the sandbox's own health went out too (scope valuestream.health): its
    // deliveries under its own service.instance.id, the store's gauges under the shared resource.
    assert_eq!(drained["health"], "sent", "{drained}\n{}", lambda.logs());
    let health = receiver.health();
    let processed = health
        .iter()
        .filter(|p| {
            p.name == "valuestream.health.deliveries"
                && p.labels.get("answer").map(String::as_str) == Some("processed")
                && p.labels.get("source").map(String::as_str) == Some("github")
        })
        .max_by_key(|p| p.time_ns)
        .unwrap_or_else(|| panic!("the sandbox's deliveries: {health:#?}"));
    assert!(processed.value >= 2.0, "{processed:?}");
    assert_eq!(processed.resource["service.instance.id"].len(), 32);
    let due = health
        .iter()
        .find(|p| p.name == "valuestream.health.settle.due_scopes")
        .expect("the settle backlog gauge");
    assert!(!due.resource.contains_key("service.instance.id"));

    assert_issue_and_pr_trace(&issue, &change);
    // The same router answers GET /correlations from the DynamoDB metric state: issue #1 and
    // change #2 were counted.
    for (kind, total) in [("issue", 1), ("change", 1), ("deployment", 0)] {
        let (s, text) = lambda
            .get(&format!("/correlations?kind={kind}&by=duration"))
            .await;
        assert_eq!(s, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["total"], total, "{kind}: {text}");
    }
    let (s, text) = lambda.get("/correlations?kind=issue&by=failure").await;
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("issues have no failed result"), "{text}");
    assert!(
        receiver
            .points()
            .iter()
            .any(|p| p.name == "valuestream.change.duration"),
        "metric points exported too"
    );

    let items = table_items(&moto, &table).await;
    // Both spans are settled: their summaries say generation 0 was exported.
    let scope = valuestream::engine::keys::Scope::Repo("codertocat/hello-world".into());
    for item in [
        "github/issue/codertocat/hello-world/1",
        "github/change/codertocat/hello-world/2",
    ] {
        let k = valuestream::engine::keys::summary(&scope, item);
        let key = format!("{}|{}", k.pk, k.sk);
        assert!(
            key.starts_with("scope#repo#codertocat/hello-world#"),
            "{key}: in a shard"
        );
        assert_eq!(data(&items[&key])["exported"], json!([0]), "{key}");
    }
    // Every delivery is remembered by the facts it brought.
    let tags: Vec<Value> = items
        .iter()
        .filter(|(k, _)| k.starts_with("item#"))
        .flat_map(|(_, item)| data(item)["facts"].as_array().cloned().unwrap_or_default())
        .flat_map(|f| f["deliveries"].as_array().cloned().unwrap_or_default())
        .collect();
    for d in ["lambda-1", "lambda-2", "lambda-3", "lambda-4"] {
        assert!(
            tags.contains(&json!(delivery_tag("github", d))),
            "{d}: {tags:?}"
        );
    }
    assert!(
        !items.keys().any(|k| k.starts_with("outbox")),
        "everything exported, nothing left in the outbox: {:?}",
        items.keys()
    );

    // A bad signature: 401, and nothing changes.
    let before = table_items(&moto, &table).await;
    let body = fixture("github/issues/reopened.payload.json");
    let (s, b) = lambda
        .post(
            "/webhooks/github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "issues"),
                ("x-github-delivery", "lambda-bad"),
                ("x-hub-signature-256", &format!("sha256={}", "0".repeat(64))),
            ],
            body,
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["reason"].as_str().unwrap().contains("does not match"),
        "{b}"
    );
    assert_eq!(
        table_items(&moto, &table).await,
        before,
        "a refused delivery changes nothing"
    );

    // A redelivery: duplicate, nothing exported twice.
    let (s, b) = lambda.github("pull_request", "lambda-3", merged_pr()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");
    assert_eq!(receiver.spans().len(), 2, "no second copy");

    // An event the service does not use: 202 ignored.
    let (s, b) = lambda
        .github("star", "lambda-star", br#"{"action":"created"}"#.to_vec())
        .await;
    assert_eq!((s, b["status"].as_str()), (202, Some("ignored")), "{b}");
    assert_eq!(table_items(&moto, &table).await, before);

    // An event file from events/ through the Invoke API (cargo lambda invoke --data-file).
    let event = std::fs::read(repo().join("events/github/ping.json")).unwrap();
    let answer = lambda.invoke(&event).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "processed", "{body}");
    assert_eq!(receiver.spans().len(), 2);

    // No process outlives the test: the function, then the emulator, each with its group.
    let mut lambda = lambda;
    assert!(!lambda.watcher.processes().is_empty());
    for bg in [&mut lambda.function, &mut lambda.watcher] {
        bg.stop();
        assert_eq!(bg.processes(), Vec::<u32>::new(), "left running");
    }
}

/// Waits (at most `within`) until the receiver holds a span named `prefix*`.
async fn wait_for_span(receiver: &Receiver, prefix: &str, within: Duration) -> RSpan {
    let deadline = Instant::now() + within;
    loop {
        if receiver.spans().iter().any(|s| s.name.starts_with(prefix)) {
            return receiver.span(prefix);
        }
        assert!(
            Instant::now() < deadline,
            "no span {prefix}* after {within:?}; received {:?}",
            receiver.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `Drain` schedule of template.yaml, for real: the function takes the EventBridge
/// scheduled event (events/scheduled/drain.json) through the Invoke API, drains what is due and
/// answers a summary; an event of another shape is a function error, not a crash. Nothing here
/// relies on spans being exported before a webhook's answer: the collector is down while the
/// deliveries arrive, so whatever the engine does on the request path, the spans reach the
/// receiver only through the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_drain_through_the_lambda_runtime() {
    let moto = Moto::start().await;
    let table = moto.store().await.table().to_string();
    let receiver = Receiver::start().await;
    let lambda = Lambda::start(
        &moto.url,
        &table,
        &receiver.url,
        // Finished spans are due at once; a drain still has to export them. After a failed
        // export the collector is left alone for a second.
        &[
            ("VALUESTREAM_SETTLE_SECS", "0"),
            ("VALUESTREAM_RETRY_SECS", "1"),
        ],
    )
    .await;

    // Nothing pending: the drain answers, exports nothing, fails nothing, leaves nothing due.
    let answer = lambda.drain().await;
    assert_eq!(
        (
            &answer["exported"],
            &answer["failed"],
            &answer["remaining"],
            &answer["unsettled"],
            &answer["unexported"]
        ),
        (
            &json!(0),
            &json!(0),
            &json!(false),
            &json!(false),
            &json!(false)
        ),
        "{answer}"
    );

    // The collector is down while a change opens and merges: accepted all the same.
    receiver.set_down(true);
    for (delivery, body) in [("drain-1", opened_pr()), ("drain-2", merged_pr())] {
        let (s, b) = lambda.github("pull_request", delivery, body).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("processed")), "{b}");
    }
    // A drain while it is still down: the export fails, the batch stays for the next one.
    let answer = lambda.drain().await;
    assert!(answer["failed"].as_u64().unwrap() >= 1, "{answer}");
    assert_eq!(answer["remaining"], true, "{answer}");
    assert!(receiver.spans().is_empty());

    // Back up: the next scheduled drain (a minute later on AWS; past the retry pause here)
    // exports the change's span and its metric points.
    receiver.set_down(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = lambda.drain().await;
    assert!(answer["exported"].as_u64().unwrap() >= 1, "{answer}");
    assert_eq!(
        (&answer["failed"], &answer["remaining"]),
        (&json!(0), &json!(false)),
        "{answer}"
    );
    let change = wait_for_span(&receiver, "PR #2", Duration::from_secs(10)).await;
    assert_eq!(change.service, "github");
    assert!(
        receiver
            .points()
            .iter()
            .any(|p| p.name == "valuestream.change.duration"),
        "the change's metric points were drained too"
    );
    // Exactly once: a second drain finds nothing, the receiver holds one copy.
    let answer = lambda.drain().await;
    assert_eq!(
        (&answer["exported"], &answer["failed"], &answer["remaining"]),
        (&json!(0), &json!(0), &json!(false)),
        "{answer}"
    );
    assert_eq!(receiver.spans().len(), 1, "{:?}", receiver.spans());
    let items = table_items(&moto, &table).await;
    assert!(
        !items.keys().any(|k| k.starts_with("outbox")),
        "nothing left in the outbox: {:?}",
        items.keys()
    );

    // Events of other shapes: a function error that says what the function takes.
    for (event, why) in [
        (json!({"hello": "world"}), "its keys: [\"hello\"]"),
        (
            json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
                   "detail": {"state": "running"}}),
            "detail-type \"EC2 Instance State-change Notification\"",
        ),
        (json!([1, 2, 3]), "a JSON array"),
    ] {
        let (status, function_error, answer) = lambda
            .invoke_raw(&serde_json::to_vec(&event).unwrap())
            .await;
        assert!(
            function_error.is_some() || status >= 400,
            "{event} is answered as an error: {status} {answer}"
        );
        assert_eq!(answer["errorType"], "UnknownEvent", "{event}: {answer}");
        let message = answer["errorMessage"].as_str().unwrap_or_default();
        assert!(
            message.contains(why) && message.contains("Scheduled Event"),
            "{event}: {message}"
        );
    }
    // Not a crash: the same sandbox serves the next request and the next drain.
    let mut lambda = lambda;
    assert!(!lambda.function.exited(), "{}", lambda.logs());
    let (s, b) = lambda.get("/healthz").await;
    assert_eq!(s, 200, "{b}");
    lambda.drain().await;

    // A drain that cannot read the store (the table is gone) is a function error too.
    moto.client()
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let event = std::fs::read(repo().join("events/scheduled/drain.json")).unwrap();
    let (status, function_error, answer) = lambda.invoke_raw(&event).await;
    assert!(
        function_error.is_some() || status >= 400,
        "a failed drain is an error: {status} {answer}"
    );
    assert_eq!(answer["errorType"], "DrainFailed", "{answer}");
    assert!(!lambda.function.exited(), "{}", lambda.logs());
    assert!(
        lambda.function.log().contains("scheduled drain failed"),
        "the failure is logged\n{}",
        lambda.logs()
    );

    for bg in [&mut lambda.function, &mut lambda.watcher] {
        bg.stop();
        assert_eq!(bg.processes(), Vec::<u32>::new(), "left running");
    }
}

/// A GitHub ping signed with `secret`, through the function URL: the answer's status.
async fn signed_ping(lambda: &Lambda, secret: &str, delivery: &str) -> (u16, Value) {
    let body = br#"{"zen":"Design for failure.","hook_id":7}"#.to_vec();
    let sig = format!("sha256={}", hmac_sha256_hex(secret, &body));
    lambda
        .post(
            "/webhooks/github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "ping"),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
            ],
            body,
        )
        .await
}

/// The webhook secrets as template.yaml deploys them: none in the function's environment, only
/// `VALUESTREAM_SECRET_ARN` (here a secret on moto's Secrets Manager). The cold start reads it;
/// a rotation is in force once `VALUESTREAM_SECRET_TTL_SECS` has passed, in the same process
/// (no restart, no redeploy), and the previous value still verifies while a wrong one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_from_secrets_manager_rotate_without_a_restart() {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let moto = Moto::start().await;
    let table = moto.store().await.table().to_string();
    let receiver = Receiver::start().await;
    let sm = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(&moto.url)
            .build(),
    );
    let arn = sm
        .create_secret()
        .name("valuestream/lambda-test")
        .secret_string(r#"{"github":"lambda-one"}"#)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let lambda = Lambda::start(
        &moto.url,
        &table,
        &receiver.url,
        &[
            // Blank counts as unset: no webhook secret in the environment.
            ("VALUESTREAM_GITHUB_SECRET", ""),
            ("VALUESTREAM_SECRET_ARN", &arn),
            ("VALUESTREAM_SECRET_TTL_SECS", "1"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.url),
        ],
    )
    .await;
    let pid = lambda.function.pid();

    let (s, b) = signed_ping(&lambda, "lambda-one", "sm-1").await;
    assert_eq!(
        s,
        200,
        "the secret read at cold start: {b}\n{}",
        lambda.logs()
    );
    let (s, b) = signed_ping(&lambda, SECRET, "sm-2").await;
    assert_eq!(s, 401, "the environment's usual value is not in force: {b}");

    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"github":"lambda-two"}"#)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (s, b) = signed_ping(&lambda, "lambda-two", "sm-3").await;
    assert_eq!(
        s,
        200,
        "the rotated value after the TTL: {b}\n{}",
        lambda.logs()
    );
    let (s, b) = signed_ping(&lambda, "lambda-one", "sm-4").await;
    assert_eq!(s, 200, "the previous value (AWSPREVIOUS): {b}");
    let (s, b) = signed_ping(&lambda, "lambda-wrong", "sm-5").await;
    assert_eq!(s, 401, "a wrong value: {b}");

    // One process served it all, and it never printed a value.
    assert_eq!(lambda.function.pid(), pid);
    let log = lambda.function.log();
    assert!(
        log.contains("webhook secrets read from Secrets Manager"),
        "{log}"
    );
    assert!(log.contains("webhook secrets re-read"), "{log}");
    assert!(
        !log.contains("lambda-one") && !log.contains("lambda-two"),
        "{log}"
    );
}
