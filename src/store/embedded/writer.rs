//! Group commit: the one thread that writes the embedded store. Callers hand it their write sets
//! through a channel; it takes every set waiting at that moment, applies them in ONE redb write
//! transaction — each set all-or-nothing, its conditions checked against the records as the sets
//! before it in the batch left them — and commits durably once. Each caller is answered only after
//! that commit, so under load many deliveries share one fsync, and a lone delivery still takes one.

use super::{backend, encode_key, encode_value, live_version, RECORDS};
use crate::store::{now_epoch, Cond, StoreError, StoreResult, Write};
use redb::{Database, ReadableTable, Table};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// At most this many write sets go into one transaction.
pub(super) const MAX_BATCH: usize = 512;

/// Counters of the writer, for tests, benches and serve's log.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Write sets handed to the writer.
    pub submitted: AtomicU64,
    /// Write sets answered.
    pub answered: AtomicU64,
    /// Durable commits (each one fsync of the file).
    pub durable_commits: AtomicU64,
}

/// What the writer is asked to do.
pub(super) enum Job {
    /// Apply a write set atomically; answers with the number of writes.
    Commit(Vec<Write>, oneshot::Sender<StoreResult<usize>>),
    /// Remove these raw keys if they are still expired; answers with how many were removed.
    DeleteExpired(Vec<Vec<u8>>, oneshot::Sender<StoreResult<usize>>),
    /// Block the writer until the sender is dropped (tests: gather a batch on purpose).
    Pause(mpsc::Receiver<()>),
}

impl Job {
    fn answer(self, result: StoreResult<usize>) {
        match self {
            Job::Commit(_, reply) | Job::DeleteExpired(_, reply) => {
                let _ = reply.send(result);
            }
            Job::Pause(_) => {}
        }
    }
}

/// Runs until every sender is gone.
pub(super) fn run(db: Arc<Database>, jobs: mpsc::Receiver<Job>, stats: Arc<WriterStats>) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        if let Job::Pause(until) = first {
            let _ = until.recv();
            continue;
        }
        // Everything waiting now joins the batch (a pause ends it and waits for the next turn).
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(Job::Pause(until)) => {
                    carried = Some(Job::Pause(until));
                    break;
                }
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        apply_batch(&db, batch, &stats);
        stats.answered.fetch_add(n, Ordering::Relaxed);
    }
}

/// Applies one job at once on the calling thread (the in-memory store).
pub(super) fn apply_now(db: &Database, job: Job, stats: &WriterStats) {
    apply_batch(db, vec![job], stats);
    stats.answered.fetch_add(1, Ordering::Relaxed);
}

/// One transaction for the whole batch; every caller is answered after the commit (or its
/// failure).
fn apply_batch(db: &Database, batch: Vec<Job>, stats: &WriterStats) {
    let now = now_epoch();
    let mut results: Vec<StoreResult<usize>> = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<bool, StoreError> {
        let tx = db.begin_write().map_err(backend)?;
        let mut changed = false;
        {
            let mut table = tx.open_table(RECORDS).map_err(backend)?;
            for job in &batch {
                let r = match job {
                    Job::Commit(writes, _) => apply_set(&mut table, writes, now)?,
                    Job::DeleteExpired(keys, _) => delete_expired(&mut table, keys, now)?,
                    Job::Pause(_) => Ok(0),
                };
                changed |= matches!(r, Ok(n) if n > 0);
                results.push(r);
            }
        }
        if changed {
            tx.commit().map_err(backend)?;
            stats.durable_commits.fetch_add(1, Ordering::Relaxed);
        } else {
            tx.abort().map_err(backend)?;
        }
        Ok(changed)
    })();
    match outcome {
        Ok(_) => {
            for (job, r) in batch.into_iter().zip(results) {
                job.answer(r);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in batch {
                job.answer(Err(StoreError::Backend(msg.clone())));
            }
        }
    }
}

/// Applies one caller's writes if all of its conditions hold. The outer error is a storage
/// failure (the whole batch fails); the inner one is this caller's own (a conflict).
fn apply_set(
    table: &mut Table<&[u8], &[u8]>,
    writes: &[Write],
    now: i64,
) -> Result<StoreResult<usize>, StoreError> {
    // Checked first, against the table as the earlier sets left it and this set's own writes.
    let mut own: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
    let mut encoded = Vec::with_capacity(writes.len());
    for write in writes {
        let key = write.key();
        let raw = encode_key(&key.pk, &key.sk);
        let cond = match write {
            Write::Put { cond, .. } | Write::Delete { cond, .. } => *cond,
        };
        if cond != Cond::Any {
            let current: Option<u64> = match own.get(&raw) {
                Some(v) => *v,
                None => match table.get(raw.as_slice()).map_err(backend)? {
                    Some(v) => live_version(v.value(), now)?,
                    None => None,
                },
            };
            let holds = match (cond, current) {
                (Cond::Absent, None) => true,
                (Cond::Version(v), Some(found)) => found == v,
                _ => false,
            };
            if !holds {
                return Ok(Err(StoreError::Conflict));
            }
        }
        let value = match write {
            Write::Put { record, .. } => {
                own.insert(raw.clone(), Some(record.version));
                Some(encode_value(record))
            }
            Write::Delete { .. } => {
                own.insert(raw.clone(), None);
                None
            }
        };
        encoded.push((raw, value));
    }
    for (raw, value) in &encoded {
        match value {
            Some(v) => {
                table
                    .insert(raw.as_slice(), v.as_slice())
                    .map_err(backend)?;
            }
            None => {
                table.remove(raw.as_slice()).map_err(backend)?;
            }
        }
    }
    Ok(Ok(encoded.len()))
}

fn delete_expired(
    table: &mut Table<&[u8], &[u8]>,
    keys: &[Vec<u8>],
    now: i64,
) -> Result<StoreResult<usize>, StoreError> {
    let mut removed = 0;
    for raw in keys {
        let expired = match table.get(raw.as_slice()).map_err(backend)? {
            Some(v) => super::expires_at(v.value())? <= now,
            None => false,
        };
        if expired {
            table.remove(raw.as_slice()).map_err(backend)?;
            removed += 1;
        }
    }
    Ok(Ok(removed))
}
