//! Exporting the engine's outbox through the exporter: what a drain settled waits there until
//! the collector took it. Nothing accepted is lost when the collector is down, and nothing a
//! collector accepted is sent again.
//!
//! For each batch the engine's outbox gives ([`Outbox::pending`]), the pipeline takes a lease
//! ([`Outbox::lease`]: none to take when this drainer settled the batch a moment ago), sends its
//! points (cumulative, harmless to send again) and its spans, and acknowledges what went
//! ([`Outbox::ack`]: the batch is removed, or written back with which signal did go). A
//! collector that accepts traces but refuses metrics gets the spans once and the points at a
//! later drain, and the other way round. After a failed export the pipeline waits
//! `retry` before it tries the collector again.

use super::{Drained, Pipeline};
use crate::engine::outbox::{Acked, Cursor, ExportBatch, Outbox, Pending};
use crate::engine::EngineError;
use crate::store::{now_epoch, StoreError};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

/// Wall time in which an export starts new batches (it always tries one). A drain that settled
/// a backlog (up to 8 repositories at once for `SETTLE_BUDGET`) can put a thousand batches in
/// the outbox, each two collector requests and a removal: exported one after another without a
/// bound, they could outlast a 15 s Lambda, which would then be stopped between a batch's spans
/// going out and its removal, and that batch would go out twice.
pub const EXPORT_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// Batches exported at once (each its own collector requests and store writes).
pub const EXPORTS_AT_ONCE: usize = 8;

/// What exporting one batch came to.
enum BatchExport {
    Done,
    /// Another drainer holds it.
    Held,
    /// The collector refused the spans, the points, or both.
    Failed,
    /// What could be tried went out; the rest waits for its endpoint to recover.
    Skipped,
}

/// Which signals failed in one batch's export.
#[derive(Clone, Copy, Default)]
struct Refused {
    spans: bool,
    points: bool,
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
        let spans_due = batch.spans_due();
        let points_due = batch.points_due();
        !(spans_due || points_due)
            || spans_due && self.spans.load(AtomicOrdering::Relaxed)
            || points_due && self.points.load(AtomicOrdering::Relaxed)
    }
}

