//! valuestream's own health as metrics: what one process counted (deliveries by source and
//! answer, export failures per signal, drain durations, store request latency and errors) and
//! what the store holds at scrape time (the settle backlog and the outbox, each a bounded
//! query). `GET /metrics` renders them after the DORA series
//! ([`crate::export::prometheus::render_health`]); docs/metrics.md lists them under
//! "valuestream's own health".
//!
//! Every label value comes from a fixed set (registered source names, answers, signals, store
//! operations): no delivery ID, item key or repository name.

use crate::export::prometheus::{HealthFamily, HealthKind, HealthSample, HealthValue};
use crate::export::HealthSnapshot;
use crate::store::{Key, KeyRange, Limits, Order, Record, Store, StoreError, StoreResult, Write};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The answers a delivery is counted under.
pub const ANSWERS: &[&str] = &[
    "processed",
    "duplicate",
    "ignored",
    "refused_401",
    "refused_4xx",
    "error_5xx",
];
/// The signals an export sends.
pub const SIGNALS: &[&str] = &["traces", "metrics"];
/// The store operations measured.
pub const OPERATIONS: &[&str] = &["get_many", "query", "commit"];
/// Drain duration bounds, in seconds.
pub const DRAIN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Store request duration bounds, in seconds.
pub const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// The most records a scrape reads to count the settle backlog or the outbox: the gauges stop
/// there (a backlog this large is an alarm already).
pub const SCRAPE_CAP: usize = 1000;

/// A histogram of durations in seconds.
#[derive(Clone, Debug)]
pub struct Hist {
    bounds: &'static [f64],
    /// One per bound plus the overflow bucket (not cumulative).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    pub fn new(bounds: &'static [f64]) -> Self {
        Hist {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, secs: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn value(&self) -> HealthValue {
        HealthValue::Histogram {
            bounds: self.bounds,
            counts: self.counts.clone(),
            sum: self.sum,
            count: self.count,
        }
    }
}

/// One process's health counters. A pipeline owns one ([`crate::pipeline::Pipeline::health`]);
/// a process has one pipeline, so it is process-wide.
pub struct Health {
    /// (source, answer) → deliveries.
    deliveries: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Per [`SIGNALS`].
    export_failures: [AtomicU64; 2],
    drain: Mutex<Hist>,
    /// Per [`OPERATIONS`].
    store_latency: Mutex<Vec<Hist>>,
    store_errors: [AtomicU64; 3],
    store_conflicts: [AtomicU64; 3],
    /// This process's `service.instance.id` over OTLP: 128 random bits in hex, new each start.
    instance: String,
    /// When this process started counting (nanoseconds since the epoch): the start time of its
    /// cumulative points over OTLP.
    start_ns: u64,
}

/// 128 bits no other process has, in hex: std's per-process random hash keys over the process
/// ID and the clock (no random-number crate needed for an identity).
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(now_ns());
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Default for Health {
    fn default() -> Self {
        Health {
            instance: instance_id(),
            start_ns: now_ns(),
            deliveries: Mutex::default(),
            export_failures: Default::default(),
            drain: Mutex::new(Hist::new(DRAIN_BUCKETS)),
            store_latency: Mutex::new(
                OPERATIONS
                    .iter()
                    .map(|_| Hist::new(STORE_BUCKETS))
                    .collect(),
            ),
            store_errors: Default::default(),
            store_conflicts: Default::default(),
        }
    }
}

/// The answer label of a delivery answered `status` (an HTTP status code) with `answer`
/// (`processed`, `duplicate`, `ignored` for a success).
pub fn answer_label(status: u16, answer: &str) -> &'static str {
    match status {
        200..=299 => match answer {
            "duplicate" => "duplicate",
            "ignored" => "ignored",
            _ => "processed",
        },
        401 => "refused_401",
        400..=499 => "refused_4xx",
        _ => "error_5xx",
    }
}

impl Health {
    pub fn new() -> Self {
        Health::default()
    }

    /// Makes every answer of `source` a series from the start (at 0), so that a rate sees the
    /// first delivery of each.
    pub fn register_source(&self, source: &'static str) {
        let mut d = self.deliveries.lock().unwrap();
        for answer in ANSWERS {
            d.entry((source, answer)).or_insert(0);
        }
    }

