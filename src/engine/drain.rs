//! Settling: the second half of the engine. A scope whose facts are due (their settle period has
//! passed) is read whole, its derivations recomputed, the difference against its metric ledger
//! applied to the cumulative series, and its settled spans built and put in the outbox, all in
//! one optimistic transaction, so two drainers never settle the same span twice.

use super::dora::{self, Index};
use super::facts::{self, ItemRecord};
use super::keys::{self, Scope};
use super::memory::{MemoryBudget, Reservation};
use super::metrics::{self, Series};
use super::scope::{self, Contribution, GenRef, PushFact, Summary, Tally};
use super::seal::{self, Checkpoint};
use super::spans::{self, Resolver};
use super::stages::StageName;
use super::tx::{Budget, Tx};
use super::{backoff, decode, Engine, EngineError, MAX_ATTEMPTS};
use crate::model::{FinishedSpan, Kind, Time};
use crate::store::{Cond, KeyRange, Order, Record, StoreError, Write};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// What one settle pass did.
#[derive(Debug, Default)]
pub struct Settled {
    /// Spans settled (and put in the outbox), in a fixed order.
    pub spans: Vec<FinishedSpan>,
    /// Series whose value changed.
    pub points: Vec<Series>,
    pub scopes: usize,
    /// Due wake-up markers are left for the next drain: the settle budget ran out.
    pub more: bool,
    /// Scopes whose settlement failed this pass: each was put aside ([`QUARANTINE_FIRST`],
    /// doubling up to [`QUARANTINE_MOST`]) while the others settled and exported.
    pub failed: Vec<Failed>,
}

/// What settling one scope did.
struct ScopeSettled {
    spans: Vec<FinishedSpan>,
    points: Vec<Series>,
    /// Nothing is left to settle: its wake-up markers were removed.
    finished: bool,
}

/// A scope whose settlement failed, and why.
#[derive(Debug)]
pub struct Failed {
    pub scope: Scope,
    pub error: EngineError,
    /// Failures in a row, this one included.
    pub failures: u32,
    /// When it is tried again.
    pub retry_at: Time,
}

/// How long a scope whose settlement failed is left alone, the first time; it doubles with
/// every failure in a row up to [`QUARANTINE_MOST`].
pub const QUARANTINE_FIRST: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
pub const QUARANTINE_MOST: chrono::TimeDelta = chrono::TimeDelta::seconds(3600);

/// What a wake-up marker holds: nothing, or how many settlements of its scope failed in a row.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Marker {
    #[serde(default, skip_serializing_if = "is_zero")]
    failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Wake-up markers read per pass of a settle, over every partition of markers; a settle reads
/// again while a query came back full.
const MARKERS_PER_PASS: usize = 500;
/// Wake-up markers read per query of one partition ([`keys::pending_partitions`]).
const MARKERS_PER_SHARD: usize = MARKERS_PER_PASS.div_ceil(keys::PENDING_SHARDS as usize + 1);
/// Wall time in which a settle starts new scopes (it always settles one): a backlog (a burst,
/// a replayed history) is worked off over several drains, each leaving time to export, rather
/// than 500 markers per drain or one drain that outlasts a 15 s Lambda.
pub const SETTLE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// Repositories settled at once by a drain (each its own transactions).
pub const SCOPES_AT_ONCE: usize = 8;
/// Most records one settlement pass seals ([`seal::plan`]): a repository with a long unsealed
/// history (a store written before sealing, a backfill) is sealed over several drains.
pub const SEAL_MOST: usize = 2_000;

/// One transaction's share of a scope's settling.
struct Round {
    spans: Vec<FinishedSpan>,
    points: Vec<Series>,
    /// Work is left for another round.
    more: bool,
}

impl Engine {
    /// Settles every scope whose facts are due at `now`, or as many as the engine's settle
    /// budget allows ([`Settled::more`] then says that due markers are left).
    #[tracing::instrument(name = "engine.settle", skip(self))]
    pub async fn settle(&self, now: Time) -> Result<Settled, EngineError> {
        let started = std::time::Instant::now();
        let due = KeyRange::through_prefix(&format!("{}#", keys::time_sk(now)));
        let mut out = Settled::default();
        // A scope put aside after a failure waits for the wall clock, not for the horizon
        // (`drain_all` looks a day ahead).
        let wall = keys::time_sk(self.now());
        // Each partition of wake-up markers (the shards, and the one older versions wrote) is
        // read with its own bounded query and its own cursor (`None`: read to its end): a pass
        // reads on only where the previous one came back full, and what a pass leaves behind
        // waits for a drain.
        let partitions = keys::pending_partitions();
        let mut cursors: Vec<Option<String>> = vec![Some(String::new()); partitions.len()];
        loop {
            let markers = self.next_markers(&partitions, &mut cursors, &due).await?;
            let full = cursors.iter().any(Option::is_some);
            let lanes = Lanes::of(due_by_scope(markers, &wall));
            if !self.settle_lanes(lanes, now, started, &mut out).await {
                out.more = true;
                return Ok(out);
            }
            if !full {
                return Ok(out);
            }
            if started.elapsed() >= self.settle_budget {
                out.more = true;
                return Ok(out);
            }
        }
    }

    /// One pass over the partitions of wake-up markers: the next page of each whose cursor is
    /// still open, one query after the other (17 small queries at once would queue behind each
    /// other at the store anyway, and hold up the deliveries waiting with them).
    async fn next_markers(
        &self,
        partitions: &[String],
        cursors: &mut [Option<String>],
        due: &KeyRange,
    ) -> Result<Vec<Record>, EngineError> {
        let mut markers = Vec::new();
        for (pk, cursor) in partitions.iter().zip(cursors.iter_mut()) {
            let Some(from) = cursor.take() else { continue };
            let range = due.clone().starting_at(from);
            let page = self
                .store
                .query(pk, range, MARKERS_PER_SHARD, Order::Ascending)
                .await?;
            *cursor = (page.len() == MARKERS_PER_SHARD)
                .then(|| page.last().map(|last| format!("{}\u{0}", last.key.sk)))
                .flatten();
            markers.extend(page);
        }
        Ok(markers)
    }

    /// Settles the scopes of both lanes, items first, as long as the budget allows; `false`
    /// when some are left for the next drain.
    async fn settle_lanes(
        &self,
        lanes: Lanes,
        now: Time,
        started: std::time::Instant,
        out: &mut Settled,
    ) -> bool {
        let begun = AtomicUsize::new(out.scopes);
        let may_start = |_: &(Scope, Vec<Record>)| {
            if begun.load(Relaxed) > 0 && started.elapsed() >= self.settle_budget {
                return false;
            }
            begun.fetch_add(1, Relaxed);
            true
        };
        for (lane, at_once) in [(lanes.items, 1), (lanes.repos, self.scopes_at_once)] {
            let todo = lane.len();
            let mut settled = futures_util::stream::iter(lane.into_iter().take_while(may_start))
                .map(|(scope, markers)| async move {
                    let deadline = started + self.settle_budget;
                    let result = self.settle_scope(&scope, &markers, now, deadline).await;
                    match result {
                        Ok(settled) => Ok(settled),
                        Err(error) => Err(self.quarantine(scope, &markers, error).await),
                    }
                })
                .buffered(at_once);
            let mut done = 0;
            let mut unfinished = false;
            while let Some(result) = settled.next().await {
                match result {
                    Ok(scope) => {
                        out.spans.extend(scope.spans);
                        out.points.extend(scope.points);
                        out.scopes += 1;
                        unfinished |= !scope.finished;
                    }
                    Err(failed) => out.failed.push(failed),
                }
                done += 1;
            }
            if done < todo || unfinished {
                return false;
            }
        }
        true
    }

