//! The pipeline: the engine, its store and an exporter, with the engine's outbox between them.
//! It is built in one place, [`build`], from the configuration, by every host: Lambda, `serve`
//! and `replay`. Nothing below it (engine, store, export) knows it exists.
//!
//! A delivery only records facts ([`Pipeline::deliver`]); no export is ever attempted on the
//! request path, so a webhook answer never waits for the collector. [`Pipeline::drain`] (serve's
//! timer, the Lambda's schedule) settles the scopes that are due (the engine puts their spans
//! and metric points in its outbox in the same transaction, leased to the drainer that settled
//! them), then exports the outbox ([`export`]).

pub mod export;
pub mod health;
pub mod report;

pub use export::{EXPORTS_AT_ONCE, EXPORT_BUDGET};
pub use report::HealthExport;

use crate::config::Config;
use crate::engine::drain::Settled;
use crate::engine::{Applied, Engine, EngineError};
use crate::export::{ExportError, Exporter};
use crate::model::{FinishedSpan, Input, Time};
use crate::store::{
    dynamodb::DynamoStore, embedded::EmbeddedStore, memory::MemoryStore, KeyRange, Store,
    StoreError,
};
use health::{Health, MeasuredStore};
use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

/// The engine and its exporter, with what this process keeps between drains: when each signal
/// may be tried again, its budgets and its own health.
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
        report.put_aside = failed.into_iter().map(|f| f.scope.to_string()).collect();
        Ok(report)
    }

    /// Number of scopes with facts waiting for their settle period.
    pub async fn unsettled(&self) -> Result<usize, StoreError> {
        let store = self.engine.store.as_ref();
        let all = crate::engine::drain::pending_markers(store, KeyRange::all(), 10_000);
        Ok(all.await?.len().min(10_000))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

/// DynamoDB when `VALUESTREAM_TABLE` is set; otherwise the embedded store in `data_dir`, or the
/// in-memory store when there is none.
pub async fn open_store(
    config: &Config,
    data_dir: Option<&Path>,
) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(table) = &config.table {
        let timeout = std::time::Duration::from_millis(config.dynamodb_timeout_ms);
        return Ok(Arc::new(DynamoStore::connect(table, timeout).await?));
    }
    Ok(match data_dir {
        Some(dir) => Arc::new(EmbeddedStore::open(dir)?),
        None => Arc::new(MemoryStore::new()),
    })
}

/// The pipeline the configuration asks for, sending to `exporter` (callers build it first, with
/// [`crate::export::from_env`] or [`crate::export::from_settings`], so that every setting is
/// checked before anything is opened): the store ([`open_store`]) and the engine over both,
/// waiting `VALUESTREAM_RETRY_SECS` after a failed export.
pub async fn build(
    config: Arc<Config>,
    data_dir: Option<&Path>,
    exporter: Box<dyn Exporter>,
) -> Result<Arc<Pipeline>, PipelineError> {
    let store = open_store(&config, data_dir).await?;
    let retry_secs = config.retry_secs as i64;
    Ok(Arc::new(
        Pipeline::new(Engine::new(store, config), Arc::from(exporter)).with_retry_secs(retry_secs),
    ))
}

impl Pipeline {
    /// Every stored metric series (the `GET /metrics` exposition reads these).
    pub async fn series(&self) -> Result<Vec<crate::engine::metrics::Series>, StoreError> {
        crate::engine::metrics::stored(self.engine.store.as_ref(), None).await
    }
}
