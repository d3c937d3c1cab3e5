//! Group commit: the one thread that writes the embedded store. Callers hand it their write sets
//! through a channel; it takes every set waiting at that moment, applies them in ONE redb write
//! transaction — each set all-or-nothing, its conditions checked against the records as the sets
//! before it in the batch left them — and commits durably once. Sets that arrive while the batch is
//! being applied join it before the commit. Each caller is answered only after that commit, so
//! under load many deliveries share one fsync, and a lone delivery still takes one.

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
        let mut batch = vec![first];
        let mut more = || match jobs.try_recv() {
            // A pause ends the batch and waits for the next turn.
            Ok(Job::Pause(until)) => {
                carried = Some(Job::Pause(until));
                None
            }
            Ok(job) => Some(job),
            Err(_) => None,
        };
        let n = apply_batch(&db, &mut batch, &mut more, &stats);
        stats.answered.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Applies one job at once on the calling thread (the in-memory store).
pub(super) fn apply_now(db: &Database, job: Job, stats: &WriterStats) {
    apply_batch(db, &mut vec![job], &mut || None, stats);
    stats.answered.fetch_add(1, Ordering::Relaxed);
}

/// One transaction for the batch: the jobs given, then those `more` hands over (everything
/// waiting, and whatever arrives while they are applied), up to [`MAX_BATCH`]. Every caller is
/// answered after the commit (or its failure). Returns how many were answered.
fn apply_batch(
    db: &Database,
    batch: &mut Vec<Job>,
    more: &mut dyn FnMut() -> Option<Job>,
    stats: &WriterStats,
) -> usize {
    let now = now_epoch();
    let mut results: Vec<StoreResult<usize>> = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<bool, StoreError> {
        let tx = db.begin_write().map_err(backend)?;
        let mut changed = false;
        {
            let mut table = tx.open_table(RECORDS).map_err(backend)?;
            let mut next = 0;
            loop {
                if next == batch.len() {
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                    match more() {
                        Some(job) => batch.push(job),
                        None => break,
                    }
                }
                let r = match &batch[next] {
                    Job::Commit(writes, _) => apply_set(&mut table, writes, now)?,
                    Job::DeleteExpired(keys, _) => delete_expired(&mut table, keys, now)?,
                    Job::Pause(_) => Ok(0),
                };
                changed |= matches!(r, Ok(n) if n > 0);
                results.push(r);
                next += 1;
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
    let answered = batch.len();
    match outcome {
        Ok(_) => {
            for (job, r) in batch.drain(..).zip(results) {
                job.answer(r);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in batch.drain(..) {
                job.answer(Err(StoreError::Backend(msg.clone())));
            }
        }
    }
    answered
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
            if !cond.holds(current) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Key, Record};

    fn put(pk: &str, cond: Cond) -> Write {
        Write::Put {
            record: Record {
                key: Key::one(pk),
                version: 1,
                expires_at: now_epoch() + 60,
                data: serde_json::json!(pk).into(),
            },
            cond,
        }
    }

    #[test]
    fn sets_handed_over_while_the_batch_is_applied_share_its_commit() {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(RECORDS).unwrap();
        w.commit().unwrap();
        let stats = WriterStats::default();
        let mut answers = Vec::new();
        let mut job = |writes: Vec<Write>| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            Job::Commit(writes, reply)
        };
        let mut batch = vec![job(vec![put("a", Cond::Absent)])];
        // Two arrive "during" the batch; the second conflicts with the first set.
        let mut late = vec![
            job(vec![put("a", Cond::Absent)]),
            job(vec![put("b", Cond::Absent)]),
        ]
        .into_iter();
        let answered = apply_batch(&db, &mut batch, &mut || late.next(), &stats);
        assert_eq!(answered, 3);
        assert_eq!(
            stats.durable_commits.load(Ordering::Relaxed),
            1,
            "one commit"
        );
        let got: Vec<_> = answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("answered"))
            .collect();
        assert!(matches!(got[0], Ok(1)), "{:?}", got[0]);
        assert!(
            matches!(got[1], Err(StoreError::Conflict)),
            "checked against the set before it in the batch: {:?}",
            got[1]
        );
        assert!(matches!(got[2], Ok(1)), "{:?}", got[2]);
    }
}