    /// Puts a scope whose settlement failed aside, so that one repository (a record too large,
    /// a bug, a store error about its partition) never stops the others or the export: its
    /// wake-up markers move to a later time, counting the failures in a row, and the next
    /// drains leave it alone until then. A marker a delivery rewrote meanwhile stays as it is.
    async fn quarantine(&self, scope: Scope, markers: &[Record], error: EngineError) -> Failed {
        let failures = 1 + markers
            .iter()
            .filter_map(|m| m.data.decode::<Marker>().ok())
            .map(|m| m.failures)
            .max()
            .unwrap_or(0);
        let wait =
            (QUARANTINE_FIRST * 2i32.saturating_pow(failures.min(16) - 1)).min(QUARANTINE_MOST);
        let retry_at = self.now() + wait;
        tracing::error!(
            scope = %scope,
            error = %error,
            failures,
            retry_in_secs = wait.num_seconds(),
            "settlement failed; the scope is put aside and retried later, the others go on"
        );
        let version = markers.iter().map(|m| m.version).max().unwrap_or(1);
        for m in markers {
            let mut tx = Tx::new(self.store.as_ref());
            tx.seen(m);
            tx.delete(m.key.clone());
            tx.put_unread(
                keys::pending(retry_at, &scope),
                &Marker { failures },
                self.settings.ttl_open_secs,
                version,
            );
            match tx.commit().await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => {
                    tracing::warn!(scope = %scope, error = %e, "a failed scope's wake-up marker stays where it was");
                }
            }
        }
        Failed {
            scope,
            error,
            failures,
            retry_at,
        }
    }

    /// Settles one scope in rounds (each one transaction) until nothing is left or `deadline`
    /// passed (a repository with a long backlog is worked off over several drains: its
    /// markers stay until it is done).
    async fn settle_scope(
        &self,
        scope: &Scope,
        markers: &[Record],
        now: Time,
        deadline: std::time::Instant,
    ) -> Result<ScopeSettled, EngineError> {
        let mut spans = Vec::new();
        let mut points: BTreeMap<String, Series> = BTreeMap::new();
        // The scope as this pass read and derived it, with each committed round's writes.
        let mut view: Option<View> = None;
        // Rounds, each one transaction within DynamoDB's limits, until nothing is left to do.
        'rounds: loop {
            for attempt in 0..MAX_ATTEMPTS {
                if attempt > 0 {
                    backoff(attempt).await;
                }
                if attempt > 0 || self.reread_every_round {
                    // A conflict: a delivery wrote what this pass read; read it again.
                    view = None;
                }
                let mut tx = Tx::new(self.store.as_ref());
                let result = self.settle_attempt(&mut tx, scope, now, &mut view).await;
                if result.is_err() {
                    view = None;
                }
                match result {
                    Ok(round) => match tx.commit().await {
                        Ok(_) => {
                            spans.extend(round.spans);
                            for p in round.points {
                                points.insert(metrics::series_id(&p.name, &p.labels), p);
                            }
                            if !round.more {
                                break 'rounds;
                            }
                            if std::time::Instant::now() >= deadline {
                                return Ok(ScopeSettled {
                                    spans,
                                    points: points.into_values().collect(),
                                    finished: false,
                                });
                            }
                            continue 'rounds;
                        }
                        Err(StoreError::Conflict) => {
                            view = None;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    },
                    Err(EngineError::Store(StoreError::Conflict)) => continue,
                    Err(e) => return Err(e),
                }
            }
            return Err(EngineError::Contention(MAX_ATTEMPTS));
        }
        self.seal_after_pass(scope, view).await;
        // The wake-up markers go last, each removed on its own: one that a delivery rewrote
        // meanwhile stays for the next pass without keeping the others, and on DynamoDB a lone
        // conditional delete costs 1 WCU where the same delete inside a transaction costs 2.
        let deletes: Vec<Write> = markers
            .iter()
            .map(|m| delete_if(m.key.clone(), m.version))
            .collect();
        self.commit_each(deletes).await?;
        Ok(ScopeSettled {
            spans,
            points: points.into_values().collect(),
            finished: true,
        })
    }

    /// One round: the owners whose contributions changed and the due items, within the
    /// transaction's budget. The scope is read and derived by the pass's first round (or after
    /// a conflict) and kept in `view` for the next: derive reads nothing a round writes (the
    /// exported marks, the tallies), so the pass folds its own writes into the view instead of
    /// reading and deriving the whole repository again every 16 items. A delivery that lands
    /// meanwhile either conflicts with a write (the round is tried again on a fresh read) or
    /// left a wake-up marker for the next pass.
    async fn settle_attempt(
        &self,
        tx: &mut Tx<'_>,
        scope: &Scope,
        now: Time,
        view: &mut Option<View>,
    ) -> Result<Round, EngineError> {
        let config = &self.settings;
        let budget = Budget::of(self.store.limits());
        let v = match view.take() {
            Some(mut v) => {
                tx.set_versions(std::mem::take(&mut v.versions));
                v
            }
            None => {
                let read_at = self.now();
                let (records, derived) = self.read_and_derive(tx, scope).await?;
                View {
                    records,
                    derived,
                    versions: HashMap::new(),
                    read_at,
                }
            }
        };
        let (records, derived) = (&v.records, &v.derived);
        // Summaries to rewrite, each once: a new ledger, generations exported.
        let mut rewrite: BTreeMap<String, Summary> = BTreeMap::new();
        let (moved, more_twins) = move_twins(records, budget.owners, &mut rewrite);
        let (changes, removed_ledgers, more_owners) = ledger_changes(
            tx,
            scope,
            records,
            derived,
            budget.owners.saturating_sub(moved),
            &mut rewrite,
        );
        // Samples are stamped with the wall clock, not the settle horizon (`drain_all` looks ahead).
        let points = self.apply_changes(tx, &changes, self.now()).await?;
        let (due, more_items) = due_items(records, config.settle_secs, now, budget.items);
        let spans_out = if due.is_empty() {
            Vec::new()
        } else {
            self.due_spans(tx, records, derived, &due, &mut rewrite)
                .await?
        };
        for (key, summary) in &rewrite {
            if records.sealed.contains(key) {
                tx.put(
                    keys::sealed_summary(scope, key),
                    summary,
                    config.ttl_open_secs,
                );
                continue;
            }
            let home = keys::summary(scope, key);
            if records.in_legacy.contains(key) {
                // Moved to its shard: written there only if no delivery wrote it meanwhile.
                tx.absent(&home);
                tx.delete(keys::legacy_summary(scope, key));
            }
            tx.put(home, summary, config.ttl_open_secs);
        }
        self.outbox().enqueue(tx, scope, &spans_out, &points);
        let mut v = v;
        v.fold(rewrite, &removed_ledgers);
        let mut partitions = keys::scope_partitions(scope);
        partitions.extend(keys::sealed_partitions(scope));
        v.versions = tx.versions_after();
        v.versions.retain(|k, _| partitions.contains(&k.pk));
        *view = Some(v);
        Ok(Round {
            spans: spans_out,
            points,
            more: more_twins || more_owners || more_items,
        })
    }

    /// Seals what the pass's view allows ([`Engine::sealing`]): the writes are worked out from
    /// the view, which is let go before they are made. A failure leaves the records live (the
    /// next pass seals them) and is logged.
    async fn seal_after_pass(&self, scope: &Scope, view: Option<View>) {
        let sealing = match &view {
            Some(v) => self.sealing(scope, v).await,
            None => Ok(None),
        };
        drop(view);
        let sealed = match sealing {
            Ok(Some(steps)) => self.store.commit_steps(steps).await.map_err(Into::into),
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        };
        if let Err(e) = sealed {
            tracing::warn!(scope = %scope, error = %e, "sealing failed; the records stay live");
        }
    }

    /// What a finished pass can seal ([`seal::plan`]), as three steps of lone writes for
    /// [`Store::commit_steps`], each safe if the next never comes: the sealed copies and the
    /// lookups that find them (a copy whose record is still live is ignored, the live one is
    /// newer), then the checkpoint (conditioned on the one the pass read: of two drainers, one
    /// seals), then the live copies' removal (each conditioned on the version the pass read: one
    /// a delivery rewrote meanwhile stays live, and the next settlement reads the whole history
    /// until it is sealed again). `None` when there is nothing to seal.
    async fn sealing(
        &self,
        scope: &Scope,
        v: &View,
    ) -> Result<Option<Vec<Vec<Write>>>, EngineError> {
        let records = &v.records;
        if !scope.is_repo() {
            return Ok(None);
        }
        let Some(plan) = seal::plan(
            &records.seal_view(),
            &v.derived,
            &self.settings,
            self.seal_most,
            // Records written since the pass read are looked up by later settlements; a margin
            // for a delivery that took its time (clock, store timeouts) to commit.
            v.read_at
                - chrono::TimeDelta::milliseconds(2 * self.settings.store_timeout_ms as i64)
                - chrono::TimeDelta::seconds(60),
        ) else {
            return Ok(None);
        };
        let ttl = self.settings.ttl_open_secs;
        let sealing: Vec<&Summary> = plan
            .summaries
            .iter()
            .filter_map(|k| summary_in(&records.summaries, k))
            .collect();
        let chosen: BTreeSet<&str> = plan.pushes.iter().map(String::as_str).collect();
        let pushes: Vec<&PushFact> = records
            .pushes
            .iter()
            .filter(|p| chosen.contains(p.after.as_str()))
            .collect();
        // The traces the sealed items' spans are in, fixed now.
        let idx = Index::new(&records.summaries);
        let trace_all = |r: &Resolver<'_>| sealing.iter().map(|s| r.trace(s, 0)).collect();
        let mut tx = Tx::new(self.store.as_ref());
        let traces: Vec<String> = self.resolved(&mut tx, &idx, &v.derived, trace_all).await?;
        let mut writes = self.lookup_writes(scope, &sealing, &pushes).await?;
        let version = chrono::Utc::now().timestamp_micros().max(1) as u64;
        for (s, trace) in sealing.iter().zip(traces) {
            let mut s = (*s).clone();
            s.sealed_trace = Some(trace);
            let key = keys::sealed_summary(scope, &s.key);
            writes.push(put_write(key, &s, ttl, version, Cond::Any)?);
        }
        for p in &pushes {
            writes.push(put_write(
                keys::sealed_push(scope, &p.after),
                *p,
                ttl,
                version,
                Cond::Any,
            )?);
        }
        let cpk = keys::checkpoint(scope);
        let cond = v
            .versions
            .get(&cpk)
            .map_or(Cond::Absent, |n| Cond::Version(*n));
        let next = v.versions.get(&cpk).map_or(1, |n| n + 1);
        let cp = put_write(cpk, &plan.checkpoint, ttl, next, cond)?;
        let live_keys = plan
            .summaries
            .iter()
            .map(|k| keys::summary(scope, k))
            .chain(plan.pushes.iter().map(|p| keys::push(scope, p)));
        let deletes: Vec<Write> = live_keys
            .filter_map(|k| v.versions.get(&k).map(|n| delete_if(k.clone(), *n)))
            .collect();
        Ok(Some(vec![writes, vec![cp], deletes]))
    }

    /// The lookups of what is being sealed, each merged with the stored one and conditioned on
    /// it (two drainers sealing at once conflict here rather than lose an entry).
    async fn lookup_writes(
        &self,
        scope: &Scope,
        sealing: &[&Summary],
        pushes: &[&PushFact],
    ) -> Result<Vec<Write>, EngineError> {
        let mut lookups: BTreeMap<seal::Name, seal::Lookup> = BTreeMap::new();
        for s in sealing {
            for n in seal::names_of_summary(s) {
                lookups.entry(n).or_default().summaries.push(s.key.clone());
            }
        }
        for p in pushes {
            for n in seal::names_of_push(p) {
                lookups.entry(n).or_default().pushes.push(p.after.clone());
            }
        }
        let lookup_keys: Vec<crate::store::Key> =
            lookups.keys().map(|n| lookup_key(scope, n)).collect();
        let mut tx = Tx::new(self.store.as_ref());
        let stored = tx.fetch(&lookup_keys).await?;
        let mut writes = Vec::new();
        for ((_, add), (key, old)) in lookups.into_iter().zip(lookup_keys.into_iter().zip(stored)) {
            let mut merged = seal::Lookup::default();
            merged.add(&add);
            let (cond, version) = match &old {
                Some(r) => {
                    merged.add(&r.data.decode().map_err(|e| corrupt(r, e))?);
                    (Cond::Version(r.version), r.version + 1)
                }
                None => (Cond::Absent, 1),
            };
            writes.push(put_write(
                key,
                &merged,
                self.settings.ttl_open_secs,
                version,
                cond,
            )?);
        }
        Ok(writes)
    }

    /// Commits each write on its own ([`Store::commit_steps`]); `false` if one conflicted.
    async fn commit_each(&self, writes: Vec<Write>) -> Result<bool, EngineError> {
        Ok(self.store.commit_steps(vec![writes]).await? == 1)
    }

    /// A scope's live records with the sealed ones they need, derived; every sealed record when
    /// a fact reaches before the checkpoint's cut ([`seal::needs_full`]).
    async fn read_and_derive(
        &self,
        tx: &mut Tx<'_>,
        scope: &Scope,
    ) -> Result<(ScopeRecords, dora::Derived), EngineError> {
        let config = &self.settings;
        let mut records = read_scope(tx, scope, &self.memory).await?;
        let derived = dora::derive(&records.summaries, &records.pushes, config);
        let sealed = records.checkpoint.is_some();
        let Some(why) = seal::needs_full(&records.seal_view(), &derived) else {
            if sealed {
                self.history_reads[0].fetch_add(1, Relaxed);
            }
            return Ok((records, derived));
        };
        self.history_reads[1].fetch_add(1, Relaxed);
        tracing::debug!(scope = %scope, why, "reading the sealed history whole");
        drop(derived);
        read_all_sealed(tx, scope, &mut records, &self.memory).await?;
        let derived = dora::derive(&records.summaries, &records.pushes, config);
        Ok((records, derived))
    }

    /// The spans of the due items' closed generations not exported yet, with their stage spans,
    /// in start order; each due item's summary marked with what went out.
    async fn due_spans(
        &self,
        tx: &mut Tx<'_>,
        records: &ScopeRecords,
        derived: &dora::Derived,
        due: &[&Summary],
        rewrite: &mut BTreeMap<String, Summary>,
    ) -> Result<Vec<FinishedSpan>, EngineError> {
        let idx = Index::new(&records.summaries);
        let items = load_items(tx, due.iter().map(|s| s.key.clone())).await?;
        // Generations exported in this round: a change's deploy stage goes out with whichever
        // of the change and its deployment is exported last.
        let exporting: BTreeSet<GenRef> = due.iter().flat_map(|s| unexported(s)).collect();
        // Deploy stages already out.
        let staged_before: BTreeSet<GenRef> = records
            .summaries
            .iter()
            .flat_map(|s| {
                s.deploy_staged.iter().map(|(key, gen)| GenRef {
                    key: key.clone(),
                    gen: *gen,
                })
            })
            .collect();
        let (mut spans_out, marks) = self
            .resolved(tx, &idx, derived, |resolver| {
                due_item_spans(resolver, due, &items, &exporting, staged_before.clone())
            })
            .await?;
        for (s, (exported, staged_here)) in due.iter().zip(marks) {
            let Some(exported) = exported else { continue };
            let updated = rewrite.entry(s.key.clone()).or_insert_with(|| (*s).clone());
            updated.exported = exported;
            updated.deploy_staged.extend(staged_here);
            updated.deploy_staged.sort();
        }
        spans_out.sort_by(|a, b| (a.start, &a.span_id).cmp(&(b.start, &b.span_id)));
        Ok(spans_out)
    }

    /// What `resolve` makes of the scope, with the items outside it that its parent chains
    /// name: it runs, the items it asked for and missed are read (one request), and it runs
    /// again, until it misses nothing new (at most one pass per hop a chain is followed,
    /// [`spans::MAX_DEPTH`]). Only the items a chain reaches are read: not every item that any
    /// summary of the scope names.
    async fn resolved<T>(
        &self,
        tx: &mut Tx<'_>,
        idx: &Index<'_>,
        derived: &dora::Derived,
        resolve: impl Fn(&Resolver<'_>) -> T,
    ) -> Result<T, EngineError> {
        let mut external: HashMap<String, Summary> = HashMap::new();
        let mut asked: BTreeSet<String> = BTreeSet::new();
        let mut pass = 0;
        loop {
            let resolver = Resolver::new(idx, &external, derived, self.settings.span_link_limit);
            let out = resolve(&resolver);
            let missing: Vec<String> = resolver
                .missing
                .take()
                .into_iter()
                .filter(|k| !asked.contains(k))
                .collect();
            pass += 1;
            if missing.is_empty() || pass > spans::MAX_DEPTH {
                return Ok(out);
            }
            asked.extend(missing.iter().cloned());
            for (k, rec) in load_items(tx, missing).await? {
                if let Some(s) = Summary::of(&k, &rec, chrono::DateTime::UNIX_EPOCH, None) {
                    external.insert(k, s);
                }
            }
        }
    }

    /// Applies the differences of tallies to their series.
    async fn apply_changes(
        &self,
        tx: &mut Tx<'_>,
        changes: &[Tally],
        now: Time,
    ) -> Result<Vec<Series>, EngineError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<_> = changes
            .iter()
            .map(|c| keys::series(&metrics::series_id(&c.name, &c.labels)))
            .collect();
        tx.load(ids.clone()).await?;
        let now_ns = metrics::time_ns(now);
        let mut touched: BTreeMap<crate::store::Key, Series> = BTreeMap::new();
        for (c, key) in changes.iter().zip(ids) {
            if !touched.contains_key(&key) {
                let known: Option<Series> = decode(tx, &key)?;
                let Some(def) = metrics::CATALOGUE.iter().find(|d| c.name == d.name) else {
                    continue;
                };
                touched.insert(
                    key.clone(),
                    known.unwrap_or_else(|| Series::new(def.name, c.labels.clone(), now_ns)),
                );
            }
            let series = touched.get_mut(&key).expect("inserted above");
            series.apply_tally(c, now_ns);
        }
        // Series never expire: they are the cumulative totals.
        const FOREVER: i64 = 100 * 365 * 86_400;
        for (key, s) in &touched {
            tx.put(key.clone(), s, FOREVER);
        }
        Ok(touched.into_values().collect())
    }
}

