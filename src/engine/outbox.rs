//! The outbox: what a settlement derived (spans and metric points) waits here, one batch per
//! settled round, until a drainer has sent it. This module owns a batch from end to end:
//! [`Outbox::enqueue`] puts it in the settlement's own transaction, leased to the drainer that
//! settled it; [`Outbox::pending`] reads the batches a page at a time; [`Outbox::lease`] takes
//! one for an export (a conditional write, unless it came leased to this drainer a moment ago);
//! [`Outbox::ack`] removes it once both signals went out, or writes back which one did.
//! Sending is not the engine's business: the pipeline calls these around its exporter.

use super::keys;
use super::metrics::Series;
use super::tx::Tx;
use super::{Engine, EngineError};
use crate::model::{FinishedSpan, Time};
use crate::store::{now_epoch, Cond, Data, Key, KeyRange, Order, Record, Store, StoreError, Write};
use serde::{Deserialize, Serialize};

/// A batch waiting in the outbox. Spans and points are tracked apart: a collector that takes
/// traces but refuses metrics gets the spans once, and only the points again (and the other way
/// round).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportBatch {
    pub spans: Vec<FinishedSpan>,
    pub points: Vec<Series>,
    /// The spans were accepted by the collector.
    #[serde(default)]
    pub spans_sent: bool,
    /// The points were accepted by the collector.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub points_sent: bool,
    /// Epoch seconds until which a drainer holds this batch.
    #[serde(default)]
    pub lease_until: i64,
    /// Which drainer holds it ([`Engine::holder`]); 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_holder: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ExportBatch {
    /// Spans not sent yet.
    pub fn spans_due(&self) -> bool {
        !self.spans_sent && !self.spans.is_empty()
    }

    /// Points not sent yet.
    pub fn points_due(&self) -> bool {
        !self.points_sent && !self.points.is_empty()
    }
}

/// How long a drainer holds an outbox batch it exports.
pub const LEASE_SECS: i64 = 60;

/// Batches one page of [`Outbox::pending`] reads.
pub const PAGE: usize = 25;

/// The outbox as one engine (one drainer) sees it.
pub struct Outbox<'e> {
    engine: &'e Engine,
}

impl Engine {
    /// The outbox, with this engine as its drainer.
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox { engine: self }
    }
}

/// A batch read from the outbox, with the version it was read at.
pub struct Pending {
    key: Key,
    version: u64,
    expires_at: i64,
    pub batch: ExportBatch,
}

/// Where [`Outbox::pending`] goes on: after the last batch it read.
#[derive(Default)]
pub struct Cursor(String);

/// One page of the outbox.
pub struct Page {
    pub batches: Vec<Pending>,
    /// Batches that cannot be read (logged; they are left in place).
    pub unreadable: usize,
}

/// What [`Outbox::ack`] did with an exported batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Acked {
    /// Both signals went out: the batch is gone.
    Removed,
    /// Something is left to send: the batch was written back, unleased, with what went out.
    Kept,
    /// Another drainer changed the batch meanwhile: it is theirs now.
    Taken,
}

/// What waits in the outbox (for `GET /metrics`).
#[derive(Debug, Default)]
pub struct Waiting {
    /// Batches with spans not sent yet.
    pub traces: usize,
    /// Batches with points not sent yet.
    pub metrics: usize,
    /// When the oldest batch was settled.
    pub oldest: Option<Time>,
}