impl Pipeline {
    /// Exports every pending batch it can lease, or as many as the export budget allows
    /// ([`Drained::unexported`]), up to [`EXPORTS_AT_ONCE`] batches at once. Traces and metrics
    /// are tried apart: after a failure of one signal, that signal is left alone for
    /// `retry_secs` while the other goes on (batches started after the failure no longer try
    /// it; those already under way finish their attempt).
    pub async fn export_outbox(&self) -> Result<Drained, EngineError> {
        let outbox = self.engine.outbox();
        let started = std::time::Instant::now();
        let mut tried = 0;
        let mut report = Drained::default();
        let now = now_epoch();
        let signals = Signals {
            spans: AtomicBool::new(now >= self.traces_quiet_until.load(AtomicOrdering::Relaxed)),
            points: AtomicBool::new(now >= self.metrics_quiet_until.load(AtomicOrdering::Relaxed)),
        };
        let mut cursor = Cursor::default();
        while let Some(page) = outbox.pending(&mut cursor).await? {
            report.remaining |= page.unreadable > 0;
            let mut todo = Vec::new();
            for pending in page.batches {
                if !signals.any_due(&pending.batch) {
                    report.remaining = true;
                    continue;
                }
                if tried > 0 && started.elapsed() >= self.export_budget {
                    report.remaining = true;
                    report.unexported = true;
                    break;
                }
                tried += 1;
                todo.push(pending);
            }
            // Every attempt runs to its end before an error is returned: one stopped between a
            // batch's spans going out and its removal would send those spans again.
            let outcomes: Vec<_> = futures_util::stream::iter(todo)
                .map(|pending| self.export_one(&outbox, pending, &signals))
                .buffered(self.exports_at_once)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome? {
                    BatchExport::Done => report.exported += 1,
                    BatchExport::Failed => {
                        report.failed += 1;
                        report.remaining = true;
                    }
                    BatchExport::Held | BatchExport::Skipped => report.remaining = true,
                }
            }
            if report.unexported || !signals.any() {
                break;
            }
        }
        Ok(report)
    }

    /// Leases and exports one batch: its points, then its spans (each when its signal may be
    /// tried, unless sent already); the batch is removed once both went out.
    ///
    /// Points go first because they are cumulative values, harmless to send again, while spans
    /// must reach the collector once: when both go out, the removal is the only write after the
    /// spans. A batch this drainer settled comes leased to it, so that is its only write; any
    /// other batch is leased first (two writes). When one signal could not go, the batch is
    /// written back with what did go marked as sent, so that a later attempt sends only the rest.
    async fn export_one(
        &self,
        outbox: &Outbox<'_>,
        mut pending: Pending,
        signals: &Signals,
    ) -> Result<BatchExport, EngineError> {
        // A signal may have failed since this batch was picked: nothing to try, nothing leased.
        if !signals.any_due(&pending.batch) {
            return Ok(BatchExport::Skipped);
        }
        let try_spans = signals.spans.load(AtomicOrdering::Relaxed);
        let try_points = signals.points.load(AtomicOrdering::Relaxed);
        if !outbox.lease(&mut pending).await? {
            return Ok(BatchExport::Held);
        }
        let refused = self.send(&mut pending.batch, try_spans, try_points).await;
        self.leave_alone(refused, signals);
        Ok(match outbox.ack(pending).await? {
            Acked::Removed => BatchExport::Done,
            Acked::Taken => BatchExport::Held,
            Acked::Kept if refused.spans || refused.points => BatchExport::Failed,
            Acked::Kept => BatchExport::Skipped,
        })
    }

    /// Sends what of a leased batch is due and may be tried, points first; marks what the
    /// collector accepted as sent.
    async fn send(&self, batch: &mut ExportBatch, try_spans: bool, try_points: bool) -> Refused {
        let mut refused = Refused::default();
        if !batch.points_sent && try_points {
            let result = self.exporter.export_points(&batch.points).await;
            batch.points_sent = accepted(result, "metric points", batch.points.len());
            refused.points = !batch.points_sent;
            if refused.points {
                self.health.export_failed("metrics");
            }
        }
        if !batch.spans_sent && try_spans {
            let result = self.exporter.export_spans(&batch.spans).await;
            batch.spans_sent = accepted(result, "spans", batch.spans.len());
            refused.spans = !batch.spans_sent;
            if refused.spans {
                self.health.export_failed("traces");
            }
        }
        refused
    }

    /// Batches started from now on leave a refused signal alone, and so do exports for the
    /// next `retry_secs`.
    fn leave_alone(&self, refused: Refused, signals: &Signals) {
        if refused.spans {
            signals.spans.store(false, AtomicOrdering::Relaxed);
            self.traces_quiet_until
                .store(now_epoch() + self.retry_secs, AtomicOrdering::Relaxed);
        }
        if refused.points {
            signals.points.store(false, AtomicOrdering::Relaxed);
            self.metrics_quiet_until
                .store(now_epoch() + self.retry_secs, AtomicOrdering::Relaxed);
        }
    }

    /// Number of batches waiting in the outbox (counted up to 1000).
    pub async fn pending(&self) -> Result<usize, StoreError> {
        self.engine.outbox().count(1000).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::testing::closed_issue;
    use crate::engine::Engine;
    use crate::export::Discard;
    use crate::model::FinishedSpan;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

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
        let outbox = pipeline.engine.outbox();
        let mut batches = Vec::new();
        let mut cursor = Cursor::default();
        while let Some(page) = outbox.pending(&mut cursor).await.unwrap() {
            assert_eq!(page.unreadable, 0);
            batches.extend(page.batches);
        }
        assert_eq!(batches.len(), 20);
        let sent = |p: &Pending| {
            let b = &p.batch;
            (b.points_sent || b.points.is_empty(), b.spans_sent)
        };
        assert!(
            batches.iter().all(|b| sent(b) == (true, false)),
            "points out, spans kept"
        );
    }
}
