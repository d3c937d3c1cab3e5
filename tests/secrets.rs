//! Webhook secrets from AWS Secrets Manager (src/secrets.rs), against moto's Secrets Manager (a
//! real server speaking the Secrets Manager API, started per test from the project's .venv):
//! the read at start, a rotation put in force after the TTL without a restart, a delivery signed
//! with the previous value still accepted, a wrong one refused, and an unreachable or silent
//! Secrets Manager answered by a bounded, clear error (in process, and by `valuestream serve`,
//! which then refuses to start); and `valuestream serve` reading the secret and following a
//! rotation through its background re-read. The Lambda runtime's side is in tests/lambda.rs
//! (`webhook_secrets_from_secrets_manager_rotate_without_a_restart`).

mod common;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::Client;
use axum::http::StatusCode;
use common::moto::{free_port, repo, Moto, AWS_ENV};
use common::*;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::config::Config;
use valuestream::secrets::{SecretsError, SecretsManager, WebhookSecrets};
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;

const TTL: Duration = Duration::from_secs(2);

/// A Secrets Manager client for `url`, with the service's own bounded timeouts.
fn client(url: &str, timeout: Duration) -> Client {
    let builder = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(url);
    Client::from_conf(valuestream::secrets::bounded(builder, timeout).build())
}

/// Creates the secret on moto; returns its ARN.
async fn create_secret(client: &Client, name: &str, json: &str) -> String {
    client
        .create_secret()
        .name(name)
        .secret_string(json)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_secret on moto: {e:?}"))
        .arn()
        .unwrap()
        .to_string()
}

/// A rotation as Secrets Manager does it: the new value becomes AWSCURRENT, the old AWSPREVIOUS.
async fn rotate(client: &Client, arn: &str, json: &str) {
    client
        .put_secret_value()
        .secret_id(arn)
        .secret_string(json)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put_secret_value on moto: {e:?}"));
}

/// A GitHub ping signed with `secret`: the answer's status.
async fn ping(app: &App, secret: &str) -> (StatusCode, String) {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let sig = format!("sha256={}", hmac_sha256_hex(secret, &body));
    let (status, v) = app
        .post(
            "github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "ping"),
                (
                    "x-github-delivery",
                    &format!("ping-{secret}-{}", fastrand::u64(..)),
                ),
                ("x-hub-signature-256", &sig),
            ],
            body,
        )
        .await;
    (status, v.to_string())
}

async fn assert_accepts(app: &App, secret: &str, when: &str) {
    let (status, body) = ping(app, secret).await;
    assert!(
        status.is_success(),
        "{when}: {secret} refused: {status} {body}"
    );
}