impl Outbox<'_> {
    fn store(&self) -> &dyn Store {
        self.engine.store.as_ref()
    }

    /// Puts what one settlement round derived in the outbox, in the settlement's transaction
    /// (nothing when it derived nothing). The batch comes leased to this drainer: its export
    /// right after needs no lease write.
    pub(crate) fn enqueue(
        &self,
        tx: &mut Tx<'_>,
        scope: &keys::Scope,
        spans: &[FinishedSpan],
        points: &[Series],
    ) {
        if spans.is_empty() && points.is_empty() {
            return;
        }
        let batch = ExportBatch {
            spans: spans.to_vec(),
            points: points.to_vec(),
            ..ExportBatch::default()
        };
        // The key is named by the unleased batch's content.
        let body = serde_json::to_vec(&batch).expect("batches serialize");
        let id = crate::model::ids::short_hash(&body);
        let key = keys::outbox_item(self.engine.now(), scope, &id);
        let batch = ExportBatch {
            lease_until: now_epoch() + LEASE_SECS,
            lease_holder: self.engine.holder(),
            ..batch
        };
        tx.absent(&key);
        tx.put(key, &batch, self.engine.settings.ttl_open_secs);
    }

    /// The next page of batches after `cursor` (which moves past it); `None` at the end.
    pub async fn pending(&self, cursor: &mut Cursor) -> Result<Option<Page>, StoreError> {
        let records = self
            .store()
            .query(
                keys::OUTBOX,
                KeyRange::all().starting_at(cursor.0.as_str()),
                PAGE,
                Order::Ascending,
            )
            .await?;
        let Some(last) = records.last() else {
            return Ok(None);
        };
        cursor.0 = format!("{}\u{0}", last.key.sk);
        let mut page = Page {
            batches: Vec::with_capacity(records.len()),
            unreadable: 0,
        };
        for rec in records {
            match rec.data.decode::<ExportBatch>() {
                Ok(batch) => page.batches.push(Pending {
                    key: rec.key,
                    version: rec.version,
                    expires_at: rec.expires_at,
                    batch,
                }),
                Err(_) => {
                    tracing::error!(key = %rec.key.sk, "an outbox batch cannot be read; it is left in place");
                    page.unreadable += 1;
                }
            }
        }
        Ok(Some(page))
    }

    /// Takes `pending` for an export; false when another drainer holds it. A batch this drainer
    /// settled a moment ago is leased to it already (no write); one whose lease is half gone is
    /// leased again, so that it cannot run out during the export. A signal with nothing in it
    /// counts as sent.
    pub async fn lease(&self, pending: &mut Pending) -> Result<bool, EngineError> {
        let now = now_epoch();
        let holder = self.engine.holder();
        let batch = &mut pending.batch;
        let mine = batch.lease_holder == holder && batch.lease_until - LEASE_SECS / 2 > now;
        if batch.lease_until > now && !mine {
            return Ok(false);
        }
        if !mine {
            batch.lease_until = now + LEASE_SECS;
            batch.lease_holder = holder;
            if !self.put_if(pending).await? {
                return Ok(false);
            }
        }
        let batch = &mut pending.batch;
        batch.points_sent |= batch.points.is_empty();
        batch.spans_sent |= batch.spans.is_empty();
        Ok(true)
    }

    /// Records an export of a leased batch: removed when both signals went out, otherwise
    /// written back at once with what did go marked as sent (spans are then never sent again,
    /// points only once more) and the lease released.
    pub async fn ack(&self, mut pending: Pending) -> Result<Acked, EngineError> {
        if !(pending.batch.spans_sent && pending.batch.points_sent) {
            pending.batch.lease_until = 0;
            pending.batch.lease_holder = 0;
            return Ok(if self.put_if(&mut pending).await? {
                Acked::Kept
            } else {
                Acked::Taken
            });
        }
        let delete = Write::Delete {
            key: pending.key,
            cond: Cond::Version(pending.version),
        };
        match self.store().commit(vec![delete]).await {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => {
                // The one write after the spans went out: if it fails, the batch goes out again
                // once its lease has run out, as it would had the process stopped here.
                tracing::warn!(error = %e, "removing an exported batch from the outbox failed");
            }
        }
        Ok(Acked::Removed)
    }

    /// Rewrites a batch if it still has the version read (which then moves on); false when
    /// another drainer changed it.
    async fn put_if(&self, pending: &mut Pending) -> Result<bool, EngineError> {
        let record = Record {
            key: pending.key.clone(),
            version: pending.version + 1,
            expires_at: pending.expires_at,
            data: Data::encode(&pending.batch).expect("batch serializes"),
        };
        let cond = Cond::Version(pending.version);
        match self.store().commit(vec![Write::Put { record, cond }]).await {
            Ok(()) => {
                pending.version += 1;
                Ok(true)
            }
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Number of batches waiting, counted up to `limit`.
    pub async fn count(&self, limit: usize) -> Result<usize, StoreError> {
        let all = self
            .store()
            .query(keys::OUTBOX, KeyRange::all(), limit, Order::Ascending)
            .await?;
        Ok(all.len())
    }

    /// What waits among the first `cap` batches: one query; only the flags and lengths are
    /// read, the spans themselves are not parsed.
    pub async fn waiting(&self, cap: usize) -> Result<Waiting, StoreError> {
        #[derive(Deserialize)]
        struct Flags {
            #[serde(default)]
            spans: Vec<serde::de::IgnoredAny>,
            #[serde(default)]
            points: Vec<serde::de::IgnoredAny>,
            #[serde(default)]
            spans_sent: bool,
            #[serde(default)]
            points_sent: bool,
        }
        let outbox = self
            .store()
            .query(keys::OUTBOX, KeyRange::all(), cap, Order::Ascending)
            .await?;
        let mut waiting = Waiting {
            oldest: outbox.first().and_then(|r| settled_at(&r.key.sk)),
            ..Waiting::default()
        };
        for rec in &outbox {
            if let Ok(b) = rec.data.decode::<Flags>() {
                waiting.traces += usize::from(!b.spans_sent && !b.spans.is_empty());
                waiting.metrics += usize::from(!b.points_sent && !b.points.is_empty());
            }
        }
        Ok(waiting)
    }
}

/// The settle time an outbox sort key starts with ([`keys::outbox_item`]).
fn settled_at(sk: &str) -> Option<Time> {
    let (at, _) = sk.split_once('#')?;
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    Some(at.with_timezone(&chrono::Utc))
}