    /// Counts one delivery of `source` answered with `answer` (one of [`ANSWERS`]).
    pub fn delivery(&self, source: &'static str, answer: &'static str) {
        *self
            .deliveries
            .lock()
            .unwrap()
            .entry((source, answer))
            .or_insert(0) += 1;
    }

    /// Deliveries of `source` answered `answer` so far.
    pub fn deliveries(&self, source: &str, answer: &str) -> u64 {
        let d = self.deliveries.lock().unwrap();
        d.iter()
            .find(|((s, a), _)| *s == source && *a == answer)
            .map_or(0, |(_, n)| *n)
    }

    /// Counts a failed export of `signal` (`traces` or `metrics`).
    pub fn export_failed(&self, signal: &str) {
        if let Some(i) = SIGNALS.iter().position(|s| *s == signal) {
            self.export_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn export_failures(&self, signal: &str) -> u64 {
        SIGNALS
            .iter()
            .position(|s| *s == signal)
            .map_or(0, |i| self.export_failures[i].load(Ordering::Relaxed))
    }

    /// Records one drain's wall time.
    pub fn drained(&self, took: Duration) {
        self.drain.lock().unwrap().observe(took.as_secs_f64());
    }

    pub fn drains(&self) -> u64 {
        self.drain.lock().unwrap().count()
    }

    /// Records one store request of operation `op` (an index into [`OPERATIONS`]).
    fn store_request<T>(&self, op: usize, took: Duration, result: &StoreResult<T>) {
        self.store_latency.lock().unwrap()[op].observe(took.as_secs_f64());
        match result {
            Ok(_) => {}
            Err(StoreError::Conflict) => {
                self.store_conflicts[op].fetch_add(1, Ordering::Relaxed);
            }
            Err(StoreError::Backend(_)) => {
                self.store_errors[op].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (requests, errors, conflicts) of store operation `op` so far.
    pub fn store_counts(&self, op: &str) -> (u64, u64, u64) {
        let Some(i) = OPERATIONS.iter().position(|o| *o == op) else {
            return (0, 0, 0);
        };
        (
            self.store_latency.lock().unwrap()[i].count(),
            self.store_errors[i].load(Ordering::Relaxed),
            self.store_conflicts[i].load(Ordering::Relaxed),
        )
    }

    /// This process's `service.instance.id` over OTLP.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// When this process started counting, in nanoseconds since the epoch.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// What goes over OTLP at `time_ns`: the same families as `GET /metrics` shows, the
    /// process's counters and histograms apart from what the store holds (the gauges, and
    /// `shared`: the sync's healed counter, which the host reads from the store).
    pub fn snapshot(
        &self,
        backlog: &Backlog,
        settled: &Settlements,
        shared: Vec<HealthFamily>,
        time_ns: u64,
    ) -> HealthSnapshot {
        let (gauges, process): (Vec<HealthFamily>, Vec<HealthFamily>) = self
            .families(backlog, settled)
            .into_iter()
            .partition(|f| f.kind == HealthKind::Gauge);
        HealthSnapshot {
            instance: self.instance.clone(),
            start_ns: self.start_ns,
            time_ns: time_ns.max(self.start_ns),
            process,
            shared: gauges.into_iter().chain(shared).collect(),
        }
    }

    /// The process's counters as families, with `backlog` read from the store at scrape time
    /// and what the pipeline and its engine counted of their settlements.
    pub fn families(&self, backlog: &Backlog, settled: &Settlements) -> Vec<HealthFamily> {
        let mut out = vec![self.deliveries_family()];
        out.extend(backlog_families(backlog));
        out.extend(self.export_families());
        out.extend(self.store_families());
        out.push(history_reads_family(settled));
        out.push(settle_failures_family(settled.failures));
        out
    }

    /// Deliveries answered, by source and answer.
    fn deliveries_family(&self) -> HealthFamily {
        let deliveries = self
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|((s, a), n)| {
                number(
                    vec![("source", s.to_string()), ("answer", a.to_string())],
                    *n as f64,
                )
            })
            .collect();
        HealthFamily {
            name: "valuestream_health_deliveries_total",
            otel_name: "valuestream.health.deliveries",
            unit: "{delivery}",
            help: "Deliveries answered, by source and answer (processed, duplicate, ignored, refused_401, refused_4xx, error_5xx), in this process.",
            kind: HealthKind::Counter,
            samples: deliveries,
        }
    }

    /// Export failures per signal and drain durations.
    fn export_families(&self) -> Vec<HealthFamily> {
        vec![
            HealthFamily {
                name: "valuestream_health_export_failures_total",
                otel_name: "valuestream.health.export.failures",
                unit: "{export}",
                help: "Exports the collector refused or did not answer, per signal, in this process.",
                kind: HealthKind::Counter,
                samples: per("signal", SIGNALS, &|i| {
                    self.export_failures[i].load(Ordering::Relaxed) as f64
                }),
            },
            HealthFamily {
                name: "valuestream_health_drain_duration_seconds",
                otel_name: "valuestream.health.drain.duration",
                unit: "s",
                help: "Wall time of each drain (settle what is due, export the outbox), in this process.",
                kind: HealthKind::Histogram,
                samples: vec![HealthSample {
                    labels: vec![],
                    value: self.drain.lock().unwrap().value(),
                    start_ns: None,
                }],
            },
        ]
    }

    /// Store request latencies, errors and conflicts per operation.
    fn store_families(&self) -> Vec<HealthFamily> {
        let store_latency = self.store_latency.lock().unwrap();
        vec![
            HealthFamily {
                name: "valuestream_health_store_request_duration_seconds",
                otel_name: "valuestream.health.store.request.duration",
                unit: "s",
                help: "Store requests (get_many, query, commit) and their latency, whatever their outcome, in this process.",
                kind: HealthKind::Histogram,
                samples: OPERATIONS
                    .iter()
                    .zip(store_latency.iter())
                    .map(|(op, h)| HealthSample {
                        labels: vec![("operation", op.to_string())],
                        value: h.value(),
                        start_ns: None,
                    })
                    .collect(),
            },
            HealthFamily {
                name: "valuestream_health_store_errors_total",
                otel_name: "valuestream.health.store.errors",
                unit: "{request}",
                help: "Store requests that failed (a backend error: throttling, timeout, unavailable), by operation, in this process.",
                kind: HealthKind::Counter,
                samples: per("operation", OPERATIONS, &|i| {
                    self.store_errors[i].load(Ordering::Relaxed) as f64
                }),
            },
            HealthFamily {
                name: "valuestream_health_store_conflicts_total",
                otel_name: "valuestream.health.store.conflicts",
                unit: "{request}",
                help: "Commits whose condition failed (another writer came first; retried), by operation, in this process.",
                kind: HealthKind::Counter,
                samples: per("operation", OPERATIONS, &|i| {
                    self.store_conflicts[i].load(Ordering::Relaxed) as f64
                }),
            },
        ]
    }
}

/// A sample of a number.
fn number(labels: Vec<(&'static str, String)>, v: f64) -> HealthSample {
    HealthSample {
        labels,
        value: HealthValue::Number(v),
        start_ns: None,
    }
}

/// One sample per value of label `name`, each `f(its index)`.
fn per(name: &'static str, values: &[&'static str], f: &dyn Fn(usize) -> f64) -> Vec<HealthSample> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| number(vec![(name, v.to_string())], f(i)))
        .collect()
}

/// What waits in the store: due scopes, outbox batches, their ages.
fn backlog_families(backlog: &Backlog) -> Vec<HealthFamily> {
    vec![
        HealthFamily {
            name: "valuestream_health_settle_due_scopes",
            otel_name: "valuestream.health.settle.due_scopes",
            unit: "{scope}",
            help: "Scopes whose settle time has come and that wait for a drain (counted up to 1000).",
            kind: HealthKind::Gauge,
            samples: vec![number(vec![], backlog.due_scopes as f64)],
        },
        HealthFamily {
            name: "valuestream_health_settle_oldest_due_age_seconds",
            otel_name: "valuestream.health.settle.oldest_due_age",
            unit: "s",
            help: "Seconds since the oldest due scope became due (0 when none is due).",
            kind: HealthKind::Gauge,
            samples: vec![number(vec![], backlog.oldest_due_age_secs)],
        },
        HealthFamily {
            name: "valuestream_health_outbox_pending_batches",
            otel_name: "valuestream.health.outbox.pending_batches",
            unit: "{batch}",
            help: "Outbox batches whose spans (traces) or points (metrics) the collector has not taken yet (counted up to 1000).",
            kind: HealthKind::Gauge,
            samples: per("signal", SIGNALS, &|i| {
                [backlog.outbox_traces, backlog.outbox_metrics][i] as f64
            }),
        },
        HealthFamily {
            name: "valuestream_health_outbox_oldest_age_seconds",
            otel_name: "valuestream.health.outbox.oldest_age",
            unit: "s",
            help: "Age in seconds of the oldest outbox batch (0 when the outbox is empty).",
            kind: HealthKind::Gauge,
            samples: vec![number(vec![], backlog.outbox_oldest_age_secs)],
        },
    ]
}

/// Settlements of a repository with sealed history, by how they read it.
fn history_reads_family(settled: &Settlements) -> HealthFamily {
    HealthFamily {
        name: "valuestream_health_settle_history_reads_total",
        otel_name: "valuestream.health.settle.history_reads",
        unit: "{settlement}",
        help: "Settlements of a repository with sealed history, by how they read it: bounded (its live records and what its checkpoint names) or whole (every sealed record: a fact reached before the cut), in this process.",
        kind: HealthKind::Counter,
        samples: per("read", &["bounded", "whole"], &|i| {
            [settled.bounded, settled.whole][i] as f64
        }),
    }
}

/// What the pipeline and its engine counted of their settlements, in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Settlements {
    /// Settlements that failed and put their scope aside.
    pub failures: u64,
    /// Settlements of a repository with sealed history that read it from its checkpoint.
    pub bounded: u64,
    /// Those that read its whole sealed history.
    pub whole: u64,
}

/// Settlements that failed, as the pipeline counted them.
fn settle_failures_family(settle_failures: u64) -> HealthFamily {
    HealthFamily {
        name: "valuestream_settle_failures_total",
        otel_name: "valuestream.settle.failures",
        unit: "{settlement}",
        help: "Settlements that failed and put their scope aside, in this process.",
        kind: HealthKind::Counter,
        samples: vec![number(vec![], settle_failures as f64)],
    }
}

/// What waits in the store at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backlog {
    /// Wake-up markers whose time has come (up to [`SCRAPE_CAP`]).
    pub due_scopes: usize,
    /// Seconds since the oldest marker became due (0 when none is due).
    pub oldest_due_age_secs: f64,
    /// Outbox batches whose spans wait (up to [`SCRAPE_CAP`] batches read).
    pub outbox_traces: usize,
    /// Outbox batches whose points wait.
    pub outbox_metrics: usize,
    /// Age of the oldest outbox batch (0 when empty).
    pub outbox_oldest_age_secs: f64,
}

