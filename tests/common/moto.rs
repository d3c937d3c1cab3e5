//! A real DynamoDB-compatible server for tests: `moto_server` from the project's `.venv`
//! (scripts/install-test-deps installs it), one process per test on a free loopback port,
//! serving one request at a time (see [`SERIAL_MOTO`]), killed when the [`Moto`] value is
//! dropped. Also [`Background`], the child-process guard the Lambda test uses for
//! `cargo lambda watch` and the function.

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::Client;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use valuestream::store::dynamodb::{create_table_with, DynamoStore};

/// Dummy credentials and region: moto accepts any.
pub const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from `.venv/bin`, or a failure that says how to install it. Never a skip.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (it creates .venv with moto_server, \
         cfn-lint and cargo-lambda)",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static LOG_SEQ: AtomicU32 = AtomicU32::new(0);

/// A child process in its own process group, with its output in a log file. Dropping it (or
/// this test process dying: the group's watchdog sees its stdin close) ends the whole group, so
/// no orphan survives the test.
pub struct Background {
    name: String,
    child: Child,
    watchdog: Option<ChildStdin>,
    log: PathBuf,
}

impl Background {
    /// Starts `program args…` with extra `env`, in `dir`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Background {
        Self::start(name, program, args, env, dir, false)
    }

    /// Like [`Background::spawn`], with only `env` (and `PATH`) in the environment: nothing of
    /// the developer's shell (OTEL_*, VALUESTREAM_*, AWS profiles) leaks into the process.
    pub fn spawn_clean(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Background {
        Self::start(name, program, args, env, dir, true)
    }

    fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
        clean: bool,
    ) -> Background {
        use std::os::unix::process::CommandExt;
        let log = std::env::temp_dir().join(format!(
            "valuestream-test-{}-{}-{}.log",
            name,
            std::process::id(),
            LOG_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let out = std::fs::File::create(&log).unwrap();
        // The shell runs the program in the background and waits for its own stdin to close
        // (drop, or this process's death), then signals the whole process group.
        let script = r#""$@" </dev/null & cat >/dev/null; kill -TERM 0"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        if clean {
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let watchdog = child.stdin.take();
        Background {
            name: name.to_string(),
            child,
            watchdog,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process (group leader) has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- last lines of {} ({})\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The processes still running in this process group, and their descendants elsewhere
    /// (a tool may start children in process groups of their own).
    pub fn processes(&self) -> Vec<u32> {
        let mut procs: Vec<(u32, u32, u32)> = Vec::new(); // (pid, ppid, pgrp)
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold anything, so split after ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.first() == Some(&"Z") {
                continue;
            }
            if let (Some(ppid), Some(pgrp)) = (
                f.get(1).and_then(|v| v.parse().ok()),
                f.get(2).and_then(|v| v.parse().ok()),
            ) {
                procs.push((pid, ppid, pgrp));
            }
        }
        let leader = self.child.id();
        let mut found: Vec<u32> = procs
            .iter()
            .filter(|p| p.2 == leader)
            .map(|p| p.0)
            .collect();
        loop {
            let more: Vec<u32> = procs
                .iter()
                .filter(|p| found.contains(&p.1) && !found.contains(&p.0))
                .map(|p| p.0)
                .collect();
            if more.is_empty() {
                return found;
            }
            found.extend(more);
        }
    }

    /// Ends the whole process group (and descendants that left it) and waits for the leader.
    pub fn stop(&mut self) {
        let strays = self.processes();
        self.watchdog.take();
        self.signal_group("-TERM");
        for pid in &strays {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left (the leader may be gone before its children).
        self.signal_group("-KILL");
        for pid in strays {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed process is gone only once the kernel has run its exit, which a busy machine
        // may delay: wait (at most 5 s) until none is left, so that a check right after sees
        // what stayed, not what is still dying.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `moto_server`'s own entry point (same arguments, same app), serving one request at a time.
///
/// moto's threaded server does not isolate TransactWriteItems: a transaction that fails restores
/// a copy of the whole table taken when it began, wiping whatever a concurrent request wrote
/// meanwhile (a lost committed write, so a concurrent redelivery could be applied twice). Real
/// DynamoDB serializes transactions; serving requests one at a time gives moto that property
/// while clients still interleave their reads, conditional writes and retries.
const SERIAL_MOTO: &str = r#"
import sys
import moto.server as server
run_simple = server.run_simple
def serial(*args, **kwargs):
    kwargs["threaded"] = False
    return run_simple(*args, **kwargs)
server.run_simple = serial
sys.argv[0] = "moto_server"
sys.exit(server.main(sys.argv[1:]))
"#;

/// A `moto_server` on a free loopback port.
pub struct Moto {
    pub url: String,
    pub process: Background,
}

static TABLE_SEQ: AtomicU32 = AtomicU32::new(0);

impl Moto {
    /// Starts moto_server and waits until it answers DynamoDB requests.
    pub async fn start() -> Moto {
        Self::start_with(true).await
    }

    /// Starts moto_server as it ships: threaded, handling requests concurrently (its
    /// `TransactWriteItems` is then not atomic; tests/serve_order.rs shows it). Only for tests
    /// that put a serialising proxy (tests/common/proxy.rs) in front, or probe that very race.
    pub async fn start_threaded() -> Moto {
        Self::start_with(false).await
    }

    async fn start_with(serial: bool) -> Moto {
        let moto_server = venv_tool("moto_server");
        let python = venv_tool("python3");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let port_s = port.to_string();
            let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
            env.push(("PYTHONDONTWRITEBYTECODE", "1"));
            let process = if serial {
                Background::spawn(
                    "moto_server",
                    &python,
                    &["-c", SERIAL_MOTO, "-H", "127.0.0.1", "-p", &port_s],
                    &env,
                    &repo(),
                )
            } else {
                Background::spawn(
                    "moto_server",
                    &moto_server,
                    &["-H", "127.0.0.1", "-p", &port_s],
                    &env,
                    &repo(),
                )
            };
            let mut m = Moto {
                url: format!("http://127.0.0.1:{port}"),
                process,
            };
            match m.wait_ready(Duration::from_secs(90)).await {
                Ok(()) => return m,
                Err(e) => last = format!("{e}\n{}", m.process.log_tail(30)),
            }
        }
        panic!("moto_server did not start: {last}");
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let client = self.client();
        let deadline = Instant::now() + within;
        loop {
            match client.list_tables().send().await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if self.process.exited() {
                        return Err(format!("moto_server exited: {e:?}"));
                    }
                    if Instant::now() > deadline {
                        return Err(format!("moto_server not answering after {within:?}: {e:?}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A DynamoDB client pointed at this server (explicit endpoint, region and dummy
    /// credentials: the process environment is left alone).
    pub fn client(&self) -> Client {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(&self.url)
            .build();
        Client::from_conf(conf)
    }

    /// A fresh table (created with the production `create_table` code) and a store on it.
    pub async fn store(&self) -> DynamoStore {
        let table = format!(
            "valuestream-test-{}",
            TABLE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let client = self.client();
        create_table_with(&client, &table)
            .await
            .unwrap_or_else(|e| panic!("creating table {table} on moto: {e}"));
        DynamoStore::with_client(client, table)
    }
}
