//! The outbox: what a drain settled waits here until the collector took it. Nothing accepted is
//! lost when the collector is down, and nothing a collector accepted is sent again.
//!
//! A delivery only records facts ([`Pipeline::deliver`]); no export is ever attempted on the
//! request path, so a webhook answer never waits for the collector. [`Pipeline::drain`] (serve's
//! timer, the Lambda's schedule) settles the scopes that are due (their spans and metric points
//! go to the outbox in the same transaction, leased to the drainer that settled them), then
//! exports the outbox: a drainer leases a batch (unless it settled it a moment ago) with a
//! conditional write, sends its points (cumulative, harmless to send again) and its spans,
//! and removes the batch; if one signal did not go, it records which one did instead. A
//! collector that accepts traces but refuses metrics gets the spans once and the points at a
//! later drain, and the other way round. After a failed export the pipeline waits
//! `retry` before it tries the collector again.

use crate::engine::drain::{delete_if, Settled};
use crate::engine::{keys, Applied, Engine, EngineError, ExportBatch, LEASE_SECS};
use crate::export::Exporter;
use crate::model::{FinishedSpan, Input, Time};
use crate::pipeline::health::{Backlog, Health, MeasuredStore, SCRAPE_CAP};
use crate::store::{now_epoch, Cond, Data, KeyRange, Order, Record, StoreError, Write};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering as AtomicOrdering};
use std::sync::Arc;

/// Wall time in which an export starts new batches (it always tries one). A drain that settled
/// a backlog (up to 8 repositories at once for `SETTLE_BUDGET`) can put a thousand batches in
/// the outbox, each two collector requests and a removal: exported one after another without a
/// bound, they could outlast a 15 s Lambda, which would then be stopped between a batch's spans
/// going out and its removal, and that batch would go out twice.
pub const EXPORT_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// Batches exported at once (each its own collector requests and store writes).
pub const EXPORTS_AT_ONCE: usize = 8;

pub struct Pipeline {
    pub engine: Engine,
    pub exporter: Arc<dyn Exporter>,
    /// Seconds to wait after a failed export before trying the collector again.
    pub retry_secs: i64,
    /// Epoch seconds before which no span export is attempted (the collector failed).
    traces_quiet_until: AtomicI64,
    /// Likewise for metric points.
    metrics_quiet_until: AtomicI64,
    /// Woken after each delivery when spans settle at once (settle 0).
    pub wake: Arc<tokio::sync::Notify>,
    /// See [`EXPORT_BUDGET`].
    export_budget: std::time::Duration,
    /// See [`EXPORTS_AT_ONCE`].
    exports_at_once: usize,
    /// Settlements that failed in this process (each put its scope aside): `GET /metrics`
    /// shows it as `valuestream_settle_failures_total`.
    settle_failures: std::sync::atomic::AtomicU64,
    /// This process's own health (`GET /metrics`, after the DORA series): deliveries, export
    /// failures, drain durations, store requests (the engine's store is measured through it).
    pub health: Arc<Health>,
}

/// What one export of valuestream's own health came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthExport {
    /// The collector took it.
    Sent,
    /// The collector refused it or did not answer in time (logged).
    Failed,
    /// Not tried: the metrics endpoint failed a moment ago and is left alone for now.
    Skipped,
    /// No OTLP endpoint: the health is on `GET /metrics` only.
    Off,
}

impl HealthExport {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthExport::Sent => "sent",
            HealthExport::Failed => "failed",
            HealthExport::Skipped => "skipped",
            HealthExport::Off => "off",
        }
    }
}

/// What exporting one batch came to.
enum Outcome {
    Done,
    /// Another drainer holds it.
    Held,
    /// The collector refused the spans, the points, or both.
    Failed,
    /// What could be tried went out; the rest waits for its endpoint to recover.
    Skipped,
}

/// Which signals one export may still try: cleared by the first failure of each.
struct Signals {
    spans: AtomicBool,
    points: AtomicBool,
}

