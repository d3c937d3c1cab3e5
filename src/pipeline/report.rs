//! What the pipeline tells about itself: the backlog in the store (read at scrape time), the
//! health families `GET /metrics` renders, and their export over OTLP from the hosts' timers.

use super::health::{now_ns, Backlog, Settlements, SCRAPE_CAP};
use super::Pipeline;
use crate::engine::keys;
use crate::export::prometheus::HealthFamily;
use crate::model::Time;
use crate::store::{now_epoch, KeyRange, StoreError};
use std::sync::atomic::Ordering as AtomicOrdering;

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

impl Pipeline {
    /// What waits in the store now, for `GET /metrics`: the wake-up markers that are due (and
    /// how long the oldest has been), the outbox batches per signal (and the oldest's age).
    /// Two queries, each of at most [`SCRAPE_CAP`] records.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let store = &self.engine.store;
        let now = self.engine.now();
        let age = |t: Option<Time>| -> f64 {
            t.map_or(0.0, |t| {
                ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
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
        let due_at = |sk: &str| {
            let (at, _) = sk.split_once('#')?;
            let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
            Some(at.with_timezone(&chrono::Utc))
        };
        let outbox = self.engine.outbox().waiting(SCRAPE_CAP).await?;
        Ok(Backlog {
            due_scopes: due.len(),
            oldest_due_age_secs: age(due.first().and_then(|r| due_at(&r.key.sk))),
            outbox_traces: outbox.traces,
            outbox_metrics: outbox.metrics,
            outbox_oldest_age_secs: age(outbox.oldest),
        })
    }

    /// What this process counted of its settlements: the failures, and how the engine read
    /// sealed histories.
    fn settlements(&self) -> Settlements {
        let (bounded, whole) = self.engine.history_reads();
        Settlements {
            failures: self.settle_failures(),
            bounded,
            whole,
        }
    }

    /// valuestream's own health now: the process's counters and the store's backlog.
    pub async fn health_families(&self) -> Result<Vec<HealthFamily>, StoreError> {
        let backlog = self.backlog().await?;
        Ok(self.health.families(&backlog, &self.settlements()))
    }

    /// Sends valuestream's own health over OTLP (the exporter's metrics endpoint, bounded by
    /// its timeout): the process's counters, the store's backlog (two bounded queries) and
    /// `shared` (what the host read from the store besides: the sync's healed counter). Hosts
    /// call it from their drain schedule or a timer, never on a request. Nothing is kept for a
    /// retry: the next snapshot carries every total. While the metrics endpoint is left alone
    /// after a failure (`VALUESTREAM_RETRY_SECS`), nothing is tried.
    pub async fn export_health(
        &self,
        shared: Vec<HealthFamily>,
    ) -> Result<HealthExport, StoreError> {
        if !self.exporter.exports_health() {
            return Ok(HealthExport::Off);
        }
        if now_epoch() < self.metrics_quiet_until.load(AtomicOrdering::Relaxed) {
            return Ok(HealthExport::Skipped);
        }
        let backlog = self.backlog().await?;
        let snapshot = self
            .health
            .snapshot(&backlog, &self.settlements(), shared, now_ns());
        Ok(match self.exporter.export_health(&snapshot).await {
            Ok(()) => HealthExport::Sent,
            Err(e) => {
                tracing::warn!(error = %e, "exporting valuestream's own health failed; the next export sends every total again");
                HealthExport::Failed
            }
        })
    }
}
