//! The span lifecycle engine: vendor-free. It takes a delivery's normalized inputs and the
//! store, and yields finished spans and metric points, keeping open spans, link indexes and
//! cumulative metric series in the store. It knows nothing of HTTP, AWS or OTLP.
//!
//! One delivery is applied in one optimistic transaction ([`tx::Tx`]): a batched read, the
//! lifecycle rules, and one atomic commit that records the delivery ID together with every state
//! change and the batch to export (the outbox). A redelivery finds its delivery record and changes
//! nothing; a concurrent writer makes the commit fail and the attempt starts again.

pub mod flow;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod outbox;
pub mod tx;

use crate::config::Config;
use crate::model::{FinishedSpan, Input};
use crate::store::{Store, StoreError};
use chrono::Utc;
use metrics::{Delta, Series};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tx::Tx;

/// How many times a delivery is attempted when concurrent writers keep conflicting.
const MAX_ATTEMPTS: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {0} attempts: other writers kept changing the same records")]
    Contention(u32),
}

/// What the engine did with one delivery.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    /// The delivery had been applied before: nothing changed.
    pub duplicate: bool,
    pub opened: u32,
    pub updated: u32,
    pub finished: Vec<FinishedSpan>,
    pub points: Vec<Series>,
    /// The outbox record holding `finished` and `points` until they are exported.
    #[serde(skip)]
    pub outbox: Option<crate::store::Key>,
    /// Earlier exports are pending (a previous export failed): drain the outbox.
    pub pending_exports: bool,
    /// Store requests this delivery took (reads and the commit).
    pub requests: u32,
}

/// What processing one input adds to the delivery's result.
#[derive(Default)]
pub struct Effects {
    pub finished: Vec<FinishedSpan>,
    pub deltas: Vec<Delta>,
    pub opened: u32,
    pub updated: u32,
}

/// A batch waiting in the outbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExportBatch {
    pub spans: Vec<FinishedSpan>,
    pub points: Vec<Series>,
    /// Epoch seconds until which a drainer holds this batch.
    #[serde(default)]
    pub lease_until: i64,
}

#[derive(Serialize, Deserialize)]
struct DeliveryRecord {
    source: String,
    at: chrono::DateTime<Utc>,
    finished: usize,
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        Engine { store, config }
    }

    /// Applies one delivery exactly once.
    pub async fn apply(
        &self,
        source: &str,
        delivery_id: &str,
        inputs: &[Input],
    ) -> Result<Applied, EngineError> {
        let mut requests = 0;
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new(self.store.as_ref());
            let attempt = self.attempt(&mut tx, source, delivery_id, inputs).await;
            requests += tx.requests;
            match attempt {
                Ok(mut applied) => {
                    if applied.duplicate {
                        applied.requests = requests;
                        return Ok(applied);
                    }
                    let reads = tx.requests;
                    match tx.commit().await {
                        Ok(total) => {
                            applied.requests = requests + (total - reads);
                            return Ok(applied);
                        }
                        Err(StoreError::Conflict) => {
                            requests += 1;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(EngineError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Contention(MAX_ATTEMPTS))
    }

    async fn attempt(
        &self,
        tx: &mut Tx<'_>,
        source: &str,
        delivery_id: &str,
        inputs: &[Input],
    ) -> Result<Applied, EngineError> {
        let delivery_key = keys::delivery(source, delivery_id);
        // One read for the delivery record, the outbox flag and every record the inputs need.
        let mut wanted = vec![delivery_key.clone(), keys::outbox_flag()];
        for input in inputs {
            wanted.extend(flow::keys_for(input, source));
        }
        tx.load(wanted).await?;
        let pending_exports = tx.get(&keys::outbox_flag()).is_some();
        if tx.get(&delivery_key).is_some() {
            return Ok(Applied {
                duplicate: true,
                pending_exports,
                ..Applied::default()
            });
        }
        let mut fx = Effects::default();
        for input in inputs {
            match input {
                Input::Work(ev) => lifecycle::work(self, tx, source, ev, &mut fx).await?,
                Input::Push(push) => flow::push(self, tx, source, push).await?,
            }
        }
        let points = self.apply_metrics(tx, &fx.deltas).await?;
        let finished = fx.finished;
        tx.put(
            delivery_key,
            &DeliveryRecord {
                source: source.to_string(),
                at: Utc::now(),
                finished: finished.len(),
            },
            self.config.ttl_delivery_secs,
        );
        let outbox = if finished.is_empty() && points.is_empty() {
            None
        } else {
            let key = keys::outbox_item(source, delivery_id);
            let batch = ExportBatch {
                spans: finished.clone(),
                points: points.clone(),
                lease_until: 0,
            };
            tx.put(key.clone(), &batch, self.config.ttl_open_secs);
            Some(key)
        };
        Ok(Applied {
            duplicate: false,
            opened: fx.opened,
            updated: fx.updated,
            finished,
            points,
            outbox,
            pending_exports,
            requests: 0,
        })
    }

    /// Applies metric deltas to their stored series (one more read), returning the new values.
    async fn apply_metrics(
        &self,
        tx: &mut Tx<'_>,
        deltas: &[Delta],
    ) -> Result<Vec<Series>, EngineError> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<_> = deltas
            .iter()
            .map(|d| keys::series(&metrics::series_id(d.name, &d.labels)))
            .collect();
        tx.load(ids.clone()).await?;
        let now = metrics::time_ns(Utc::now());
        let mut touched: Vec<(crate::store::Key, Series)> = Vec::new();
        for (d, key) in deltas.iter().zip(ids) {
            let mut series = match touched.iter().position(|(k, _)| *k == key) {
                Some(i) => touched.remove(i).1,
                None => tx
                    .data::<Series>(&key)
                    .unwrap_or_else(|| Series::new(d.name, d.labels.clone(), now)),
            };
            series.apply(d.value, now);
            touched.push((key, series));
        }
        // Series never expire: they are the cumulative totals.
        const FOREVER: i64 = 100 * 365 * 86_400;
        for (key, s) in &touched {
            tx.put(key.clone(), s, FOREVER);
        }
        Ok(touched.into_iter().map(|(_, s)| s).collect())
    }
}