/// What one round exports for each due item (in `due` order): the spans of its closed
/// generations not exported yet and their stage spans, and the marks its summary gets (the
/// generations now exported, the deploy stages that went out with it; `None`: its facts are
/// gone). A deploy stage goes out once: `staged` holds those already out and is added to.
fn due_item_spans(
    resolver: &Resolver<'_>,
    due: &[&Summary],
    items: &HashMap<String, ItemRecord>,
    exporting: &BTreeSet<GenRef>,
    mut staged: BTreeSet<GenRef>,
) -> DueSpans {
    let mut spans_out = Vec::new();
    let mut marks = Vec::new();
    for s in due {
        let Some(record) = items.get(&s.key) else {
            marks.push((None, Vec::new()));
            continue;
        };
        let mut exported = s.exported.clone();
        let mut staged_here: Vec<(String, u32)> = Vec::new();
        for g in facts::generations(&record.facts) {
            if g.end.is_none() || exported.contains(&g.index) {
                continue;
            }
            spans_out.extend(spans::build(resolver, s, &g));
            for (span, stage) in stage_spans(resolver, s, g.index, exporting) {
                if let Some(c) = stage {
                    // Marked on the summary of the item it went out with (a write this round
                    // makes anyway).
                    if !staged.insert(c.clone()) {
                        continue;
                    }
                    staged_here.push((c.key, c.gen));
                }
                spans_out.push(span);
            }
            exported.push(g.index);
        }
        exported.sort();
        marks.push((Some(exported), staged_here));
    }
    (spans_out, marks)
}