impl Signals {
    fn any(&self) -> bool {
        self.spans.load(AtomicOrdering::Relaxed) || self.points.load(AtomicOrdering::Relaxed)
    }

    /// The batch has something left to send, and it may be tried now (a batch with nothing
    /// left is removed by its attempt).
    fn any_due(&self, batch: &ExportBatch) -> bool {
        let spans_due = !batch.spans_sent && !batch.spans.is_empty();
        let points_due = !batch.points_sent && !batch.points.is_empty();
        !(spans_due || points_due)
            || spans_due && self.spans.load(AtomicOrdering::Relaxed)
            || points_due && self.points.load(AtomicOrdering::Relaxed)
    }
}

/// What a drain did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Spans settled by this drain (whether or not already exported).
    pub settled: Vec<FinishedSpan>,
    /// Batches fully exported.
    pub exported: usize,
    /// Export attempts that failed.
    pub failed: usize,
    /// Batches are still waiting in the outbox.
    pub remaining: bool,
    /// Due facts are still waiting to be settled: the settle budget ran out (drain again).
    pub unsettled: bool,
    /// Scopes whose settlement failed in this drain and were put aside (logged with their
    /// cause; the other scopes settled and exported).
    pub put_aside: Vec<String>,
    /// Batches that could go out now are still waiting: the export budget ran out (drain again).
    pub unexported: bool,
}

impl Drained {
    /// This drain followed by `next`: what both did, and what `next` left.
    pub fn then(mut self, next: Drained) -> Drained {
        self.settled.extend(next.settled);
        self.put_aside.extend(next.put_aside);
        Drained {
            put_aside: self.put_aside,
            settled: self.settled,
            exported: self.exported + next.exported,
            failed: self.failed + next.failed,
            remaining: next.remaining,
            unsettled: next.unsettled,
            unexported: next.unexported,
        }
    }

    /// A budget ran out with work left that can be done now: drain again at once.
    pub fn cut_short(&self) -> bool {
        self.unsettled || self.unexported
    }
}

