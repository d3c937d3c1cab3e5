//! Nothing accepted is lost when the collector is down. The engine's commit puts each batch to
//! export in the outbox; [`Pipeline::deliver`] exports it right after and removes it. When the
//! export fails the batch stays, a flag record says so, and the next delivery that reads the
//! flag (every delivery reads it in its first batched read), a sandbox's first invocation, or
//! `serve`'s background loop drains the outbox. A drainer leases a batch with a conditional write
//! before exporting it, so concurrent drainers never send the same batch twice.

use super::{keys, Applied, Engine, EngineError, ExportBatch};
use crate::export::Exporter;
use crate::model::Input;
use crate::store::{now_epoch, Cond, Order, Record, StoreError, Write};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;

const LEASE_SECS: i64 = 60;

/// Inputs applied in one transaction. An input writes a handful of records (its item, an index
/// or two, its metric series), so a part stays well under DynamoDB's 100 writes.
pub const INPUTS_PER_PART: usize = 16;

pub struct Pipeline {
    pub engine: Engine,
    pub exporter: Arc<dyn Exporter>,
    /// Drain the outbox after the first delivery (a Lambda sandbox's cold start), so a batch
    /// whose sandbox died between commit and export is not left waiting for the next failure.
    drain_on_first: AtomicBool,
}

/// What a drain did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub exported: usize,
    pub failed: usize,
    pub remaining: bool,
}

impl Pipeline {
    pub fn new(engine: Engine, exporter: Arc<dyn Exporter>) -> Self {
        Pipeline {
            engine,
            exporter,
            drain_on_first: AtomicBool::new(false),
        }
    }

    /// Also drain the outbox after this process's first delivery (Lambda).
    pub fn drain_after_first_delivery(self) -> Self {
        self.drain_on_first.store(true, AtomicOrdering::Relaxed);
        self
    }

    /// Applies a delivery and exports what it finished.
    ///
    /// A delivery with many inputs (a GitLab pipeline with a hundred jobs) is applied in parts of
    /// [`INPUTS_PER_PART`] inputs, each its own exactly-once unit (delivery ID `<id>#<part>`), so
    /// that no commit outgrows DynamoDB's transaction (100 writes) and item (400 KB) limits. A
    /// redelivery after a failure part-way applies only the parts that are missing.
    pub async fn deliver(
        &self,
        source: &str,
        delivery_id: &str,
        inputs: &[Input],
    ) -> Result<Applied, EngineError> {
        if inputs.len() <= INPUTS_PER_PART {
            return self.deliver_part(source, delivery_id, inputs).await;
        }
        let mut total = Applied {
            duplicate: true,
            ..Applied::default()
        };
        for (i, part) in inputs.chunks(INPUTS_PER_PART).enumerate() {
            let a = self
                .deliver_part(source, &format!("{delivery_id}#{i}"), part)
                .await?;
            total.duplicate &= a.duplicate;
            total.opened += a.opened;
            total.updated += a.updated;
            total.finished.extend(a.finished);
            total.points.extend(a.points);
            total.pending_exports |= a.pending_exports;
            total.requests += a.requests;
        }
        Ok(total)
    }