/// Spans, and per due item the generations exported and deploy stages marked.
type DueSpans = (
    Vec<FinishedSpan>,
    Vec<(Option<Vec<u32>>, Vec<(String, u32)>)>,
);

/// A scope as one settlement pass sees it: its records read and derived once, with the writes
/// of the pass's committed rounds folded in ([`View::fold`]), and the versions those writes
/// are conditioned on.
struct View {
    records: ScopeRecords,
    derived: dora::Derived,
    versions: HashMap<crate::store::Key, u64>,
    /// When the records were read (the settle clock).
    read_at: Time,
}

impl View {
    /// A round's writes, as the next round must see them: the rewritten summaries (each now in
    /// its shard, with its tally: no longer a legacy or converted ledger), and the `l#` ledgers
    /// removed.
    fn fold(&mut self, rewrite: BTreeMap<String, Summary>, removed_ledgers: &[String]) {
        let r = &mut self.records;
        for (key, summary) in rewrite {
            if summary.tally.is_some() {
                r.ledger.remove(&key);
            }
            r.in_legacy.remove(&key);
            r.twins.remove(&key);
            if let Ok(i) = r.summaries.binary_search_by(|s| s.key.as_str().cmp(&key)) {
                r.summaries[i] = summary;
            }
        }
        for owner in removed_ledgers {
            r.legacy.remove(owner);
        }
    }
}

/// Metrics: the difference between what the facts now say each owner contributes and what its
/// ledger says was applied, for at most `owners_per_tx` writes; the owners' summaries get their
/// new ledger in `rewrite`. `true` when owners are left for another round.
fn ledger_changes(
    tx: &mut Tx<'_>,
    scope: &Scope,
    records: &ScopeRecords,
    derived: &dora::Derived,
    owners_per_tx: usize,
    rewrite: &mut BTreeMap<String, Summary>,
) -> (Vec<Tally>, Vec<String>, bool) {
    let summaries = &records.summaries;
    let summary_of = |key: &str| {
        let i = summaries.binary_search_by(|s| s.key.as_str().cmp(key));
        i.ok().map(|i| &summaries[i])
    };
    let mut changes: Vec<Tally> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let owners: BTreeSet<&String> = derived
        .contributions
        .keys()
        .chain(records.ledger.keys())
        .chain(
            summaries
                .iter()
                .filter(|s| s.tally.is_some())
                .map(|s| &s.key),
        )
        .collect();
    let empty = Vec::new();
    let mut changed_owners = 0;
    for owner in owners {
        // An owner whose facts expired keeps what it contributed.
        let Some(summary) = summary_of(owner) else {
            continue;
        };
        let old = summary
            .tally
            .as_ref()
            .or_else(|| records.ledger.get(owner))
            .unwrap_or(&empty);
        let Some(new) = owner_tally(records, derived, owner, old) else {
            continue;
        };
        let new: &[Tally] = &new;
        if new == old {
            continue;
        }
        // A ledger still in an `l#` record takes a second write: its removal; so does a
        // summary still in the legacy partition (unless moved this round already).
        let on_its_own = records.legacy.contains(owner.as_str());
        let moves = records.in_legacy.contains(owner.as_str()) && !rewrite.contains_key(owner);
        let writes = 1 + usize::from(on_its_own) + usize::from(moves);
        if changed_owners + writes > owners_per_tx {
            return (changes, removed, true);
        }
        changed_owners += writes;
        changes.extend(scope::tally_diff(old, new));
        let updated = rewrite
            .entry(owner.to_string())
            .or_insert_with(|| summary.clone());
        updated.tally = Some(new.to_vec());
        updated.ledger = None;
        if on_its_own {
            tx.delete(keys::ledger(scope, owner));
            removed.push(owner.to_string());
        }
    }
    (changes, removed, false)
}

/// The summary of `key` in a list sorted by key.
fn summary_in<'s>(summaries: &'s [Summary], key: &str) -> Option<&'s Summary> {
    let i = summaries
        .binary_search_by(|s| s.key.as_str().cmp(key))
        .ok()?;
    Some(&summaries[i])
}

/// A put of `value` at `key` under `version`, living `ttl_secs` from now.
fn put_write<T: serde::Serialize>(
    key: crate::store::Key,
    value: &T,
    ttl_secs: i64,
    version: u64,
    cond: Cond,
) -> Result<Write, EngineError> {
    let data = crate::store::Data::encode(value)
        .map_err(|e| EngineError::Corrupt(format!("{}/{}", key.pk, key.sk), e.to_string()))?;
    Ok(Write::Put {
        record: Record {
            key,
            version,
            expires_at: crate::store::now_epoch() + ttl_secs,
            data,
        },
        cond,
    })
}