impl Pipeline {
    pub fn new(mut engine: Engine, exporter: Arc<dyn Exporter>) -> Self {
        let health = Arc::new(Health::new());
        engine.store = Arc::new(MeasuredStore::new(engine.store.clone(), health.clone()));
        Pipeline {
            health,
            engine,
            exporter,
            retry_secs: 30,
            traces_quiet_until: AtomicI64::new(0),
            metrics_quiet_until: AtomicI64::new(0),
            wake: Arc::new(tokio::sync::Notify::new()),
            export_budget: EXPORT_BUDGET,
            exports_at_once: EXPORTS_AT_ONCE,
            settle_failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Settlements that failed in this process since it started.
    pub fn settle_failures(&self) -> u64 {
        self.settle_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The same pipeline exporting at most `n` batches at once (1: one after the other, as
    /// before; `benches/settle.rs` compares the two).
    pub fn with_exports_at_once(mut self, n: usize) -> Self {
        self.exports_at_once = n.max(1);
        self
    }

    /// The same pipeline with another export budget (tests of a backlog).
    pub fn with_export_budget(mut self, budget: std::time::Duration) -> Self {
        self.export_budget = budget;
        self
    }

    /// The same pipeline, waiting `secs` after a failed export before the next attempt.
    pub fn with_retry_secs(mut self, secs: i64) -> Self {
        self.retry_secs = secs;
        self
    }

    /// Records a delivery's facts.
    ///
    /// A delivery with many inputs (a GitLab pipeline with a hundred jobs) is applied in parts of
    /// [`Budget::inputs`](crate::engine::tx::Budget) inputs (16, from the store's limits), each its own exactly-once unit (delivery ID `<id>#<part>`), so
    /// that no commit outgrows DynamoDB's transaction (100 writes) and item (400 KB) limits. A
    /// redelivery after a failure part-way applies only the parts that are missing.
    #[tracing::instrument(name = "deliver", skip(self, inputs), fields(inputs = inputs.len()))]
    pub async fn deliver(
        &self,
        source: &str,
        delivery_id: &str,
        inputs: &[Input],
    ) -> Result<Applied, EngineError> {
        let per_part = crate::engine::tx::Budget::of(self.engine.store.limits()).inputs;
        let total = if inputs.len() <= per_part {
            self.engine.apply(source, delivery_id, inputs).await?
        } else {
            let mut total = Applied {
                duplicate: true,
                ..Applied::default()
            };
            for (i, part) in inputs.chunks(per_part).enumerate() {
                let a = self
                    .engine
                    .apply(source, &format!("{delivery_id}#{i}"), part)
                    .await?;
                total.duplicate &= a.duplicate;
                total.opened += a.opened;
                total.updated += a.updated;
                total.closed += a.closed;
                total.facts += a.facts;
                total.requests += a.requests;
            }
            total
        };
        if !total.duplicate && self.engine.settings.settle_secs == 0 {
            self.wake.notify_one();
        }
        Ok(total)
    }

    /// Settles what is due now and exports the outbox.
    pub async fn drain(&self) -> Result<Drained, EngineError> {
        self.drain_at(self.engine.now()).await
    }

    /// Settles everything, due or not (replay at the end of its files), and exports: drains
    /// until no settle or export budget runs out.
    pub async fn drain_all(&self) -> Result<Drained, EngineError> {
        let far = self.engine.now()
            + chrono::TimeDelta::seconds(self.engine.settings.settle_secs)
            + chrono::TimeDelta::days(1);
        let mut all = self.drain_at(far).await?;
        while all.cut_short() {
            all = all.then(self.drain_at(far).await?);
        }
        Ok(all)
    }

    /// Settles what is due at `now`, then exports every batch it can lease.
    #[tracing::instrument(name = "drain", skip(self))]
    pub async fn drain_at(&self, now: Time) -> Result<Drained, EngineError> {
        let started = std::time::Instant::now();
        let drained = self.drain_at_unmeasured(now).await;
        self.health.drained(started.elapsed());
        drained
    }

    async fn drain_at_unmeasured(&self, now: Time) -> Result<Drained, EngineError> {
        // A scope whose settlement fails is put aside by the engine (and logged there); the
        // others' spans and points are exported all the same.
        let Settled {
            spans,
            more,
            failed,
            ..
        } = self.engine.settle(now).await?;
        self.settle_failures
            .fetch_add(failed.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut report = self.export_outbox().await?;
        report.settled = spans;
        report.unsettled = more;
        report.put_aside = failed.into_iter().map(|f| f.scope).collect();
        Ok(report)
    }

    /// Exports every pending batch it can lease, or as many as the export budget allows
    /// ([`Drained::unexported`]), up to [`EXPORTS_AT_ONCE`] batches at once. Traces and metrics
    /// are tried apart: after a failure of one signal, that signal is left alone for
    /// `retry_secs` while the other goes on (batches started after the failure no longer try
    /// it; those already under way finish their attempt).
    pub async fn export_outbox(&self) -> Result<Drained, EngineError> {
        let store = &self.engine.store;
        let started = std::time::Instant::now();
        let mut tried = 0;
        let mut report = Drained::default();
        let now = now_epoch();
        let signals = Signals {
            spans: AtomicBool::new(now >= self.traces_quiet_until.load(AtomicOrdering::Relaxed)),
            points: AtomicBool::new(now >= self.metrics_quiet_until.load(AtomicOrdering::Relaxed)),
        };
        let mut after = String::new();
        loop {
            let pending = store
                .query(
                    keys::OUTBOX,
                    KeyRange::all().starting_at(after.as_str()),
                    25,
                    Order::Ascending,
                )
                .await?;
            let Some(last) = pending.last() else { break };
            after = format!("{}\u{0}", last.key.sk);
            let mut todo = Vec::new();
            for rec in pending {
                let Ok(batch) = rec.data.decode::<ExportBatch>() else {
                    tracing::error!(key = %rec.key.sk, "an outbox batch cannot be read; it is left in place");
                    report.remaining = true;
                    continue;
                };
                if !signals.any_due(&batch) {
                    report.remaining = true;
                    continue;
                }
                if tried > 0 && started.elapsed() >= self.export_budget {
                    report.remaining = true;
                    report.unexported = true;
                    break;
                }
                tried += 1;
                todo.push((rec, batch));
            }
            // Every attempt runs to its end before an error is returned: one stopped between a
            // batch's spans going out and its removal would send those spans again.
            let outcomes: Vec<_> = futures_util::stream::iter(todo)
                .map(|(rec, batch)| self.export_one(rec, batch, &signals))
                .buffered(self.exports_at_once)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome? {
                    Outcome::Done => report.exported += 1,
                    Outcome::Failed => {
                        report.failed += 1;
                        report.remaining = true;
                    }
                    Outcome::Held | Outcome::Skipped => report.remaining = true,
                }
            }
            if report.unexported || !signals.any() {
                break;
            }
        }
        Ok(report)
    }

    /// Leases and exports one batch: its points (when `try_points`), then its spans (when
    /// `try_spans`), each unless sent already; the batch is removed once both went out.
    ///
    /// Points go first because they are cumulative values, harmless to send again, while spans
    /// must reach the collector once: when both go out, the removal is the only write after the
    /// spans. A batch this drainer settled comes leased to it, so that is its only write; any
    /// other batch is leased first (two writes). When one signal could not go, the batch is
    /// written back with what did go marked as sent, so that a later attempt sends only the rest.
    async fn export_one(
        &self,
        rec: Record,
        mut batch: ExportBatch,
        signals: &Signals,
    ) -> Result<Outcome, EngineError> {
        // A signal may have failed since this batch was picked: nothing to try, nothing leased.
        if !signals.any_due(&batch) {
            return Ok(Outcome::Skipped);
        }
        let try_spans = signals.spans.load(AtomicOrdering::Relaxed);
        let try_points = signals.points.load(AtomicOrdering::Relaxed);
        let store = &self.engine.store;
        let now = now_epoch();
        let holder = self.engine.holder();
        // A batch this drainer settled a moment ago is leased to it already; one whose lease is
        // half gone is leased again, so that it cannot run out during the export.
        let mine = batch.lease_holder == holder && batch.lease_until - LEASE_SECS / 2 > now;
        if batch.lease_until > now && !mine {
            return Ok(Outcome::Held);
        }
        let mut version = rec.version;
        if !mine {
            batch.lease_until = now + LEASE_SECS;
            batch.lease_holder = holder;
            if !put_if(store.as_ref(), &rec, &batch, &mut version).await? {
                return Ok(Outcome::Held);
            }
        }
        batch.points_sent |= batch.points.is_empty();
        batch.spans_sent |= batch.spans.is_empty();
        let (mut spans_failed, mut points_failed) = (false, false);
        if !batch.points_sent && try_points {
            let result = self.exporter.export_points(&batch.points).await;
            batch.points_sent = accepted(result, "metric points", batch.points.len());
            points_failed = !batch.points_sent;
            if points_failed {
                self.health.export_failed("metrics");
            }
        }
        if !batch.spans_sent && try_spans {
            let result = self.exporter.export_spans(&batch.spans).await;
            batch.spans_sent = accepted(result, "spans", batch.spans.len());
            spans_failed = !batch.spans_sent;
            if spans_failed {
                self.health.export_failed("traces");
            }
        }
        // Batches started from now on leave a failed signal alone.
        if spans_failed {
            signals.spans.store(false, AtomicOrdering::Relaxed);
            self.traces_quiet_until
                .store(now_epoch() + self.retry_secs, AtomicOrdering::Relaxed);
        }
        if points_failed {
            signals.points.store(false, AtomicOrdering::Relaxed);
            self.metrics_quiet_until
                .store(now_epoch() + self.retry_secs, AtomicOrdering::Relaxed);
        }
        if !(batch.spans_sent && batch.points_sent) {
            // Written at once: what went out is never sent again (spans) or only once more.
            batch.lease_until = 0;
            batch.lease_holder = 0;
            if !put_if(store.as_ref(), &rec, &batch, &mut version).await? {
                return Ok(Outcome::Held);
            }
            return Ok(if spans_failed || points_failed {
                Outcome::Failed
            } else {
                Outcome::Skipped
            });
        }
        match store
            .commit(vec![delete_if(rec.key.clone(), version)])
            .await
        {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => {
                // The one write after the spans went out: if it fails, the batch goes out again
                // once its lease has run out, as it would had the process stopped here.
                tracing::warn!(error = %e, "removing an exported batch from the outbox failed");
            }
        }
        Ok(Outcome::Done)
    }

    /// Number of batches waiting in the outbox.
    pub async fn pending(&self) -> Result<usize, StoreError> {
        Ok(self
            .engine
            .store
            .query(keys::OUTBOX, KeyRange::all(), 1000, Order::Ascending)
            .await?
            .len())
    }

    /// What waits in the store now, for `GET /metrics`: the wake-up markers that are due (and
    /// how long the oldest has been), the outbox batches per signal (and the oldest's age).
    /// Two queries, each of at most [`SCRAPE_CAP`] records.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let store = &self.engine.store;
        let now = self.engine.now();
        let age = |sk: &str| -> f64 {
            sk.split_once('#')
                .and_then(|(t, _)| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0.0, |t| {
                    ((now - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
                        .max(0.0)
                })
        };
        // Markers sort by due time: those up to now are due, the first is the oldest.
        let mut due = crate::engine::drain::pending_markers(
            store.as_ref(),
            KeyRange::through_prefix(&format!("{}#", keys::time_sk(now))),
            SCRAPE_CAP,
        )
        .await?;
        due.truncate(SCRAPE_CAP);
        let mut backlog = Backlog {
            due_scopes: due.len(),
            oldest_due_age_secs: due.first().map_or(0.0, |r| age(&r.key.sk)),
            ..Backlog::default()
        };
        let outbox = store
            .query(keys::OUTBOX, KeyRange::all(), SCRAPE_CAP, Order::Ascending)
            .await?;
        backlog.outbox_oldest_age_secs = outbox.first().map_or(0.0, |r| age(&r.key.sk));
        for rec in &outbox {
            // Only the flags and lengths: the spans themselves are not parsed.
            #[derive(serde::Deserialize)]
            struct Waiting {
                #[serde(default)]
                spans: Vec<serde::de::IgnoredAny>,
                #[serde(default)]
                points: Vec<serde::de::IgnoredAny>,
                #[serde(default)]
                spans_sent: bool,
                #[serde(default)]
                points_sent: bool,
            }
            if let Ok(b) = rec.data.decode::<Waiting>() {
                backlog.outbox_traces += usize::from(!b.spans_sent && !b.spans.is_empty());
                backlog.outbox_metrics += usize::from(!b.points_sent && !b.points.is_empty());
            }
        }
        Ok(backlog)
    }

    /// valuestream's own health now: the process's counters and the store's backlog.
    pub async fn health_families(
        &self,
    ) -> Result<Vec<crate::export::prometheus::HealthFamily>, StoreError> {
        let backlog = self.backlog().await?;
        Ok(self.health.families(&backlog, self.settle_failures()))
    }

    /// Sends valuestream's own health over OTLP (the exporter's metrics endpoint, bounded by
    /// its timeout): the process's counters, the store's backlog (two bounded queries) and
    /// `shared` (what the host read from the store besides: the sync's healed counter). Hosts
    /// call it from their drain schedule or a timer, never on a request. Nothing is kept for a
    /// retry: the next snapshot carries every total. While the metrics endpoint is left alone
    /// after a failure (`VALUESTREAM_RETRY_SECS`), nothing is tried.
    pub async fn export_health(
        &self,
        shared: Vec<crate::export::prometheus::HealthFamily>,
    ) -> Result<HealthExport, StoreError> {
        if !self.exporter.exports_health() {
            return Ok(HealthExport::Off);
        }
        if now_epoch() < self.metrics_quiet_until.load(AtomicOrdering::Relaxed) {
            return Ok(HealthExport::Skipped);
        }
        let backlog = self.backlog().await?;
        let snapshot = self.health.snapshot(
            &backlog,
            self.settle_failures(),
            shared,
            crate::pipeline::health::now_ns(),
        );
        Ok(match self.exporter.export_health(&snapshot).await {
            Ok(()) => HealthExport::Sent,
            Err(e) => {
                tracing::warn!(error = %e, "exporting valuestream's own health failed; the next export sends every total again");
                HealthExport::Failed
            }
        })
    }

    /// Number of scopes with facts waiting for their settle period.
    pub async fn unsettled(&self) -> Result<usize, StoreError> {
        let store = self.engine.store.as_ref();
        let all = crate::engine::drain::pending_markers(store, KeyRange::all(), 10_000);
        Ok(all.await?.len().min(10_000))
    }
}

/// Whether the collector accepted a signal; a refusal is logged, and what was refused stays in
/// the outbox.
fn accepted(result: Result<(), crate::export::ExportError>, signal: &str, count: usize) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, signal, count, "exporting {signal} failed; they stay in the outbox");
            false
        }
    }
}

/// Rewrites a batch if it still has `version`; false when another drainer changed it.
async fn put_if(
    store: &dyn crate::store::Store,
    rec: &Record,
    batch: &ExportBatch,
    version: &mut u64,
) -> Result<bool, EngineError> {
    let record = Record {
        key: rec.key.clone(),
        version: *version + 1,
        expires_at: rec.expires_at,
        data: Data::encode(batch).expect("batch serializes"),
    };
    match store
        .commit(vec![Write::Put {
            record,
            cond: Cond::Version(*version),
        }])
        .await
    {
        Ok(()) => {
            *version += 1;
            Ok(true)
        }
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::testing::closed_issue;
    use crate::export::Discard;
    use crate::store::memory::MemoryStore;

    /// A pipeline on a fresh in-memory store, exporting through `exporter`.
    fn fresh_pipeline(exporter: Arc<dyn crate::export::Exporter>) -> Pipeline {
        let store = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        Pipeline::new(Engine::new(store, config), exporter)
    }

    /// Delivers a closed issue in each of `n` repositories.
    async fn close_issues(pipeline: &Pipeline, n: usize) {
        for r in 0..n {
            let id = format!("d-{r}");
            pipeline
                .deliver("github", &id, &closed_issue(r))
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn drain_all_settles_everything_whatever_the_settle_budget() {
        // `replay` drains once at the end of its files: a budget that runs out must not leave
        // repositories unsettled when the process exits.
        let store = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        let engine = Engine::new(store, config).with_settle_budget(std::time::Duration::ZERO);
        let pipeline = Pipeline::new(engine, Arc::new(Discard));
        close_issues(&pipeline, 3).await;
        let first = pipeline.drain().await.unwrap();
        assert_eq!(first.settled.len(), 0, "not due yet");
        let all = pipeline.drain_all().await.unwrap();
        assert_eq!(all.settled.len(), 3, "one issue span per repository");
        assert_eq!((all.exported, all.unsettled), (3, false));
    }

    #[tokio::test]
    async fn an_export_out_of_budget_leaves_the_rest_to_the_next_drain() {
        // A drain that settled a backlog must not export without end (a 15 s Lambda stopped
        // between a batch's spans and its removal sends that batch twice).
        let pipeline =
            fresh_pipeline(Arc::new(Discard)).with_export_budget(std::time::Duration::ZERO);
        close_issues(&pipeline, 3).await;
        let later = pipeline.engine.now() + chrono::TimeDelta::days(1);
        let first = pipeline.drain_at(later).await.unwrap();
        assert_eq!(first.settled.len(), 3, "settling has its own budget");
        // Each drain exports one batch at least and says whether it stopped early.
        let mut passes = vec![(first.exported, first.unexported, first.cut_short())];
        for _ in 0..2 {
            let d = pipeline.drain_at(later).await.unwrap();
            passes.push((d.exported, d.unexported, d.cut_short()));
        }
        assert_eq!(
            passes,
            [(1, true, true), (1, true, true), (1, false, false)]
        );
        assert_eq!(pipeline.pending().await.unwrap(), 0);

        // drain_all goes on until the outbox is empty
        let pipeline =
            fresh_pipeline(Arc::new(Discard)).with_export_budget(std::time::Duration::ZERO);
        close_issues(&pipeline, 3).await;
        let all = pipeline.drain_all().await.unwrap();
        assert_eq!((all.exported, all.unexported), (3, false));
        assert_eq!(pipeline.pending().await.unwrap(), 0);
    }

    /// A collector that takes 3 ms per request, refuses spans when `spans_down`, and records
    /// how many requests were in flight at once and how many span requests it got.
    #[derive(Default)]
    struct SlowCollector {
        spans_down: bool,
        in_flight: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        span_requests: std::sync::atomic::AtomicUsize,
    }

    impl SlowCollector {
        async fn request(&self) {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            self.in_flight.fetch_sub(1, SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl crate::export::Exporter for SlowCollector {
        async fn export_spans(
            &self,
            _spans: &[FinishedSpan],
        ) -> Result<(), crate::export::ExportError> {
            self.span_requests
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.request().await;
            if self.spans_down {
                return Err(crate::export::ExportError::Unreachable("down".into()));
            }
            Ok(())
        }
        async fn export_points(
            &self,
            _points: &[crate::engine::metrics::Series],
        ) -> Result<(), crate::export::ExportError> {
            self.request().await;
            Ok(())
        }
    }

    /// 20 repositories settled into 20 batches, exported through `collector`.
    async fn export_twenty(collector: Arc<SlowCollector>) -> (Pipeline, Drained) {
        let pipeline = fresh_pipeline(collector);
        close_issues(&pipeline, 20).await;
        let later = pipeline.engine.now() + chrono::TimeDelta::days(1);
        let drained = pipeline.drain_at(later).await.unwrap();
        assert_eq!(drained.settled.len(), 20);
        (pipeline, drained)
    }

    #[tokio::test]
    async fn batches_are_exported_side_by_side() {
        use std::sync::atomic::Ordering::SeqCst;
        let collector = Arc::new(SlowCollector::default());
        let (pipeline, drained) = export_twenty(collector.clone()).await;
        assert_eq!((drained.exported, drained.failed), (20, 0));
        assert_eq!(
            collector.span_requests.load(SeqCst),
            20,
            "each batch's spans once"
        );
        assert_eq!(
            collector.most.load(SeqCst),
            EXPORTS_AT_ONCE,
            "requests at once"
        );
        assert_eq!(pipeline.pending().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_refused_signal_is_not_tried_by_batches_started_after_the_refusal() {
        use std::sync::atomic::Ordering::SeqCst;
        let collector = Arc::new(SlowCollector {
            spans_down: true,
            ..SlowCollector::default()
        });
        let (pipeline, drained) = export_twenty(collector.clone()).await;
        // The first wave was under way when the first refusal came back; nothing after it
        // asked the collector for spans again. The points of every batch still went out.
        let tried = collector.span_requests.load(SeqCst);
        assert!(
            (1..=EXPORTS_AT_ONCE).contains(&tried),
            "{tried} span requests"
        );
        assert_eq!((drained.exported, drained.failed), (0, tried));
        assert!(drained.remaining);
        assert_eq!(pipeline.pending().await.unwrap(), 20, "every batch kept");
        let batches = pipeline
            .engine
            .store
            .query(keys::OUTBOX, KeyRange::all(), 100, Order::Ascending)
            .await
            .unwrap();
        let sent = |b: &Record| {
            let b: ExportBatch = b.data.decode().unwrap();
            (b.points_sent || b.points.is_empty(), b.spans_sent)
        };
        assert!(
            batches.iter().all(|b| sent(b) == (true, false)),
            "points out, spans kept"
        );
    }
}
