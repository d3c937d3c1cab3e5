//! Settings are checked once at start: the real binary, `serve` and the Lambda entry, refuses a
//! bad value with a non-zero exit (never a panic) and a message naming the variable, within a
//! bounded time; good settings start serving.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_valuestream");
const WITHIN: Duration = Duration::from_secs(20);

/// Starts the binary with only `env` (and `PATH`) in its environment.
fn start(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start valuestream")
}

/// Waits (bounded) for the process to exit: its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "valuestream still running after {WITHIN:?}: a bad setting must stop it at start"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

fn assert_refused(args: &[&str], env: &[(&str, &str)], var: &str) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, stderr) = finish(start(args, env, dir.path()));
    assert_eq!(
        code,
        Some(1),
        "{env:?}: exit 1 (an error, not a panic's 101); stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(var),
        "{env:?}: stderr names {var}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{env:?}: no panic:\n{stderr}");
    assert!(
        !dir.path().join(".valuestream").exists(),
        "{env:?}: nothing was opened before the settings were checked"
    );
    println!("{var}: refused in {:?}", started.elapsed());
}

#[test]
fn serve_refuses_bad_settings_at_start() {
    let serve = ["serve", "--addr", "127.0.0.1:0"];
    for (var, value) in [
        ("VALUESTREAM_TTL_OPEN_DAYS", "0"),
        ("VALUESTREAM_TTL_OPEN_DAYS", "106751991167300"),
        ("VALUESTREAM_MAX_BODY_BYTES", "-1"),
        ("VALUESTREAM_ALLOW_UNSIGNED", "maybe"),
        ("VALUESTREAM_TEAMS", "owner/repo"),
        ("VALUESTREAM_RETRY_SECS", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
    ] {
        assert_refused(&serve, &[(var, value)], var);
    }
    // The standard exporter settings: an unsupported value refuses start, never a fallback.
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpcs"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "br"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x=%0a"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
    ] {
        assert_refused(&serve, &[endpoint, (var, value)], var);
    }
    assert_refused(
        &serve,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317/v1"),
        ],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    );
    // It used to panic at start (byte-indexing UTF-8 in hand-written percent decoding).
    assert_refused(
        &serve,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x=%aé"),
        ],
        "OTEL_EXPORTER_OTLP_HEADERS",
    );
}

#[test]
fn lambda_refuses_bad_settings_at_start() {
    // The runtime API address is never reached: the settings are checked first.
    for (var, value) in [
        ("VALUESTREAM_MAX_BODY_BYTES", "-1"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x=%0a"),
        ("VALUESTREAM_DYNAMODB_TIMEOUT_MS", "0"),
    ] {
        assert_refused(
            &[],
            &[
                ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
                ("VALUESTREAM_TABLE", "valuestream"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                (var, value),
            ],
            var,
        );
    }
}

/// The contrast: the same command with good settings starts and serves.
#[test]
fn serve_starts_with_good_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", "state"],
        &[
            ("VALUESTREAM_TTL_OPEN_DAYS", "30"),
            ("VALUESTREAM_ALLOW_UNSIGNED", "yes"),
            ("VALUESTREAM_SETTLE_SECS", "0"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b"),
        ],
        dir.path(),
    );
    // Read stderr until the serving line (bounded by the deadline check below).
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("valuestream serving") {
                let _ = tx.send(seen.clone());
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(WITHIN);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.expect("serve logged nothing within the time limit");
    assert!(seen.contains("valuestream serving"), "{seen}");
    assert!(running, "serve exited:\n{seen}");
    assert!(dir.path().join("state").exists(), "the store was opened");
}