/// What `owner` contributes now (`None`: a sealed owner left as it is). A sealed owner is
/// settled only when every sealed record was read, but for the one change failure a live
/// incident can still give the checkpoint's last production success.
fn owner_tally<'a>(
    records: &ScopeRecords,
    derived: &'a dora::Derived,
    owner: &str,
    old: &[Tally],
) -> Option<std::borrow::Cow<'a, [Tally]>> {
    if !records.sealed.contains(owner) || records.full {
        let now = derived
            .contributions
            .get(owner)
            .map_or(&[][..], Vec::as_slice);
        return Some(std::borrow::Cow::Borrowed(now));
    }
    let last = records.checkpoint.as_ref()?.last_prod.as_ref()?;
    (last.key == owner).then(|| last_prod_tally(records, derived, last, old).into())
}

/// The tally of the checkpoint's last production success ([`seal::LastProd`]) read from the
/// checkpoint: as applied, but for its change failure, which a live incident that follows it
/// gives (as derived now), or a sealed one gave (as applied).
fn last_prod_tally(
    records: &ScopeRecords,
    derived: &dora::Derived,
    last: &seal::LastProd,
    old: &[Tally],
) -> Vec<Tally> {
    let failure = |t: &&Tally| t.name == metrics::CHANGE_FAILURES;
    let live_cause = derived
        .causes
        .iter()
        .any(|(incident, c)| c.deployment.key == last.key && !records.sealed.contains(incident));
    let mut new: Vec<Tally> = old.iter().filter(|t| !failure(t)).cloned().collect();
    if live_cause {
        let now = derived.contributions.get(&last.key).into_iter().flatten();
        new.extend(now.filter(failure).cloned());
    } else if last.failed_by_sealed {
        new.extend(old.iter().filter(failure).cloned());
    }
    new.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    new
}

/// Summaries a delivery rewrote in their shard while the drain's record of them is still in
/// the legacy partition: moved (merged, see [`merge_legacy`]) at most `writes` writes' worth
/// (two each: the put and the legacy removal); `true` when more are left for another round.
fn move_twins(
    records: &ScopeRecords,
    writes: usize,
    rewrite: &mut BTreeMap<String, Summary>,
) -> (usize, bool) {
    let mut used = 0;
    for key in &records.twins {
        if used + 2 > writes {
            return (used, true);
        }
        let Ok(i) = records
            .summaries
            .binary_search_by(|s| s.key.as_str().cmp(key))
        else {
            continue;
        };
        rewrite.insert(key.clone(), records.summaries[i].clone());
        used += 2;
    }
    (used, false)
}

/// Items whose settle period has passed at `now` with a closed generation not exported yet, at
/// most `writes_per_tx` writes' worth (one each, two for a summary still in the legacy
/// partition, `in_legacy`); `true` when more are left for another round.
fn due_items(
    records: &ScopeRecords,
    settle_secs: i64,
    now: Time,
    writes_per_tx: usize,
) -> (Vec<&Summary>, bool) {
    let settle = chrono::TimeDelta::seconds(settle_secs);
    let mut due = Vec::new();
    let mut used = 0;
    let in_legacy = &records.in_legacy;
    for s in records
        .summaries
        .iter()
        .filter(|s| !records.sealed.contains(&s.key))
        .filter(|s| s.touched + settle <= now)
        .filter(|s| !unexported(s).is_empty())
    {
        let writes = 1 + usize::from(in_legacy.contains(&s.key));
        if used + writes > writes_per_tx {
            return (due, true);
        }
        used += writes;
        due.push(s);
    }
    (due, false)
}

/// The closed generations of `s` not exported yet.
fn unexported(s: &Summary) -> Vec<GenRef> {
    s.gens
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let gen = i as u32;
            (g.end.is_some() && !s.exported.contains(&gen)).then(|| GenRef {
                key: s.key.clone(),
                gen,
            })
        })
        .collect()
}

/// Due wake-up markers by scope, leaving out those of scopes put aside until later than `wall`.
fn due_by_scope(markers: Vec<Record>, wall: &str) -> BTreeMap<Scope, Vec<Record>> {
    let mut by_scope: BTreeMap<Scope, Vec<Record>> = BTreeMap::new();
    for m in markers {
        let Some((due, scope)) = m.key.sk.split_once('#') else {
            continue;
        };
        let Some(scope) = Scope::parse(scope) else {
            tracing::warn!(marker = %m.key.sk, "a wake-up marker names no scope; left alone");
            continue;
        };
        let put_aside = due > wall && m.data.decode::<Marker>().is_ok_and(|m| m.failures > 0);
        if !put_aside {
            by_scope.entry(scope).or_default().push(m);
        }
    }
    by_scope
}

/// The scopes of one pass in two lanes. A repository's series all carry its name, so
/// settlements of two repositories never write the same record and run side by side (a drain
/// on DynamoDB waits on round trips, not CPU). Scopes of items that name no repository can
/// share series (by team, by source): those are settled one at a time, so they do not make
/// each other retry. Both lanes start no new scope once the budget is spent.
struct Lanes {
    repos: Vec<(Scope, Vec<Record>)>,
    items: Vec<(Scope, Vec<Record>)>,
}

impl Lanes {
    fn of(by_scope: BTreeMap<Scope, Vec<Record>>) -> Self {
        let (repos, items) = by_scope.into_iter().partition(|(scope, _)| scope.is_repo());
        Lanes { repos, items }
    }
}

/// An item's current generation as it stands, open or not: what a span would be if it ended now.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    pub key: String,
    pub name: String,
    pub kind: crate::model::Kind,
    pub generation: u32,
    pub open: bool,
    pub start: Option<Time>,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub attributes: crate::model::Attrs,
    pub events: Vec<crate::model::SpanEvent>,
}

impl Engine {
    /// The current generation of item `key`, with its parent and trace resolved from what the
    /// store knows now (for `in flight` views and tests). Changes nothing.
    pub async fn preview(&self, key: &str) -> Result<Option<Preview>, EngineError> {
        let mut tx = Tx::new(self.store.as_ref());
        let items = load_items(&mut tx, [key.to_string()]).await?;
        let Some(record) = items.get(key) else {
            return Ok(None);
        };
        let scope = scope::scope_of(record.repo().as_ref(), key);
        let (records, derived) = self.read_and_derive(&mut tx, &scope).await?;
        let idx = Index::new(&records.summaries);
        let Some(me) = idx.items.get(key).copied() else {
            return Ok(None);
        };
        let Some(g) = facts::generations(&record.facts).pop() else {
            return Ok(None);
        };
        let parent = self
            .resolved(&mut tx, &idx, &derived, |resolver| resolver.parent(me, 0))
            .await?;
        Ok(Some(Preview {
            key: key.to_string(),
            name: g.name.clone(),
            kind: g.kind,
            generation: g.index,
            open: !g.closed(),
            start: g.start,
            trace_id: parent
                .as_ref()
                .map(|p| p.trace_id.clone())
                .unwrap_or_else(|| crate::model::ids::trace_id(key)),
            span_id: crate::model::ids::span_id(key, g.index),
            parent_span_id: parent.map(|p| p.span_id),
            attributes: g.span_attributes(),
            events: g.events,
        }))
    }
}