/// A store that measures every request to the one it wraps: latency per operation, backend
/// errors apart from conflicts (a conflict is a lost race, retried, not a failure).
pub struct MeasuredStore {
    inner: Arc<dyn Store>,
    health: Arc<Health>,
}

impl MeasuredStore {
    pub fn new(inner: Arc<dyn Store>, health: Arc<Health>) -> Self {
        MeasuredStore { inner, health }
    }
}

#[async_trait]
impl Store for MeasuredStore {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        let start = Instant::now();
        let r = self.inner.get_many(keys).await;
        self.health.store_request(0, start.elapsed(), &r);
        r
    }

    async fn query(
        &self,

        pk: &str,

        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        let start = Instant::now();
        let r = self.inner.query(pk, range, limit, order).await;
        self.health.store_request(1, start.elapsed(), &r);
        r
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        let start = Instant::now();
        let r = self.inner.commit(writes).await;
        self.health.store_request(2, start.elapsed(), &r);
        r
    }

    async fn sweep(&self) -> StoreResult<usize> {
        self.inner.sweep().await
    }

    fn requests(&self) -> u64 {
        self.inner.requests()
    }

    fn durable_commits(&self) -> u64 {
        self.inner.durable_commits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::prometheus::render_health;

    #[test]
    fn answers_map_from_status_and_answer() {
        assert_eq!(answer_label(200, "processed"), "processed");
        assert_eq!(answer_label(200, "duplicate"), "duplicate");
        assert_eq!(answer_label(202, "ignored"), "ignored");
        assert_eq!(answer_label(401, "error"), "refused_401");
        assert_eq!(answer_label(400, "error"), "refused_4xx");
        assert_eq!(answer_label(413, "error"), "refused_4xx");
        assert_eq!(answer_label(503, "error"), "error_5xx");
    }

    #[test]
    fn histogram_buckets_sum_and_count() {
        let mut h = Hist::new(&[0.1, 1.0]);
        for s in [0.05, 0.1, 0.5, 7.0] {
            h.observe(s);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count(), 4);
        assert!((h.sum - 7.65).abs() < 1e-9);
    }

    #[test]
    fn the_registry_renders_every_family_with_bounded_labels() {
        let health = Health::new();
        health.register_source("github");
        health.delivery("github", "processed");
        health.delivery("github", "processed");
        health.delivery("github", "refused_401");
        health.export_failed("traces");
        health.export_failed("nonsense");
        health.drained(Duration::from_millis(20));
        let backlog = Backlog {
            due_scopes: 2,
            oldest_due_age_secs: 12.5,
            outbox_traces: 1,
            outbox_metrics: 3,
            outbox_oldest_age_secs: 4.0,
        };
        let settled = Settlements {
            failures: 7,
            bounded: 3,
            whole: 1,
        };
        let text = render_health(&health.families(&backlog, &settled));
        for line in [
            r#"valuestream_health_deliveries_total{source="github",answer="processed"} 2"#,
            r#"valuestream_health_deliveries_total{source="github",answer="refused_401"} 1"#,
            r#"valuestream_health_deliveries_total{source="github",answer="error_5xx"} 0"#,
            "valuestream_health_settle_due_scopes 2",
            "valuestream_health_settle_oldest_due_age_seconds 12.5",
            r#"valuestream_health_outbox_pending_batches{signal="traces"} 1"#,
            r#"valuestream_health_outbox_pending_batches{signal="metrics"} 3"#,
            "valuestream_health_outbox_oldest_age_seconds 4",
            r#"valuestream_health_export_failures_total{signal="traces"} 1"#,
            r#"valuestream_health_export_failures_total{signal="metrics"} 0"#,
            r#"valuestream_health_drain_duration_seconds_bucket{le="0.025"} 1"#,
            r#"valuestream_health_drain_duration_seconds_bucket{le="0.01"} 0"#,
            "valuestream_health_drain_duration_seconds_count 1",
            r#"valuestream_health_store_request_duration_seconds_count{operation="commit"} 0"#,
            r#"valuestream_health_store_errors_total{operation="query"} 0"#,
            r#"valuestream_health_store_conflicts_total{operation="commit"} 0"#,
            r#"valuestream_health_settle_history_reads_total{read="bounded"} 3"#,
            r#"valuestream_health_settle_history_reads_total{read="whole"} 1"#,
            "valuestream_settle_failures_total 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // 6 answers of one source, nothing else.
        assert_eq!(
            text.matches("valuestream_health_deliveries_total{").count(),
            6
        );
        assert_eq!(text.matches("# TYPE").count(), 12);
    }

    #[test]
    fn otlp_names_translate_to_the_exposition_names() {
        use crate::engine::metrics::MetricKind;
        use crate::export::prometheus::prometheus_name;
        let health = Health::new();
        let mut families = health.families(&Backlog::default(), &Settlements::default());
        families.extend(crate::sync::healed_family(&[crate::sync::Cursor {
            source: "github".into(),
            repository: "o/r".into(),
            healed: 2,
            ..Default::default()
        }]));
        assert_eq!(families.len(), 13);
        for f in &families {
            // The collector adds `_total` to a monotonic sum only; a gauge and a histogram
            // get no suffix.
            let kind = match f.kind {
                HealthKind::Counter => MetricKind::Counter,
                HealthKind::Gauge | HealthKind::Histogram => MetricKind::Histogram,
            };
            assert_eq!(
                prometheus_name(f.otel_name, f.unit, kind),
                f.name,
                "{} ({})",
                f.otel_name,
                f.unit
            );
            assert!(
                f.otel_name.starts_with("valuestream.health.")
                    || ["valuestream.settle.failures", "valuestream.sync.healed"]
                        .contains(&f.otel_name),
                "{}",
                f.otel_name
            );
        }
    }

    #[test]
    fn a_snapshot_keeps_the_process_counters_apart_from_the_store_gauges() {
        let health = Health::new();
        health.register_source("github");
        health.delivery("github", "processed");
        let healed = crate::sync::healed_family(&[crate::sync::Cursor {
            source: "github".into(),
            repository: "o/r".into(),
            healed: 2,
            ..Default::default()
        }]);
        let settled = Settlements {
            failures: 1,
            ..Default::default()
        };
        let snap = health.snapshot(
            &Backlog::default(),
            &settled,
            healed.into_iter().collect(),
            0,
        );
        assert_eq!(snap.instance.len(), 32);
        assert_ne!(
            snap.instance,
            Health::new().instance,
            "one identity per process"
        );
        assert_eq!(snap.start_ns, health.start_ns());
        assert!(
            snap.time_ns >= snap.start_ns,
            "a point never precedes its start"
        );
        let names = |fs: &[HealthFamily]| fs.iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(&snap.shared),
            [
                "valuestream_health_settle_due_scopes",
                "valuestream_health_settle_oldest_due_age_seconds",
                "valuestream_health_outbox_pending_batches",
                "valuestream_health_outbox_oldest_age_seconds",
                "valuestream_sync_healed_total",
            ]
        );
        assert_eq!(snap.process.len(), 8);
        assert!(snap.process.iter().all(|f| f.kind != HealthKind::Gauge));
    }

    /// A store whose commits fail with `fail` (a backend error or a conflict).
    struct Failing(StoreError);

    #[async_trait]
    impl Store for Failing {
        async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
            Ok(vec![None; keys.len()])
        }
        async fn query(
            &self,
            _pk: &str,
            _range: KeyRange,
            _limit: usize,
            _order: Order,
        ) -> StoreResult<Vec<Record>> {
            Err(StoreError::Backend("throttled".into()))
        }
        fn limits(&self) -> Limits {
            Limits::UNBOUNDED
        }
        async fn commit(&self, _writes: Vec<Write>) -> StoreResult<()> {
            Err(match &self.0 {
                StoreError::Conflict => StoreError::Conflict,
                StoreError::Backend(m) => StoreError::Backend(m.clone()),
            })
        }
    }

    #[tokio::test]
    async fn the_measured_store_counts_requests_errors_and_conflicts_apart() {
        let health = Arc::new(Health::new());
        let conflicting =
            MeasuredStore::new(Arc::new(Failing(StoreError::Conflict)), health.clone());
        let failing = MeasuredStore::new(
            Arc::new(Failing(StoreError::Backend("down".into()))),
            health.clone(),
        );
        assert!(conflicting
            .get_many(&[Key::one("a"), Key::one("b")])
            .await
            .is_ok());
        assert!(conflicting
            .query("p", KeyRange::between("", "z"), 1, Order::Ascending)
            .await
            .is_err());
        assert!(matches!(
            conflicting.commit(vec![]).await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            failing.commit(vec![]).await,
            Err(StoreError::Backend(_))
        ));
        assert!(failing.commit(vec![]).await.is_err());
        assert_eq!(health.store_counts("get_many"), (1, 0, 0));
        assert_eq!(health.store_counts("query"), (1, 1, 0));
        assert_eq!(health.store_counts("commit"), (3, 2, 1));
        let text = render_health(&health.families(&Backlog::default(), &Settlements::default()));
        for line in [
            r#"valuestream_health_store_request_duration_seconds_count{operation="commit"} 3"#,
            r#"valuestream_health_store_errors_total{operation="commit"} 2"#,
            r#"valuestream_health_store_conflicts_total{operation="commit"} 1"#,
            r#"valuestream_health_store_errors_total{operation="query"} 1"#,
            r#"valuestream_health_store_errors_total{operation="get_many"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