async fn assert_refuses(app: &App, secret: &str, when: &str) -> String {
    let (status, body) = ping(app, secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{when}: {secret}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_accepted_after_the_ttl_without_a_restart() {
    let moto = Moto::start().await;
    let sm = client(&moto.url, Duration::from_secs(3));
    let arn = create_secret(
        &sm,
        "valuestream/webhooks",
        r#"{"github":"gh-one","gitlab":"","events":"ev-one"}"#,
    )
    .await;

    // No secret in the environment: everything comes from the secret.
    let config = Config::from_pairs(&[]).unwrap();
    let secrets = WebhookSecrets::new(
        Box::new(SecretsManager::with_client(
            sm.clone(),
            &arn,
            Duration::from_secs(3),
        )),
        TTL,
        &config,
    );
    let loaded = secrets.load().await.expect("cold-start read");
    assert_eq!(loaded.sources, ["github", "events"]);
    assert!(loaded.with_previous.is_empty(), "{loaded:?}");
    let app = app_with(Arc::new(EmbeddedStore::in_memory().unwrap()), config).await;

    // Cold start: the secret's value verifies, others do not; an empty key refuses its source.
    assert_accepts(&app, "gh-one", "after the cold-start read").await;
    assert_refuses(&app, "wrong", "after the cold-start read").await;
    let (status, body) = app
        .post(
            "gitlab",
            &[("x-gitlab-token", ""), ("x-gitlab-event", "Push Hook")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Rotation: within the TTL the values in hand stay in force (nothing is read)...
    rotate(&sm, &arn, r#"{"github":"gh-two","events":"ev-one"}"#).await;
    secrets.refresh_if_due().await;
    assert_refuses(&app, "gh-two", "within the TTL").await;
    assert_accepts(&app, "gh-one", "within the TTL").await;

    // ... and once it has passed, the next request reads again: both the new value and the
    // previous one verify, a wrong one still does not.
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    secrets.refresh_if_due().await;
    assert_accepts(&app, "gh-two", "after the TTL").await;
    assert_accepts(&app, "gh-one", "after the TTL (AWSPREVIOUS)").await;
    assert_refuses(&app, "wrong", "after the TTL").await;
    assert_refuses(&app, "gh-zero", "after the TTL").await;

    // A second rotation retires the first value: only AWSCURRENT and AWSPREVIOUS count.
    rotate(&sm, &arn, r#"{"github":"gh-three","events":"ev-one"}"#).await;
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    secrets.refresh_if_due().await;
    assert_accepts(&app, "gh-three", "after the second rotation").await;
    assert_accepts(&app, "gh-two", "after the second rotation (AWSPREVIOUS)").await;
    assert_refuses(&app, "gh-one", "after the second rotation").await;

    // A source taken out of the current version is off, even though AWSPREVIOUS still has it.
    rotate(&sm, &arn, r#"{"events":"ev-one"}"#).await;
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    secrets.refresh_if_due().await;
    let body = assert_refuses(&app, "gh-three", "after removing github").await;
    assert!(body.contains("is not set"), "{body}");

    // Secrets Manager gone: the re-read fails fast, the values in hand stay in force.
    rotate(&sm, &arn, r#"{"github":"gh-four"}"#).await;
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    secrets.refresh_if_due().await;
    assert_accepts(&app, "gh-four", "before Secrets Manager went away").await;
    drop(moto);
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    let started = Instant::now();
    secrets.refresh_if_due().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_accepts(&app, "gh-four", "with Secrets Manager unreachable").await;
}

/// A loopback listener that accepts connections and never answers; closed when dropped.
struct Silent {
    url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((conn, _)) = listener.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Silent { url, stop }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

const ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:valuestream/webhooks-AbCdEf";

#[tokio::test]
async fn an_unreachable_secrets_manager_is_a_bounded_clear_error() {
    let config = Config::from_pairs(&[]).unwrap();
    let timeout = Duration::from_millis(500);

    // Accepts, never answers: the read gives up after the timeout.
    let silent = Silent::start();
    let secrets = WebhookSecrets::new(
        Box::new(SecretsManager::with_client(
            client(&silent.url, timeout),
            ARN,
            timeout,
        )),
        TTL,
        &config,
    );
    let started = Instant::now();
    let err = secrets.load().await.expect_err("a silent endpoint");
    let took = started.elapsed();
    assert!(matches!(err, SecretsError::Timeout { .. }), "{err:?}");
    assert!(
        took >= timeout && took < Duration::from_secs(3),
        "bounded by the timeout: {took:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("Secrets Manager did not answer")
            && text.contains(ARN)
            && text.contains("500 ms"),
        "{text}"
    );
    assert!(
        config.secret("github").get().is_none(),
        "nothing put in force"
    );

    // Nothing listening: a connection error, at once, that says what was read.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let secrets = WebhookSecrets::new(
        Box::new(SecretsManager::with_client(
            client(&closed, timeout),
            ARN,
            timeout,
        )),
        TTL,
        &config,
    );
    let started = Instant::now();
    let err = secrets.load().await.expect_err("a closed port");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("Secrets Manager") && text.contains(ARN) && text.contains("AWSCURRENT"),
        "{text}"
    );
}

/// Runs `valuestream serve` with only `env` (and PATH); its exit status and stderr, within 20 s.
fn serve(env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valuestream"));
    cmd.args(["serve", "--addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data.path())
        .current_dir(repo())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in AWS_ENV.iter().chain(env) {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("valuestream serve still running after 20 s with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_to_start_without_its_secret() {
    // Secrets Manager silent: serve stops within the timeout, saying why.
    let silent = Silent::start();
    let (code, err, took) = serve(&[
        ("VALUESTREAM_SECRET_ARN", ARN),
        ("VALUESTREAM_SECRET_TIMEOUT_MS", "500"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &silent.url),
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}: {err}");
    assert!(
        err.contains("Secrets Manager did not answer reading") && err.contains("within 500 ms"),
        "{err}"
    );

    // One place per secret: the ARN and a per-source variable together are a setting error.
    let (code, err, _) = serve(&[
        ("VALUESTREAM_SECRET_ARN", ARN),
        ("VALUESTREAM_GITHUB_SECRET", "also-here"),
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("invalid setting VALUESTREAM_GITHUB_SECRET: must be unset when VALUESTREAM_SECRET_ARN is set"),
        "{err}"
    );
    assert!(
        !err.contains("also-here"),
        "the value is never printed: {err}"
    );

    // A bad TTL names its variable.
    let (code, err, _) = serve(&[
        ("VALUESTREAM_SECRET_ARN", ARN),
        ("VALUESTREAM_SECRET_TTL_SECS", "0"),
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("invalid setting VALUESTREAM_SECRET_TTL_SECS"),
        "{err}"
    );
}

/// `valuestream serve` with `VALUESTREAM_SECRET_ARN`: the secret read at start, a rotation in
/// force after the TTL through the background re-read, with the previous value still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_the_secret_and_follows_a_rotation() {
    use common::moto::Background;
    let moto = Moto::start().await;
    let sm = client(&moto.url, Duration::from_secs(3));
    let arn = create_secret(&sm, "valuestream/serve", r#"{"github":"serve-one"}"#).await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
    env.extend([
        ("VALUESTREAM_SECRET_ARN", arn.as_str()),
        ("VALUESTREAM_SECRET_TTL_SECS", "1"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url.as_str()),
        ("RUST_LOG", "info"),
    ]);
    let mut serve = Background::spawn_clean(
        "valuestream-serve",
        std::path::Path::new(env!("CARGO_BIN_EXE_valuestream")),
        &[
            "serve",
            "--addr",
            &addr,
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &env,
        &repo(),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(!serve.exited(), "serve exited\n{}", serve.log_tail(30));
        assert!(
            Instant::now() < deadline,
            "serve not up\n{}",
            serve.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ping = |secret: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let body =
                br#"{"zen":"Half measures are as bad as nothing at all.","hook_id":3}"#.to_vec();
            let sig = format!("sha256={}", hmac_sha256_hex(secret, &body));
            http.post(format!("{base}/webhooks/github"))
                .header("content-type", "application/json")
                .header("x-github-event", "ping")
                .header(
                    "x-github-delivery",
                    format!("serve-{secret}-{}", fastrand::u64(..)),
                )
                .header("x-hub-signature-256", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(ping("serve-one").await, 200, "{}", serve.log_tail(20));
    assert_eq!(ping("serve-two").await, 401);
    rotate(&sm, &arn, r#"{"github":"serve-two"}"#).await;
    // The background re-read runs once the TTL (1 s) has passed; allow it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping("serve-two").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the rotation is not in force after 10 s\n{}",
            serve.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ping("serve-one").await, 200, "the previous value");
    assert_eq!(ping("serve-wrong").await, 401);
    assert!(!serve.exited());
}