/// The stage spans that go out with generation `gen` of `s` (docs/metrics.md "Change stages"):
/// a change's coding, pickup and review stages; its deploy stage if the deployment that first
/// shipped it was exported before; for a deployment, the deploy stages of the changes it first
/// shipped that were exported before or go out in this round (`exporting`).
fn stage_spans(
    r: &Resolver<'_>,
    s: &Summary,
    gen: u32,
    exporting: &BTreeSet<GenRef>,
) -> Vec<(FinishedSpan, Option<GenRef>)> {
    let me = GenRef {
        key: s.key.clone(),
        gen,
    };
    let exported_before = |g: &GenRef| {
        r.idx
            .items
            .get(g.key.as_str())
            .is_some_and(|x| x.exported.contains(&g.gen))
    };
    let staged = |c: &GenRef, (name, span): (StageName, FinishedSpan)| {
        (span, (name == StageName::Deploy).then(|| c.clone()))
    };
    match s.kind {
        Kind::Change => {
            let deployed_before = r
                .derived
                .first_deploy
                .get(&me)
                .is_some_and(|d| exported_before(d) && spans::deploy_stage_shown(r, &me, d));
            spans::stage_spans(r, s, gen, |n| n != StageName::Deploy || deployed_before)
                .into_iter()
                .map(|span| staged(&me, span))
                .collect()
        }
        Kind::Deployment => {
            let Some(info) = r.derived.deploys.get(&me) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for c in &info.shipped {
                if !spans::deploy_stage_shown(r, c, &me)
                    || !(exported_before(c) || exporting.contains(c))
                {
                    continue;
                }
                if let Some(cs) = r.idx.items.get(c.key.as_str()) {
                    let found = spans::stage_spans(r, cs, c.gen, |n| n == StageName::Deploy);
                    out.extend(found.into_iter().map(|span| staged(c, span)));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Everything a scope's partitions hold, decoded; a record that cannot be read is an error.
struct ScopeRecords {
    /// Sorted by item key; a summary found both in its shard and in the legacy partition is
    /// read as one ([`merge_legacy`]).
    summaries: Vec<Summary>,
    pushes: Vec<PushFact>,
    /// Owner item key → the contributions applied for it, summed per series, for owners whose
    /// summary holds no tally: from a ledger of contributions in the summary, or from an `l#`
    /// record, as older versions wrote them. (A summary's tally is read in place.)
    ledger: BTreeMap<String, Vec<Tally>>,
    /// Owners whose ledger is still an `l#` record: removed when their ledger is next written.
    legacy: BTreeSet<String>,
    /// Items whose summary is (also) in the repository's legacy partition, as versions before
    /// [`keys::SCOPE_SHARDS`] wrote it: a settlement that writes one moves it to its shard.
    in_legacy: BTreeSet<String>,
    /// Of those, the items a delivery has written into their shard meanwhile (without what the
    /// drain recorded in the legacy one): moved by the next settlement whatever else it does,
    /// so that what was exported and applied is never lost when the legacy record expires.
    twins: BTreeSet<String>,
    /// The repository's checkpoint, if it has sealed records ([`seal`]).
    checkpoint: Option<Checkpoint>,
    /// Keys of the summaries read from the sealed partitions: derived with the live ones, but
    /// neither due nor owners unless `full`.
    sealed: BTreeSet<String>,
    /// `after` of the pushes read from the sealed partitions.
    sealed_pushes: BTreeSet<String>,
    /// Every sealed record was read (a fact reached before the cut): sealed owners are
    /// settled too, in the sealed partitions.
    full: bool,
    /// The memory these records (decoded, and what is derived from them) take from the drain's
    /// budget, held as long as they are.
    _memory: Vec<Reservation>,
}

impl ScopeRecords {
    /// What sealing sees of these records.
    fn seal_view(&self) -> seal::Records<'_> {
        seal::Records {
            summaries: &self.summaries,
            pushes: &self.pushes,
            sealed: &self.sealed,
            sealed_pushes: &self.sealed_pushes,
            pinned: &self.in_legacy,
            checkpoint: self.checkpoint.as_ref(),
            full: self.full,
        }
    }

    /// Sealed records read (a key that is also live is left out: the live record is newer).
    fn add_sealed(&mut self, summaries: Vec<Summary>, pushes: Vec<PushFact>) {
        let live: BTreeSet<String> = self
            .summaries
            .iter()
            .filter(|s| !self.sealed.contains(&s.key))
            .map(|s| s.key.clone())
            .collect();
        for s in summaries {
            if live.contains(&s.key) || !self.sealed.insert(s.key.clone()) {
                continue;
            }
            if s.tally.is_none() {
                if let Some(applied) = s.applied() {
                    self.ledger.insert(s.key.clone(), applied.into_owned());
                }
            }
            self.summaries.push(s);
        }
        self.summaries.sort_by(|a, b| a.key.cmp(&b.key));
        let known: BTreeSet<String> = self.pushes.iter().map(|p| p.after.clone()).collect();
        for p in pushes {
            if known.contains(&p.after) || !self.sealed_pushes.insert(p.after.clone()) {
                continue;
            }
            self.pushes.push(p);
        }
    }
}

/// Reads a scope's partitions whole (a repository's shards and its legacy partition, side by
/// side), and reserves the memory its settlement will hold before decoding them
/// ([`MemoryBudget`]).
async fn read_scope(
    tx: &mut Tx<'_>,
    scope: &Scope,
    memory: &MemoryBudget,
) -> Result<ScopeRecords, EngineError> {
    let partitions = keys::scope_partitions(scope);
    let read = tx.query_partitions(&partitions).await?;
    let stored: u64 = read.iter().flatten().map(|r| r.data.len() as u64).sum();
    let reservation = memory.reserve(stored).await?;
    let legacy_pk = scope.is_repo().then(|| keys::scope_pk(scope));
    let mut summaries: BTreeMap<String, Summary> = BTreeMap::new();
    let mut legacy_summaries: BTreeMap<String, Summary> = BTreeMap::new();
    let mut pushes: BTreeMap<String, PushFact> = BTreeMap::new();
    let mut legacy = BTreeMap::new();
    let mut checkpoint: Option<Checkpoint> = None;
    // Each record is dropped once decoded: the stored bytes and the decoded records are not
    // held whole at the same time.
    for r in read.into_iter().flatten() {
        let corrupt = |e: serde_json::Error| corrupt(&r, e);
        let in_legacy = legacy_pk.as_deref() == Some(r.key.pk.as_str());
        match keys::ScopeEntry::parse(&r.key.sk) {
            Some(keys::ScopeEntry::Summary(key)) => {
                let s: Summary = r.data.decode().map_err(corrupt)?;
                let into = if in_legacy {
                    &mut legacy_summaries
                } else {
                    &mut summaries
                };
                into.insert(key.to_string(), s);
            }
            Some(keys::ScopeEntry::Push(after)) => {
                let p: PushFact = r.data.decode().map_err(corrupt)?;
                match pushes.entry(after.to_string()) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(p);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().merge(&p),
                }
            }
            Some(keys::ScopeEntry::Ledger(owner)) => {
                let old: Vec<Contribution> = r.data.decode().map_err(corrupt)?;
                legacy.insert(owner.to_string(), scope::tally(&old));
            }
            Some(keys::ScopeEntry::Checkpoint) => {
                checkpoint = Some(r.data.decode().map_err(corrupt)?);
            }
            _ => {}
        }
    }
    let (in_legacy, twins) = fold_legacy(&mut summaries, legacy_summaries);
    let mut out = ScopeRecords {
        summaries: summaries.into_values().collect(),
        pushes: pushes.into_values().collect(),
        ledger: BTreeMap::new(),
        legacy: BTreeSet::new(),
        in_legacy,
        twins,
        checkpoint,
        sealed: BTreeSet::new(),
        sealed_pushes: BTreeSet::new(),
        full: false,
        _memory: vec![reservation],
    };
    // A summary's tally is read where it is; only ledgers of older layouts are converted.
    for s in out.summaries.iter().filter(|s| s.tally.is_none()) {
        if let Some(applied) = s.applied() {
            out.ledger.insert(s.key.clone(), applied.into_owned());
        }
    }
    for (owner, ledger) in legacy {
        out.legacy.insert(owner.clone());
        out.ledger.entry(owner).or_insert(ledger);
    }
    if let Some(cp) = out.checkpoint.clone() {
        read_sealed_context(tx, scope, &mut out, &cp, memory).await?;
    }
    Ok(out)
}

/// The sealed records a settlement reads with the live ones: the checkpoint's, then those the
/// lookups find by the commits and branches the live and checkpoint records name.
async fn read_sealed_context(
    tx: &mut Tx<'_>,
    scope: &Scope,
    out: &mut ScopeRecords,
    cp: &Checkpoint,
    memory: &MemoryBudget,
) -> Result<(), EngineError> {
    let wanted: Vec<crate::store::Key> = cp
        .summaries
        .iter()
        .map(|k| keys::sealed_summary(scope, k))
        .chain(cp.pushes.iter().map(|p| keys::sealed_push(scope, p)))
        .collect();
    read_sealed(tx, out, &wanted, memory).await?;
    // What live records written since the checkpoint name (the checkpoint holds what older
    // ones name).
    let mut names: BTreeSet<seal::Name> = BTreeSet::new();
    for s in out
        .summaries
        .iter()
        .filter(|s| !out.sealed.contains(&s.key))
    {
        if seal::newer_summary(s, cp) {
            names.extend(seal::wanted_by_summary(s));
        }
    }
    for p in out
        .pushes
        .iter()
        .filter(|p| !out.sealed_pushes.contains(&p.after))
    {
        if seal::newer_push(p, cp) {
            names.extend(seal::names_of_push(p));
        }
    }
    let lookup_keys: Vec<crate::store::Key> = names.iter().map(|n| lookup_key(scope, n)).collect();
    let mut found = seal::Lookup::default();
    for r in tx.fetch(&lookup_keys).await?.into_iter().flatten() {
        let l: seal::Lookup = r.data.decode().map_err(|e| corrupt(&r, e))?;
        found.add(&l);
    }
    let present: BTreeSet<&str> = out.summaries.iter().map(|s| s.key.as_str()).collect();
    let pushes: BTreeSet<&str> = out.pushes.iter().map(|p| p.after.as_str()).collect();
    let more: Vec<crate::store::Key> = found
        .summaries
        .iter()
        .filter(|k| !present.contains(k.as_str()))
        .map(|k| keys::sealed_summary(scope, k))
        .chain(
            found
                .pushes
                .iter()
                .filter(|p| !pushes.contains(p.as_str()))
                .map(|p| keys::sealed_push(scope, p)),
        )
        .collect();
    read_sealed(tx, out, &more, memory).await
}

/// The key of the lookup of a commit or branch.
fn lookup_key(scope: &Scope, name: &seal::Name) -> crate::store::Key {
    match name {
        seal::Name::Sha(x) => keys::sealed_sha(scope, x),
        seal::Name::Branch(b) => keys::sealed_branch(scope, b),
    }
}

fn corrupt(r: &Record, e: serde_json::Error) -> EngineError {
    EngineError::Corrupt(format!("{}/{}", r.key.pk, r.key.sk), e.to_string())
}

/// Sealed summaries and pushes by key, added to `out`.
async fn read_sealed(
    tx: &mut Tx<'_>,
    out: &mut ScopeRecords,
    wanted: &[crate::store::Key],
    memory: &MemoryBudget,
) -> Result<(), EngineError> {
    let got: Vec<Record> = tx.fetch(wanted).await?.into_iter().flatten().collect();
    add_sealed_records(out, got, memory).await
}

/// Decodes sealed records and adds them to `out`, with their memory reserved.
async fn add_sealed_records(
    out: &mut ScopeRecords,
    got: Vec<Record>,
    memory: &MemoryBudget,
) -> Result<(), EngineError> {
    let stored: u64 = got.iter().map(|r| r.data.len() as u64).sum();
    out._memory.push(memory.reserve(stored).await?);
    let (mut summaries, mut pushes) = (Vec::new(), Vec::new());
    for r in got {
        match keys::ScopeEntry::parse(&r.key.sk) {
            Some(keys::ScopeEntry::Summary(_)) => {
                summaries.push(r.data.decode().map_err(|e| corrupt(&r, e))?)
            }
            Some(keys::ScopeEntry::Push(_)) => {
                pushes.push(r.data.decode().map_err(|e| corrupt(&r, e))?)
            }
            _ => {}
        }
    }
    out.add_sealed(summaries, pushes);
    Ok(())
}

/// Every sealed record of the repository (a fact reached before its cut).
async fn read_all_sealed(
    tx: &mut Tx<'_>,
    scope: &Scope,
    out: &mut ScopeRecords,
    memory: &MemoryBudget,
) -> Result<(), EngineError> {
    let read = tx.query_partitions(&keys::sealed_partitions(scope)).await?;
    add_sealed_records(out, read.into_iter().flatten().collect(), memory).await?;
    out.full = true;
    Ok(())
}

/// The pushes a settlement of `scope` reads (tests of the layout).
#[cfg(test)]
pub(crate) async fn read_scope_for_test(
    tx: &mut Tx<'_>,
    scope: &Scope,
    memory: &MemoryBudget,
) -> Vec<PushFact> {
    read_scope(tx, scope, memory).await.unwrap().pushes
}

/// The legacy partition's summaries folded into the shards' (`summaries`): the keys of every
/// one found there, and of those a shard also holds (merged, [`merge_legacy`]).
fn fold_legacy(
    summaries: &mut BTreeMap<String, Summary>,
    legacy_summaries: BTreeMap<String, Summary>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut in_legacy = BTreeSet::new();
    let mut twins = BTreeSet::new();
    for (key, old) in legacy_summaries {
        in_legacy.insert(key.clone());
        match summaries.get_mut(&key) {
            Some(home) => {
                merge_legacy(home, old);
                twins.insert(key);
            }
            None => {
                summaries.insert(key, old);
            }
        }
    }
    (in_legacy, twins)
}

/// An item's summary as its shard holds it (`home`, written by a delivery) with what the drain
/// recorded in the legacy partition before: the generations exported and deploy stages sent
/// by either, and the legacy ledger while the shard's has none.
fn merge_legacy(home: &mut Summary, old: Summary) {
    home.exported.extend(old.exported);
    home.exported.sort();
    home.exported.dedup();
    home.deploy_staged.extend(old.deploy_staged);
    home.deploy_staged.sort();
    home.deploy_staged.dedup();
    if home.tally.is_none() && home.ledger.is_none() {
        home.tally = old.tally;
        home.ledger = old.ledger;
    }
}

async fn load_items(
    tx: &mut Tx<'_>,
    keys_in: impl IntoIterator<Item = String>,
) -> Result<HashMap<String, ItemRecord>, EngineError> {
    let wanted: Vec<String> = keys_in.into_iter().collect();
    tx.load(wanted.iter().map(|k| keys::item(k))).await?;
    let mut out = HashMap::new();
    for k in wanted {
        if let Some(rec) = decode::<ItemRecord>(tx, &keys::item(&k))? {
            out.insert(k, rec);
        }
    }
    Ok(out)
}

/// The wake-up markers with a sort key in `range` (`KeyRange::all()`: all), at most `limit` from
/// each partition ([`keys::pending_partitions`]: the shards and the legacy one), in sort key
/// (due time) order: for the backlog figures, tests and benches. A settle reads them itself,
/// shard by shard.
pub async fn pending_markers(
    store: &dyn crate::store::Store,
    range: KeyRange,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    let mut all = Vec::new();
    for pk in keys::pending_partitions() {
        all.extend(
            store
                .query(&pk, range.clone(), limit, Order::Ascending)
                .await?,
        );
    }
    all.sort_by(|a, b| (&a.key.sk, &a.key.pk).cmp(&(&b.key.sk, &b.key.pk)));
    Ok(all)
}

/// A delete conditioned on the version read.
pub(crate) fn delete_if(key: crate::store::Key, version: u64) -> Write {
    Write::Delete {
        key,
        cond: Cond::Version(version),
    }
}

#[cfg(test)]
mod concurrency {
    use super::*;
    use crate::config::Config;
    use crate::model::{Action, Input, Kind, WorkEvent};
    use crate::store::memory::MemoryStore;
    use crate::store::Store;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::store::memory::spy::{run_once, Hooks, Once, Spy};

    /// Commits take 3 ms (a round trip); records how many were in flight at once.
    #[derive(Default)]
    struct RoundTrips {
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Hooks for RoundTrips {
        async fn before_commit(&self, _writes: &[Write]) {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        async fn after_commit(&self, _writes: &[Write], _committed: bool) {
            self.in_flight.fetch_sub(1, SeqCst);
        }
    }

    /// Issue `n`, opened and closed, in repository `a/<n>` or in none.
    fn closed(n: usize, in_repo: bool) -> Vec<Input> {
        let mut ev = WorkEvent::new(
            Kind::Issue,
            format!("jira/issue/{n}"),
            format!("ISSUE-{n}"),
            Action::Close,
        );
        ev.repo = in_repo.then(|| crate::model::Repo::new(&format!("a/{n}")));
        ev.start = Some("2024-01-01T10:00:00Z".parse().unwrap());
        ev.end = Some("2024-01-01T11:00:00Z".parse().unwrap());
        ev.at = ev.end;
        vec![Input::Work(ev)]
    }

    async fn settle_all(in_repo: bool) -> (Settled, usize) {
        let store = Arc::new(Spy::new(Arc::default(), RoundTrips::default()));
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        let engine = Engine::new(store.clone(), config);
        for n in 0..20 {
            let inputs = closed(n, in_repo);
            engine
                .apply("jira", &format!("d-{n}"), &inputs)
                .await
                .unwrap();
        }
        store.hooks.most.store(0, SeqCst);
        let settled = engine
            .settle(engine.now() + chrono::TimeDelta::days(1))
            .await
            .unwrap();
        (settled, store.hooks.most.load(SeqCst))
    }

    #[tokio::test]
    async fn repositories_are_settled_side_by_side() {
        let (settled, most) = settle_all(true).await;
        assert_eq!((settled.scopes, settled.spans.len()), (20, 20));
        assert_eq!(most, SCOPES_AT_ONCE, "commits in flight at once");
        // spans come out in scope order whatever finished first
        let names: Vec<_> = settled.spans.iter().map(|s| s.name.clone()).collect();
        let mut by_scope: Vec<_> = (0..20).map(|n| (format!("a/{n}"), n)).collect();
        by_scope.sort();
        let want: Vec<_> = by_scope.iter().map(|(_, n)| format!("ISSUE-{n}")).collect();
        assert_eq!(names, want);
    }

    #[tokio::test]
    async fn a_long_backlog_of_one_repository_is_worked_off_over_several_drains() {
        // 40 closed issues of one repository: 3 rounds of at most 16 spans. With no time left
        // after the first round, a drain stops there and keeps the repository's wake-up.
        let store = Arc::new(MemoryStore::default());
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        let engine = Engine::new(store.clone(), config).with_settle_budget(Duration::ZERO);
        for n in 0..40 {
            let mut inputs = closed(n, true);
            if let Input::Work(ev) = &mut inputs[0] {
                ev.repo = Some(crate::model::Repo::new("a/b"));
            }
            engine
                .apply("jira", &format!("d-{n}"), &inputs)
                .await
                .unwrap();
        }
        let later = engine.now() + chrono::TimeDelta::days(1);
        let markers = || async {
            let found = pending_markers(store.as_ref(), KeyRange::all(), 100);
            found.await.unwrap().len()
        };
        let before = markers().await;
        assert!(before > 0);
        let mut spans = Vec::new();
        let mut drains = 0;
        loop {
            let settled = engine.settle(later).await.unwrap();
            drains += 1;
            let items_per_tx = Budget::of(store.limits()).items;
            assert!(settled.spans.len() <= items_per_tx, "one round per drain");
            spans.extend(settled.spans);
            if !settled.more {
                break;
            }
            assert_eq!(markers().await, before, "drain {drains} keeps the wake-up");
            assert!(drains < 10, "no progress");
        }
        assert!(drains >= 3, "{drains} drains");
        assert_eq!(markers().await, 0, "removed once done");
        assert_eq!(spans.len(), 40);
    }

    /// Counts the queries of repository `a/b`'s partitions, and runs its future once, right
    /// after the first settlement round's commit (the first commit with an outbox batch).
    #[derive(Default)]
    struct Rounds {
        scope_queries: AtomicUsize,
        hook: Once,
    }

    #[async_trait::async_trait]
    impl Hooks for Rounds {
        fn on_query(&self, pk: &str) {
            if pk.starts_with("scope#repo#a/b") {
                self.scope_queries.fetch_add(1, SeqCst);
            }
        }
        async fn after_commit(&self, writes: &[Write], committed: bool) {
            let round = writes
                .iter()
                .any(|w| matches!(w, Write::Put { record, .. } if record.key.pk == keys::OUTBOX));
            if committed && round {
                run_once(&self.hook).await;
            }
        }
    }

    /// Issue `n` of repository a/b, closed at `end` (11:00 by default).
    fn in_ab(n: usize, end: &str) -> Vec<Input> {
        let mut inputs = closed(n, true);
        if let Input::Work(ev) = &mut inputs[0] {
            ev.repo = Some(crate::model::Repo::new("a/b"));
            ev.end = Some(end.parse().unwrap());
            ev.at = ev.end;
        }
        inputs
    }

    async fn issue_duration_sum(store: &MemoryStore) -> (u64, i64) {
        let series = metrics::stored(store, Some(metrics::ISSUE_DURATION));
        let series = series.await.unwrap();
        (
            series.iter().map(|s| s.count).sum(),
            series.iter().map(|s| s.sum_ms).sum(),
        )
    }

    #[tokio::test]
    async fn a_pass_reads_a_backlog_once_and_a_delivery_between_its_rounds_is_not_lost() {
        // 40 closed issues of one repository: 3 rounds of at most 16. The pass reads the
        // repository's partitions once (5 queries: 4 shards and the legacy one), not once a
        // round. A delivery between the first and second rounds closes issue 9 half an hour
        // earlier; the last round settles it (items go in key order): that round's write of
        // issue 9's summary conflicts, the pass reads again, and issue 9 goes out once, with its
        // new end.
        for with_delivery in [false, true] {
            let inner = Arc::new(MemoryStore::default());
            let store = Arc::new(Spy::new(inner.clone(), Rounds::default()));
            let config = Arc::new(Config::from_pairs(&[]).unwrap());
            let engine = Engine::new(store.clone(), config.clone());
            for n in 0..40 {
                let inputs = in_ab(n, "2024-01-01T11:00:00Z");
                engine
                    .apply("jira", &format!("d-{n}"), &inputs)
                    .await
                    .unwrap();
            }
            if with_delivery {
                let other = Engine::new(inner.clone(), config.clone());
                *store.hooks.hook.lock().await = Some(Box::pin(async move {
                    let reclosed = in_ab(9, "2024-01-01T10:30:00Z");
                    other.apply("jira", "late-9", &reclosed).await.unwrap();
                }));
            }
            let later = engine.now() + chrono::TimeDelta::days(1);
            let first = engine.settle(later).await.unwrap();
            assert!(!first.more);
            let queries = store.hooks.scope_queries.load(SeqCst);
            let names: Vec<&str> = first.spans.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names.len(), 40, "{names:?}");
            let nine: Vec<_> = first.spans.iter().filter(|s| s.name == "ISSUE-9").collect();
            assert_eq!(nine.len(), 1);
            if !with_delivery {
                assert_eq!(queries, 5, "one read of the repository for 3 rounds");
                assert_eq!(issue_duration_sum(&inner).await, (40, 40 * 3_600_000));
                continue;
            }
            assert_eq!(queries, 10, "read again after the conflict");
            assert_eq!(nine[0].end, "2024-01-01T10:30:00Z".parse::<Time>().unwrap());
            // The late delivery's own wake-up finds nothing more to export.
            let second = engine
                .settle(later + chrono::TimeDelta::days(1))
                .await
                .unwrap();
            assert!(second.spans.is_empty(), "{:?}", second.spans);
            assert_eq!(
                issue_duration_sum(&inner).await,
                (40, 39 * 3_600_000 + 1_800_000),
                "counted once, with its new duration"
            );
        }
    }

    #[tokio::test]
    async fn items_without_a_repository_are_settled_one_at_a_time() {
        // their series (by team, by source) can be shared: side by side they would conflict
        let (settled, most) = settle_all(false).await;
        assert_eq!((settled.scopes, settled.spans.len()), (20, 20));
        assert_eq!(most, 1, "commits in flight at once");
    }
}