    async fn deliver_part(
        &self,
        source: &str,
        delivery_id: &str,
        inputs: &[Input],
    ) -> Result<Applied, EngineError> {
        let mut applied = self.engine.apply(source, delivery_id, inputs).await?;
        if let Some(key) = applied.outbox.clone() {
            let batch = ExportBatch {
                spans: applied.finished.clone(),
                points: applied.points.clone(),
                lease_until: 0,
            };
            applied.requests += 1;
            match self.exporter.export(&batch).await {
                Ok(()) => {
                    // The delivery is applied and exported: a failure to tidy up must not make
                    // the sender retry. The batch would be sent once more by a drain, which is
                    // harmless (same span IDs, same cumulative metric values).
                    let delete = Write::Delete {
                        key,
                        cond: Cond::Any,
                    };
                    if let Err(e) = self.engine.store.commit(vec![delete]).await {
                        tracing::warn!(error = %e, "removing an exported batch from the outbox failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, source, delivery_id, "export failed; the batch stays in the outbox for a retry");
                    if let Err(e) = self.raise_flag().await {
                        tracing::warn!(error = %e, "raising the outbox flag failed; the batch waits for a cold start or serve's retry loop");
                    }
                    applied.pending_exports = true;
                    return Ok(applied);
                }
            }
        }
        if applied.pending_exports || self.drain_on_first.swap(false, AtomicOrdering::Relaxed) {
            if let Err(e) = self.drain().await {
                tracing::warn!(error = %e, "draining the outbox failed");
            }
        }
        Ok(applied)
    }

    async fn raise_flag(&self) -> Result<(), StoreError> {
        let record = Record {
            key: keys::outbox_flag(),
            version: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64,
            expires_at: now_epoch() + self.engine.config.ttl_open_secs,
            data: serde_json::json!({ "since": chrono::Utc::now() }),
        };
        self.engine
            .store
            .commit(vec![Write::Put {
                record,
                cond: Cond::Any,
            }])
            .await
    }

    /// Exports every pending batch it can lease; stops at the first export failure.
    pub async fn drain(&self) -> Result<Drained, EngineError> {
        let store = &self.engine.store;
        let flag = store
            .get_many(&[keys::outbox_flag()])
            .await?
            .pop()
            .flatten();
        let mut report = Drained::default();
        loop {
            let pending = store
                .query(keys::OUTBOX, "", "\u{10ffff}", 25, Order::Ascending)
                .await?;
            if pending.is_empty() {
                break;
            }
            let mut progressed = false;
            for rec in pending {
                let Ok(mut batch) = serde_json::from_value::<ExportBatch>(rec.data.clone()) else {
                    continue;
                };
                let now = now_epoch();
                if batch.lease_until > now {
                    report.remaining = true;
                    continue;
                }
                batch.lease_until = now + LEASE_SECS;
                let leased = Record {
                    key: rec.key.clone(),
                    version: rec.version + 1,
                    expires_at: rec.expires_at,
                    data: serde_json::to_value(&batch).expect("batch serializes"),
                };
                match store
                    .commit(vec![Write::Put {
                        record: leased,
                        cond: Cond::Version(rec.version),
                    }])
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
                match self.exporter.export(&batch).await {
                    Ok(()) => {
                        store
                            .commit(vec![Write::Delete {
                                key: rec.key.clone(),
                                cond: Cond::Version(rec.version + 1),
                            }])
                            .await
                            .or_else(ignore_conflict)?;
                        report.exported += 1;
                        progressed = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox export failed; will retry later");
                        // Release the lease so the next drain retries at once.
                        batch.lease_until = 0;
                        let released = Record {
                            key: rec.key.clone(),
                            version: rec.version + 2,
                            expires_at: rec.expires_at,
                            data: serde_json::to_value(&batch).expect("batch serializes"),
                        };
                        store
                            .commit(vec![Write::Put {
                                record: released,
                                cond: Cond::Version(rec.version + 1),
                            }])
                            .await
                            .or_else(ignore_conflict)?;
                        report.failed += 1;
                        report.remaining = true;
                        return Ok(report);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if !report.remaining {
            if let Some(flag) = flag {
                // Lower the flag only if nobody raised it again meanwhile.
                store
                    .commit(vec![Write::Delete {
                        key: flag.key,
                        cond: Cond::Version(flag.version),
                    }])
                    .await
                    .or_else(ignore_conflict)?;
            }
        }
        Ok(report)
    }

    /// Number of batches waiting in the outbox.
    pub async fn pending(&self) -> Result<usize, StoreError> {
        Ok(self
            .engine
            .store
            .query(keys::OUTBOX, "", "\u{10ffff}", 1000, Order::Ascending)
            .await?
            .len())
    }
}

fn ignore_conflict(e: StoreError) -> Result<(), StoreError> {
    match e {
        StoreError::Conflict => Ok(()),
        e => Err(e),
    }
}
