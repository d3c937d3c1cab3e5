//! The span lifecycle engine: vendor-free. It takes a delivery's normalized inputs and the
//! store, and yields finished spans and metric points. It knows nothing of HTTP, AWS or OTLP.
//!
//! # The rule: order never matters
//!
//! Exported spans (trace and span IDs, parents, links, attributes, times) and every metric's
//! final value are a function of the *set* of deliveries, not of the order they arrived in.
//! Event time from payloads decides; arrival order decides nothing. A duplicate (the same
//! delivery ID, or the same event under a new ID) changes nothing.
//!
//! It holds by construction, in two steps:
//!
//! 1. **A delivery only records facts** ([`Engine::apply`]): each work event joins its item's
//!    set of facts ([`facts`]), each push its repository's pushes, and the item's compact
//!    [`scope::Summary`] is rewritten from its facts, all in one optimistic transaction. Each
//!    fact keeps the tags of the deliveries that brought it, so a redelivery finds its tag and
//!    changes nothing (no separate delivery record: one item less per delivery). Nothing is
//!    linked, counted or exported here.
//! 2. **A drain settles scopes** ([`Engine::settle`]): a finished span waits
//!    `VALUESTREAM_SETTLE_SECS` after its item's last fact arrived, then its parent, trace and
//!    links are resolved from everything the store knows ([`spans`]); and the scope's DORA
//!    contributions are derived again from the whole set ([`dora::derive`]) and compared with
//!    the ledger of what was applied before, so the stored cumulative series take exactly the
//!    difference. Whichever side of a relation arrives second makes the link.
//!
//! A fact that arrives after its span was exported still corrects every metric (the ledger
//! takes the difference, so totals converge), but the span is not sent again: spans are
//! immutable once exported, so a collector never sees one span ID twice with different content.

pub mod dora;
pub mod drain;
pub mod facts;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod scope;
pub mod seal;
pub mod settings;
pub mod spans;
pub mod stages;
pub mod tx;

use crate::model::{Action, Input, Time};
use crate::store::{Store, StoreError};
use facts::{Added, Fact, ItemRecord};
use scope::{PushFact, Summary};
use serde::{Deserialize, Serialize};
pub use settings::EngineSettings;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tx::Tx;

/// How many times a transaction is attempted when concurrent writers keep conflicting.
const MAX_ATTEMPTS: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gave up after {0} attempts: other writers kept changing the same records")]
    Contention(u32),
    #[error("stored record {0} cannot be read: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    TooLarge(#[from] memory::TooLarge),
}

/// What the engine did with one delivery.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    /// The delivery had been applied before: nothing changed.
    pub duplicate: bool,
    /// Work items seen for the first time.
    pub opened: u32,
    /// Facts added to items already known.
    pub updated: u32,
    /// Closing facts recorded: their spans are exported once settled.
    pub closed: u32,
    /// Facts the store did not hold before (work events, and pushes or the commits they add),
    /// whether or not they changed a span: 0 for the same facts under another delivery ID.
    pub facts: u32,
    /// Store requests this delivery took (reads and the commit).
    pub requests: u32,
}

/// The time source: the wall clock, or a test's own.
pub type Clock = Arc<dyn Fn() -> Time + Send + Sync>;

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub settings: Arc<EngineSettings>,
    clock: Clock,
    /// This engine as a drainer: a batch it settles is put in the outbox already leased to it.
    holder: u64,
    /// Wall time in which one settle starts new scopes ([`drain::SETTLE_BUDGET`]).
    settle_budget: Duration,
    scopes_at_once: usize,
    /// What the settlements of one drain may hold at once (`VALUESTREAM_SETTLE_MEMORY_MB`).
    memory: memory::MemoryBudget,
    /// Each round of a settlement pass reads and derives its repository anew, as before
    /// 2026-12-07 (`benches/growth.rs`'s baseline); normally a pass reads it once.
    reread_every_round: bool,
    /// Most records one settlement pass seals ([`seal::plan`]).
    seal_most: usize,
    /// Settlement reads of a repository with a checkpoint: bounded (the live records and the
    /// sealed ones they need), and whole (a fact reached before the cut).
    history_reads: [std::sync::atomic::AtomicU64; 2],
}

/// Waits a little before attempt `attempt` (1, 2, …) after a conflict: exponential with full
/// jitter, from 2 ms up to 200 ms, so that writers that collided do not collide again.
pub async fn backoff(attempt: u32) {
    let cap_ms = (2u64 << attempt.min(7)).min(200);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let jitter = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (cap_ms * 1000);
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, settings: impl Into<EngineSettings>) -> Self {
        let settings: Arc<EngineSettings> = Arc::new(settings.into());
        Engine {
            store,
            clock: Arc::new(chrono::Utc::now),
            holder: new_holder(),
            settle_budget: drain::SETTLE_BUDGET,
            scopes_at_once: drain::SCOPES_AT_ONCE,
            memory: memory::MemoryBudget::new(settings.settle_memory_bytes),
            reread_every_round: false,
            seal_most: drain::SEAL_MOST,
            history_reads: Default::default(),
            settings,
        }
    }

    /// The same engine reading and deriving a repository at every round of a settlement pass
    /// rather than once a pass: how every round worked before 2026-12-07, for
    /// `benches/growth.rs` to compare against. The results are the same.
    pub fn rereading_every_round(mut self) -> Self {
        self.reread_every_round = true;
        self
    }

    /// The same engine sealing at most `most` records per settlement pass (benches that seal a
    /// long history at once; [`drain::SEAL_MOST`] otherwise).
    pub fn sealing_at_most(mut self, most: usize) -> Self {
        self.seal_most = most;
        self
    }

    /// How many settlement reads of a sealed repository this engine made: (bounded by its
    /// checkpoint, of its whole history because a fact reached before the cut).
    pub fn history_reads(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.history_reads[0].load(Relaxed),
            self.history_reads[1].load(Relaxed),
        )
    }

    /// This engine's identity as a drainer (random, never 0).
    pub fn holder(&self) -> u64 {
        self.holder
    }

    /// The same engine on another clock (tests drive the settle period with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same engine with another settle budget (tests of a backlog).
    pub fn with_settle_budget(mut self, budget: Duration) -> Self {
        self.settle_budget = budget;
        self
    }

    /// The same engine settling at most `n` repositories at once (1: one after the other, as
    /// before; `benches/settle.rs` compares the two).
    pub fn with_scopes_at_once(mut self, n: usize) -> Self {
        self.scopes_at_once = n.max(1);
        self
    }

    pub fn now(&self) -> Time {
        (self.clock)()
    }

    /// Records one delivery's facts exactly once.
    #[tracing::instrument(name = "engine.apply", skip_all, fields(source = %source, delivery = %delivery_id, inputs = inputs.len()))]
    pub async fn apply(
        &self,
        source: &str,
        delivery_id: &str,
        inputs: &[Input],
    ) -> Result<Applied, EngineError> {
        let mut requests = 0;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let mut tx = Tx::new(self.store.as_ref());
            let result = self.attempt(&mut tx, source, delivery_id, inputs);
            let result = result.await;
            requests += tx.requests;
            match result {
                Ok(applied) if applied.duplicate => {
                    return Ok(Applied {
                        requests,
                        ..applied
                    });
                }
                Ok(mut applied) => {
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
        let now = self.now();
        let wake = self.wake_up(now);
        // One read for every record the inputs touch, and the wake-up markers they would write.
        tx.load(records_touched(inputs, &wake)).await?;
        let mut one = Delivery {
            source,
            tag: crate::model::ids::delivery_tag(source, delivery_id),
            now,
            ttl: self.settings.ttl_open_secs,
            written: std::collections::HashSet::new(),
            applied: Applied::default(),
            scopes: BTreeSet::new(),
        };
        for input in inputs {
            let step = match input {
                Input::Work(ev) => one.work(tx, ev)?,
                Input::Push(p) => one.push(tx, p)?,
            };
            if step == Step::Duplicate {
                return Ok(Applied {
                    duplicate: true,
                    ..Applied::default()
                });
            }
        }
        one.wake(tx, &wake);
        Ok(one.applied)
    }

    /// When a delivery at `now` wants its scope settled. Its facts are due a settle period
    /// after they arrive; rounded up to the next whole second ([`MARKER_BUCKET_MS`]), every
    /// delivery about a scope within one second wants the same wake-up marker, so only the first
    /// writes it and the drain removes one: a burst into one repository (a matrix, a merge
    /// train) costs one marker a second, not one per delivery (docs/cost.md). A second at most:
    /// a span still waits the settle period and less than a second more (the permutation tests
    /// drain one second after the settle period).
    ///
    /// A delivery that finds its marker does not write it, which is safe only while no drainer
    /// can remove that marker between the delivery's read and its commit. A drainer removes a
    /// marker once it is due, a settle period or more after the delivery read it; a delivery's
    /// read and commit each end within `VALUESTREAM_DYNAMODB_TIMEOUT_MS`. So markers are shared
    /// only when the settle period is longer than two such timeouts and [`MARKER_MARGIN_SECS`];
    /// with a shorter one (`VALUESTREAM_SETTLE_SECS=0` in tests and demos) each delivery writes
    /// its own marker, due to the millisecond, as before. (`drain_all` looks past every due time:
    /// it is for when every delivery is in, at the end of a replay or a backfill.)
    fn wake_up(&self, now: Time) -> WakeUp {
        let settle_ms = self.settings.settle_secs * 1000;
        let due = now + chrono::TimeDelta::milliseconds(settle_ms);
        let margin_ms = 2 * self.settings.store_timeout_ms as i64 + MARKER_MARGIN_SECS * 1000;
        if settle_ms <= margin_ms {
            return WakeUp { due, shared: false };
        }
        let bucket_ms = MARKER_BUCKET_MS;
        let ms = due.timestamp_millis();
        let end = ms.div_euclid(bucket_ms) * bucket_ms
            + bucket_ms * i64::from(ms.rem_euclid(bucket_ms) != 0);
        WakeUp {
            due: chrono::DateTime::from_timestamp_millis(end).unwrap_or(due),
            shared: true,
        }
    }
}

/// Width of the buckets of due times in which deliveries share a wake-up marker
/// ([`Engine::wake_up`]).
pub const MARKER_BUCKET_MS: i64 = 1000;
/// Margin, beyond a delivery's two store operations, by which the settle period must exceed a
/// delivery's longest time from read to commit for markers to be shared ([`Engine::wake_up`]).
pub const MARKER_MARGIN_SECS: i64 = 5;

/// When a delivery's scope is to be woken up, and whether deliveries share that marker.
struct WakeUp {
    due: Time,
    shared: bool,
}

/// The version a delivery writes its wake-up markers under: its tag (64 bits of SHA-256 of
/// source and delivery ID), never 0.
fn marker_version(tag: &str) -> u64 {
    u64::from_str_radix(tag, 16).unwrap_or(1).max(1)
}

/// A random drainer identity: std's per-process random hash keys, so no extra dependency.
fn new_holder() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish().max(1)
}

/// A stored record's data; a record that is there but cannot be decoded is an error, never
/// taken as absent.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    tx: &Tx<'_>,
    key: &crate::store::Key,
) -> Result<Option<T>, EngineError> {
    match tx.get(key) {
        None => Ok(None),
        Some(r) => r
            .data
            .decode()
            .map(Some)
            .map_err(|e| EngineError::Corrupt(format!("{}/{}", key.pk, key.sk), e.to_string())),
    }
}

/// Inputs that tests of the engine and of the pipeline share.
#[cfg(test)]
pub(crate) mod testing {
    use crate::model::{Action, Input, Kind, Repo, WorkEvent};

    /// Issue 1 of repository `a/<r>`, opened and closed (one delivery's inputs).
    pub(crate) fn closed_issue(r: usize) -> Vec<Input> {
        [
            (Action::Open, "2024-01-01T10:00:00Z"),
            (Action::Close, "2024-01-01T11:00:00Z"),
        ]
        .into_iter()
        .map(|(action, at)| {
            let key = format!("gh/issue/a/{r}/1");
            let mut ev = WorkEvent::new(Kind::Issue, key, "ISSUE #1".into(), action);
            ev.repo = Some(Repo::new(&format!("a/{r}")));
            ev.at = Some(at.parse().unwrap());
            if action == Action::Open {
                ev.start = ev.at;
            } else {
                ev.end = ev.at;
            }
            Input::Work(ev)
        })
        .collect()
    }
}

/// The records a delivery's inputs touch: items, their summaries, pushes, and the wake-up
/// markers it would share.
fn records_touched(inputs: &[Input], wake: &WakeUp) -> Vec<crate::store::Key> {
    let mut wanted = Vec::new();
    for input in inputs {
        let scope = match input {
            Input::Work(ev) => {
                let scope = scope::scope_of(ev.repo.as_ref(), &ev.key);
                wanted.push(keys::item(&ev.key));
                wanted.push(keys::summary(&scope, &ev.key));
                if scope.is_repo() {
                    wanted.push(keys::sealed_summary(&scope, &ev.key));
                }
                scope
            }
            Input::Push(p) => {
                let scope = scope::scope_of(Some(&p.repo), "");
                wanted.push(keys::push(&scope, &p.after));
                wanted.push(keys::sealed_push(&scope, &p.after));
                scope
            }
        };
        if wake.shared {
            wanted.push(keys::pending(wake.due, &scope));
        }
    }
    wanted
}

/// What recording one input did.
#[derive(Debug, PartialEq)]
enum Step {
    /// Recorded (or nothing new).
    Done,
    /// The delivery was recorded before: nothing may change.
    Duplicate,
}

/// One delivery being recorded, input by input, in one transaction.
struct Delivery<'a> {
    source: &'a str,
    /// The delivery's tag, on every fact it brings.
    tag: String,
    now: Time,
    ttl: i64,
    /// Records this delivery wrote already (a tag found there is its own).
    written: std::collections::HashSet<crate::store::Key>,
    applied: Applied,
    /// Scopes with something new to settle.
    scopes: BTreeSet<keys::Scope>,
}

impl Delivery<'_> {
    /// A work event: its fact added to its item, the item's summary rewritten. A delivery's
    /// facts are committed together, each tagged with it: one tagged fact as read (not as this
    /// attempt wrote it) means the delivery was applied before.
    fn work(&mut self, tx: &mut Tx<'_>, ev: &crate::model::WorkEvent) -> Result<Step, EngineError> {
        let ik = keys::item(&ev.key);
        let mut record: ItemRecord = decode(tx, &ik)?.unwrap_or_default();
        if !self.written.contains(&ik) && record.has_delivery(&self.tag) {
            return Ok(Step::Duplicate);
        }
        self.written.insert(ik.clone());
        let before = facts::generations(&record.facts);
        match record.add(Fact::new(self.source, ev).delivered_by(&self.tag)) {
            Added::Nothing => return Ok(Step::Done),
            // the same event under another delivery ID: only the tags change
            Added::Delivery => {
                tx.put(ik, &record, self.ttl);
                return Ok(Step::Done);
            }
            Added::Fact => self.applied.facts += 1,
        }
        let after = facts::generations(&record.facts);
        let was_open = before.last().is_some_and(|g| !g.closed());
        if ev.action == Action::Close {
            self.applied.closed += 1;
        } else if after.len() > before.len() {
            self.applied.opened += 1;
        } else if was_open && before != after {
            self.applied.updated += 1;
        }
        let scope = scope::scope_of(ev.repo.as_ref(), &ev.key);
        let sk = keys::summary(&scope, &ev.key);
        // A sealed item comes back live with what the drain recorded for it (`seal`).
        let prev = match decode::<Summary>(tx, &sk)? {
            Some(p) => Some(p),
            None if scope.is_repo() => {
                decode::<Summary>(tx, &keys::sealed_summary(&scope, &ev.key))?
            }
            None => None,
        };
        if let Some(summary) = Summary::of_generations(&ev.key, &record, &after, self.now, prev) {
            tx.put(sk, &summary, self.ttl);
        }
        tx.put(ik, &record, self.ttl);
        self.scopes.insert(scope);
        Ok(Step::Done)
    }

    /// A push: merged into the push record of its head commit (a redelivery listing other
    /// commits adds them).
    fn push(&mut self, tx: &mut Tx<'_>, p: &crate::model::Push) -> Result<Step, EngineError> {
        let scope = scope::scope_of(Some(&p.repo), "");
        let pk = keys::push(&scope, &p.after);
        let mut fact = PushFact::of(p);
        fact.deliveries.push(self.tag.clone());
        let mut settle = true;
        let known = match decode::<PushFact>(tx, &pk)? {
            Some(k) => Some(k),
            None => decode::<PushFact>(tx, &keys::sealed_push(&scope, &p.after))?,
        };
        if let Some(known) = known {
            if !self.written.contains(&pk) && known.deliveries.contains(&self.tag) {
                return Ok(Step::Duplicate);
            }
            let mut merged = known.clone();
            merged.merge(&fact);
            if merged == known {
                return Ok(Step::Done);
            }
            // only the tags changed: nothing to settle
            settle = (&merged.commits, merged.time) != (&known.commits, known.time);
            fact = merged;
        }
        self.written.insert(pk.clone());
        fact.touched = Some(self.now);
        tx.put(pk, &fact, self.ttl);
        if settle {
            self.applied.facts += 1;
            self.scopes.insert(scope);
        }
        Ok(Step::Done)
    }

    /// The wake-up markers of the scopes with something new. A marker's key is its due time
    /// and its scope. Each delivery writes it under a version of its own (its tag), and a
    /// drainer removes a marker only while it still has the version it read: a delivery that
    /// lands while its scope is being settled keeps its wake-up. With a shared due time
    /// (`WakeUp::shared`) the delivery read the marker it would write, and one that is already
    /// there is left as it is: it will wake the scope at the same time, after this delivery's
    /// commit.
    fn wake(&self, tx: &mut Tx<'_>, wake: &WakeUp) {
        let version = marker_version(&self.tag);
        for scope in &self.scopes {
            let key = keys::pending(wake.due, scope);
            if !wake.shared {
                tx.put_unread(key, &serde_json::json!({}), self.ttl, version);
            } else if tx.get(&key).is_none() {
                tx.put_over(key, &serde_json::json!({}), self.ttl, version);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{Commit, Kind, ParentRef, Push, Repo, WorkEvent};
    use crate::store::memory::MemoryStore;
    use crate::store::{Key, KeyRange, Order};

    fn t(s: &str) -> Time {
        s.parse().unwrap()
    }

    fn engine() -> (Engine, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        (Engine::new(store.clone(), config), store)
    }

    fn event(action: Action, at: &str) -> Input {
        let mut ev = WorkEvent::new(
            Kind::Issue,
            "gh/issue/a/b/1".into(),
            "ISSUE #1".into(),
            action,
        );
        ev.repo = Some(Repo::new("a/b"));
        ev.at = Some(t(at));
        if action == Action::Open {
            ev.start = ev.at;
        } else if action == Action::Close {
            ev.end = ev.at;
        }
        Input::Work(ev)
    }

    /// `event` about issue `n` of the same repository.
    fn issue(n: u32, action: Action, at: &str) -> Input {
        let Input::Work(mut ev) = event(action, at) else {
            unreachable!()
        };
        ev.key = format!("gh/issue/a/b/{n}");
        ev.name = format!("ISSUE #{n}");
        Input::Work(ev)
    }

    fn push(commits: &[&str]) -> Input {
        Input::Push(Push {
            repo: Repo::new("a/b"),
            branch: "main".into(),
            to_default_branch: true,
            before: None,
            after: "ff00".into(),
            time: t("2024-01-01T10:00:00Z"),
            commits: commits
                .iter()
                .map(|sha| Commit {
                    sha: sha.to_string(),
                    time: t("2024-01-01T09:00:00Z"),
                    message: String::new(),
                    merges: false,
                })
                .collect(),
            attributes: Default::default(),
        })
    }

    async fn record<T: serde::de::DeserializeOwned>(store: &MemoryStore, key: Key) -> T {
        let got = store.get_many(&[key]).await.unwrap().remove(0);
        got.expect("stored").data.decode().unwrap()
    }

    async fn pending(store: &MemoryStore) -> usize {
        let markers = drain::pending_markers(store, KeyRange::all(), 10_000);
        markers.await.unwrap().len()
    }

    #[tokio::test]
    async fn a_redelivery_is_found_by_its_tag_and_writes_nothing() {
        let (engine, store) = engine();
        let open = [event(Action::Open, "2024-01-01T10:00:00Z")];
        let first = engine.apply("github", "d-1", &open).await.unwrap();
        assert_eq!((first.duplicate, first.opened), (false, 1));
        let item: ItemRecord = record(&store, keys::item("gh/issue/a/b/1")).await;
        let tag = crate::model::ids::delivery_tag("github", "d-1");
        assert_eq!(item.facts[0].deliveries, vec![tag]);
        // no separate delivery record (as before tags), one wake-up marker
        let old = store.get_many(&[Key::one("delivery#github#d-1")]).await;
        assert_eq!(old.unwrap(), vec![None]);
        assert_eq!(pending(&store).await, 1);

        let writes = store.requests();
        let again = engine.apply("github", "d-1", &open).await.unwrap();
        assert!(again.duplicate, "{again:?}");
        assert_eq!(again.requests, 1, "one read, no commit");
        assert_eq!(store.requests(), writes + 1);
        // The same ID from another source is another delivery.
        let other = engine.apply("gitlab", "d-1", &open).await.unwrap();
        assert!(!other.duplicate);
    }

    #[tokio::test]
    async fn the_same_event_under_a_new_id_only_adds_its_tag() {
        let (engine, store) = engine();
        let open = [event(Action::Open, "2024-01-01T10:00:00Z")];
        engine.apply("github", "d-1", &open).await.unwrap();
        let summary_key = keys::summary(&keys::Scope::Repo("a/b".into()), "gh/issue/a/b/1");
        let summary: serde_json::Value = record(&store, summary_key.clone()).await;

        let second = engine.apply("github", "d-2", &open).await.unwrap();
        assert_eq!(
            (second.duplicate, second.opened, second.updated),
            (false, 0, 0)
        );
        let item: ItemRecord = record(&store, keys::item("gh/issue/a/b/1")).await;
        assert_eq!(item.facts.len(), 1, "one fact");
        let mut tags = vec![
            crate::model::ids::delivery_tag("github", "d-1"),
            crate::model::ids::delivery_tag("github", "d-2"),
        ];
        tags.sort();
        assert_eq!(item.facts[0].deliveries, tags, "both deliveries, sorted");
        let unchanged: serde_json::Value = record(&store, summary_key).await;
        assert_eq!(unchanged, summary, "the summary is not rewritten");
        assert_eq!(pending(&store).await, 1, "nothing new to settle");
        // Now both are recognised.
        for id in ["d-1", "d-2"] {
            assert!(engine.apply("github", id, &open).await.unwrap().duplicate);
        }
    }

    #[tokio::test]
    async fn a_fact_the_cap_does_not_keep_writes_nothing() {
        let (engine, store) = engine();
        let open = [event(Action::Open, "2024-01-01T10:00:00Z")];
        engine.apply("github", "d-open", &open).await.unwrap();
        for i in 0..facts::MAX_FACTS {
            let at = t("2024-01-02T00:00:00Z") + chrono::TimeDelta::seconds(i as i64);
            let update = [event(Action::Update, &at.to_rfc3339())];
            engine
                .apply("github", &format!("d-{i}"), &update)
                .await
                .unwrap();
        }
        let item: ItemRecord = record(&store, keys::item("gh/issue/a/b/1")).await;
        assert_eq!(item.facts.len(), facts::MAX_FACTS);
        let markers = pending(&store).await;
        // An update older than every kept one: the cap would drop it at once. Before, it was
        // written anyway (the record unchanged, a wake-up marker added), and so was every
        // redelivery of it, its tag being dropped with it.
        let late = [event(Action::Update, "2024-01-01T12:00:00Z")];
        for _ in 0..2 {
            let requests = store.requests();
            let applied = engine.apply("github", "d-late", &late).await.unwrap();
            assert_eq!(applied.requests, 1, "one read, no commit: {applied:?}");
            assert_eq!(store.requests(), requests + 1);
        }
        let after: ItemRecord = record(&store, keys::item("gh/issue/a/b/1")).await;
        assert_eq!(after, item);
        assert_eq!(pending(&store).await, markers, "nothing to settle");
    }

    #[tokio::test]
    async fn two_facts_of_one_item_in_one_delivery_are_not_their_own_redelivery() {
        let (engine, store) = engine();
        let both = [
            event(Action::Open, "2024-01-01T10:00:00Z"),
            event(Action::Close, "2024-01-01T11:00:00Z"),
        ];
        let a = engine.apply("jenkins", "run-7", &both).await.unwrap();
        assert_eq!((a.duplicate, a.opened, a.closed), (false, 1, 1), "{a:?}");
        let item: ItemRecord = record(&store, keys::item("gh/issue/a/b/1")).await;
        assert_eq!(item.facts.len(), 2);
        assert!(
            engine
                .apply("jenkins", "run-7", &both)
                .await
                .unwrap()
                .duplicate
        );
    }

    #[tokio::test]
    async fn tags_are_a_function_of_the_set_of_deliveries() {
        let open = [event(Action::Open, "2024-01-01T10:00:00Z")];
        let ids: Vec<String> = (0..12).map(|i| format!("d-{i}")).collect();
        let mut stored = Vec::new();
        for order in [ids.clone(), ids.iter().rev().cloned().collect()] {
            let (engine, store) = engine();
            for id in &order {
                engine.apply("github", id, &open).await.unwrap();
            }
            let item: ItemRecord = record(&store, keys::item("gh/issue/a/b/1")).await;
            assert_eq!(item.facts[0].deliveries.len(), facts::MAX_DELIVERIES);
            stored.push(item);
        }
        assert_eq!(stored[0], stored[1]);
    }

    #[tokio::test]
    async fn a_push_remembers_its_deliveries_too() {
        let (engine, store) = engine();
        let first = engine
            .apply("github", "p-1", &[push(&["aa"])])
            .await
            .unwrap();
        assert!(!first.duplicate);
        assert_eq!(pending(&store).await, 1);
        assert!(
            engine
                .apply("github", "p-1", &[push(&["aa"])])
                .await
                .unwrap()
                .duplicate
        );
        // The same push under a new ID: its tag is kept, nothing to settle.
        engine
            .apply("github", "p-2", &[push(&["aa"])])
            .await
            .unwrap();
        assert_eq!(pending(&store).await, 1);
        // The same push listing another commit: settled again.
        engine
            .apply("github", "p-3", &[push(&["aa", "bb"])])
            .await
            .unwrap();
        let fact: PushFact =
            record(&store, keys::push(&keys::Scope::Repo("a/b".into()), "ff00")).await;
        assert_eq!(fact.commits.len(), 2);
        assert_eq!(fact.deliveries.len(), 3);
        assert!(pending(&store).await >= 1);
    }

    /// The histogram counts of issue durations (every series of that name).
    async fn issue_durations(store: &MemoryStore) -> u64 {
        let all = store.query(keys::METRIC, KeyRange::all(), 10_000, Order::Ascending);
        let mut n = 0;
        for r in all.await.unwrap() {
            let s: metrics::Series = r.data.decode().unwrap();
            if s.name.contains("issue") && s.name.contains("duration") {
                n += s.count;
            }
        }
        n
    }

    /// Issue 1 of a/b, opened and closed, settled: one issue duration counted.
    async fn settled_issue() -> (Engine, Arc<MemoryStore>) {
        let (engine, store) = engine();
        let a = [
            issue(1, Action::Open, "2024-01-01T10:00:00Z"),
            issue(1, Action::Close, "2024-01-01T11:00:00Z"),
        ];
        engine.apply("github", "a", &a).await.unwrap();
        let day = chrono::TimeDelta::days(1);
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 1);
        (engine, store)
    }

    #[tokio::test]
    async fn a_ledger_lives_exactly_as_long_as_its_summary() {
        // Records expire when nothing rewrites them for VALUESTREAM_TTL_OPEN_DAYS. A late fact
        // that changes no metric rewrites the item's summary but not what it contributed; if the
        // ledger were a record of its own it would expire first, and the next settle of the
        // repository would count the item again.
        let (engine, store) = settled_issue().await;
        let day = chrono::TimeDelta::days(1);

        // Much later, a fact that changes nothing that is counted.
        let before = store.dump();
        let late = [issue(1, Action::Update, "2024-01-01T10:30:00Z")];
        let b = engine.apply("github", "b", &late).await.unwrap();
        assert_eq!(b.requests, 2, "{b:?}");
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 1);

        // Time passes: every record of the repository that nothing rewrote since expires.
        let scope = keys::scope_partitions(&keys::Scope::Repo("a/b".into()));
        for old in before.iter().filter(|r| scope.contains(&r.key.pk)) {
            let now = store.dump();
            let same = now.iter().find(|r| r.key == old.key);
            if same.is_some_and(|r| r.version == old.version) {
                store.expire(&old.key);
            }
        }
        // Another issue of the repository settles the scope again.
        let c = [
            issue(2, Action::Open, "2024-02-01T10:00:00Z"),
            issue(2, Action::Close, "2024-02-01T11:00:00Z"),
        ];
        engine.apply("github", "c", &c).await.unwrap();
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 2, "issue 1 counted once");
    }

    /// The ledger as versions before tallies wrote it: one contribution per observation.
    fn contributions_of(tally: &[scope::Tally]) -> Vec<scope::Contribution> {
        tally
            .iter()
            .map(|t| {
                assert_eq!(t.count, 1, "one observation: {t:?}");
                scope::Contribution {
                    name: t.name.to_string(),
                    labels: t.labels.clone(),
                    value: t.sum_ms,
                }
            })
            .collect()
    }

    fn put_raw(key: Key, data: crate::store::Data) -> crate::store::Write {
        crate::store::Write::Put {
            record: crate::store::Record {
                key,
                version: 7,
                expires_at: crate::store::now_epoch() + 3600,
                data,
            },
            cond: crate::store::Cond::Any,
        }
    }

    #[tokio::test]
    async fn a_ledger_stored_on_its_own_is_read_and_moved_into_the_summary() {
        // A store written before the ledger moved into the summary holds it as `l#<owner>`.
        let (engine, store) = settled_issue().await;
        let day = chrono::TimeDelta::days(1);
        let sk = keys::summary(&keys::Scope::Repo("a/b".into()), "gh/issue/a/b/1");
        let lk = keys::ledger(&keys::Scope::Repo("a/b".into()), "gh/issue/a/b/1");
        let mut summary: Summary = record(&store, sk.clone()).await;
        let tally = summary.tally.take().expect("the tally is in the summary");
        assert_eq!(tally.len(), 1, "{tally:?}");
        let ledger = contributions_of(&tally);
        let old = [
            put_raw(sk.clone(), crate::store::Data::encode(&summary).unwrap()),
            put_raw(lk.clone(), crate::store::Data::encode(&ledger).unwrap()),
        ];
        store.commit(old.into()).await.unwrap();

        // A fact that changes nothing counted leaves the old record where it is, and counts
        // nothing again.
        let late = [issue(1, Action::Update, "2024-01-01T10:30:00Z")];
        engine.apply("github", "b", &late).await.unwrap();
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 1);
        assert!(store.get_many(std::slice::from_ref(&lk)).await.unwrap()[0].is_some());

        // A fact that changes the duration takes the old value back through the old ledger,
        // and moves the ledger into the summary.
        let reclosed = [issue(1, Action::Close, "2024-01-01T10:45:00Z")];
        engine.apply("github", "c", &reclosed).await.unwrap();
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 1, "retracted, then added");
        assert_eq!(store.get_many(&[lk]).await.unwrap(), vec![None], "removed");
        let summary: Summary = record(&store, sk).await;
        let moved = summary.tally.expect("moved into the summary");
        assert_eq!(moved.len(), 1);
        assert_ne!(moved, tally, "the new duration");
    }

    #[tokio::test]
    async fn a_summary_in_the_partition_before_the_shards_is_merged_moved_and_counted_once() {
        // A store written before the scope shards keeps a repository's summaries under
        // `scope#repo#<name>`. Deliveries now write the item's shard, without what the drain
        // recorded (exported generations, the applied tally); settlements read both.
        let (engine, store) = settled_issue().await;
        let day = chrono::TimeDelta::days(1);
        let scope = keys::Scope::Repo("a/b".into());
        let home = keys::summary(&scope, "gh/issue/a/b/1");
        let legacy = keys::legacy_summary(&scope, "gh/issue/a/b/1");
        assert_ne!(home, legacy);
        let settled: Summary = record(&store, home.clone()).await;
        assert_eq!(settled.exported, [0]);
        let data = crate::store::Data::encode(&settled).unwrap();
        let old = crate::store::Write::Delete {
            key: home.clone(),
            cond: crate::store::Cond::Any,
        };
        store
            .commit(vec![old, put_raw(legacy.clone(), data)])
            .await
            .unwrap();
        let present = |key: Key| {
            let store = store.clone();
            async move { store.get_many(&[key]).await.unwrap()[0].is_some() }
        };

        // Read where it is: nothing exported or counted again.
        let again = engine.settle(engine.now() + day).await.unwrap();
        assert!(again.spans.is_empty(), "{:?}", again.spans);
        assert_eq!(issue_durations(&store).await, 1);

        // A fact that changes nothing counted: the delivery writes the item's shard afresh;
        // the settlement merges the two, exports nothing again, and moves the summary.
        let late = [issue(1, Action::Update, "2024-01-01T10:30:00Z")];
        engine.apply("github", "b", &late).await.unwrap();
        let fresh: Summary = record(&store, home.clone()).await;
        assert!(
            fresh.exported.is_empty() && fresh.tally.is_none(),
            "{fresh:?}"
        );
        let moved = engine.settle(engine.now() + day).await.unwrap();
        assert!(moved.spans.is_empty(), "{:?}", moved.spans);
        assert_eq!(issue_durations(&store).await, 1);
        assert!(
            !present(legacy.clone()).await,
            "moved out of the legacy partition"
        );
        let merged: Summary = record(&store, home.clone()).await;
        assert_eq!(merged.exported, [0]);
        assert_eq!(merged.tally, settled.tally);

        // A change of the duration takes the old value back exactly once.
        let reclosed = [issue(1, Action::Close, "2024-01-01T10:45:00Z")];
        engine.apply("github", "c", &reclosed).await.unwrap();
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 1, "retracted, then added");
        let series = metrics::stored(store.as_ref(), Some(metrics::ISSUE_DURATION));
        let sum: i64 = series.await.unwrap().iter().map(|s| s.sum_ms).sum();
        assert_eq!(sum, 2_700_000);
    }

    #[tokio::test]
    async fn a_push_in_the_partition_before_the_shards_is_merged_with_its_redelivery() {
        // The same push in the legacy partition and in its shard is one push: its commits
        // united, counted once.
        let (engine, store) = engine();
        let scope = keys::Scope::Repo("a/b".into());
        engine
            .apply("github", "p1", &[push(&["aa01"])])
            .await
            .unwrap();
        let home = keys::push(&scope, "ff00");
        let first: crate::engine::scope::PushFact = record(&store, home.clone()).await;
        let legacy = Key::new(keys::scope_pk(&scope), home.sk.clone());
        let data = crate::store::Data::encode(&first).unwrap();
        let old = crate::store::Write::Delete {
            key: home.clone(),
            cond: crate::store::Cond::Any,
        };
        store
            .commit(vec![old, put_raw(legacy, data)])
            .await
            .unwrap();
        engine
            .apply("github", "p2", &[push(&["aa02"])])
            .await
            .unwrap();
        let mut tx = crate::engine::tx::Tx::new(store.as_ref());
        let budget = memory::MemoryBudget::new(1 << 30);
        let read = drain::read_scope_for_test(&mut tx, &scope, &budget).await;
        assert_eq!(read.len(), 1, "one push: {read:?}");
        let shas: Vec<&str> = read[0].commits.iter().map(|c| c.sha.as_str()).collect();
        assert_eq!(shas, ["aa01", "aa02"]);
        assert_eq!(read[0].deliveries.len(), 2);
    }

    #[tokio::test]
    async fn a_ledger_of_contributions_in_the_summary_is_read_as_its_tally() {
        // Versions before tallies kept one contribution per observation in the summary.
        let (engine, store) = settled_issue().await;
        let day = chrono::TimeDelta::days(1);
        let sk = keys::summary(&keys::Scope::Repo("a/b".into()), "gh/issue/a/b/1");
        let mut summary: Summary = record(&store, sk.clone()).await;
        let tally = summary.tally.take().unwrap();
        summary.ledger = Some(contributions_of(&tally));
        let data = crate::store::Data::encode(&summary).unwrap();
        store.commit(vec![put_raw(sk.clone(), data)]).await.unwrap();
        let sum_ms = || async {
            let series = metrics::stored(store.as_ref(), Some(metrics::ISSUE_DURATION));
            series.await.unwrap().iter().map(|s| s.sum_ms).sum::<i64>()
        };
        assert_eq!(sum_ms().await, 3_600_000);

        // Closed 15 minutes earlier: the old hour is taken back through the old ledger.
        let reclosed = [issue(1, Action::Close, "2024-01-01T10:45:00Z")];
        engine.apply("github", "c", &reclosed).await.unwrap();
        engine.settle(engine.now() + day).await.unwrap();
        assert_eq!(issue_durations(&store).await, 1, "retracted, then added");
        assert_eq!(sum_ms().await, 2_700_000);
        let summary: Summary = record(&store, sk).await;
        assert_eq!(summary.ledger, None, "rewritten as a tally");
        assert_eq!(summary.tally.unwrap()[0].sum_ms, 2_700_000);
    }

    use crate::store::memory::spy::{run_once, Hooks, Once, Spy};

    /// Runs its future once, right before the first commit made only of wake-up marker
    /// removals: between a settlement's transaction and the removal of its markers.
    #[derive(Default)]
    struct BeforeMarkerRemoval(Once);

    #[async_trait::async_trait]
    impl Hooks for BeforeMarkerRemoval {
        async fn before_commit(&self, writes: &[crate::store::Write]) {
            let removals = writes.iter().all(
                |w| matches!(w, crate::store::Write::Delete { key, .. } if key.pk.starts_with(keys::PENDING_LEGACY)),
            );
            if removals && !writes.is_empty() {
                run_once(&self.0).await;
            }
        }
    }

    /// Remembers every key read by `get_many`.
    #[derive(Default)]
    struct KeysRead(std::sync::Mutex<Vec<Key>>);

    impl Hooks for KeysRead {
        fn on_get(&self, keys: &[Key]) {
            self.0.lock().unwrap().extend(keys.iter().cloned());
        }
    }

    #[tokio::test]
    async fn a_settlement_reads_the_outside_items_its_due_items_reach_and_no_others() {
        // Every issue of a/b names a tracker item of its own (`jira:X-<n>`, a scope of its
        // own), and each of those names an epic. Settling one new issue reads its tracker item
        // and that item's epic (its trace is the epic's), not the 20 other issues' tracker items.
        let store = Arc::new(Spy::new(Arc::new(MemoryStore::new()), KeysRead::default()));
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        let engine = Engine::new(store.clone(), config);
        let day = chrono::TimeDelta::days(1);
        let tracker = |n: u32, epic: Option<&str>| {
            let mut ev = WorkEvent::new(
                Kind::Issue,
                format!("jira:X-{n}"),
                format!("X-{n}"),
                Action::Open,
            );
            ev.at = Some(t("2024-01-01T09:00:00Z"));
            ev.start = ev.at;
            if let Some(e) = epic {
                ev.parents.push(ParentRef::Item(e.to_string()));
            }
            Input::Work(ev)
        };
        let named = |n: u32, action: Action, at: &str| {
            let Input::Work(mut ev) = issue(n, action, at) else {
                unreachable!()
            };
            ev.parents.push(ParentRef::Item(format!("jira:X-{n}")));
            Input::Work(ev)
        };
        engine
            .apply("jira", "epic", &[tracker(0, None)])
            .await
            .unwrap();
        for n in 1..=21 {
            engine
                .apply("jira", &format!("t{n}"), &[tracker(n, Some("jira:X-0"))])
                .await
                .unwrap();
        }
        for n in 1..=20 {
            let open = named(n, Action::Open, "2024-01-01T10:00:00Z");
            let close = named(n, Action::Close, "2024-01-01T11:00:00Z");
            engine
                .apply("github", &format!("i{n}"), &[open, close])
                .await
                .unwrap();
        }
        engine.settle(engine.now() + day).await.unwrap();
        let open = named(21, Action::Open, "2024-01-02T10:00:00Z");
        let close = named(21, Action::Close, "2024-01-02T11:00:00Z");
        engine.apply("github", "i21", &[open, close]).await.unwrap();
        store.hooks.0.lock().unwrap().clear();
        let settled = engine.settle(engine.now() + day).await.unwrap();
        let span = settled
            .spans
            .iter()
            .find(|s| s.name == "ISSUE #21")
            .expect("issue 21 settled");
        assert_eq!(
            span.trace_id,
            crate::model::ids::trace_id("jira:X-0"),
            "the epic's trace"
        );
        let items_read: BTreeSet<String> = store
            .hooks
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|k| k.pk.starts_with("item#jira:"))
            .map(|k| k.pk.clone())
            .collect();
        assert_eq!(
            items_read,
            BTreeSet::from(["item#jira:X-0".to_string(), "item#jira:X-21".to_string()])
        );
    }

    #[tokio::test]
    async fn a_delivery_in_the_same_millisecond_as_a_settled_one_is_not_forgotten() {
        // With VALUESTREAM_SETTLE_SECS=0 a wake-up marker is due at once, and its key is the
        // due time (in ms) and the scope: two deliveries about one repository in the same
        // millisecond write the same key (GitHub sends a merge's pull_request, issues and push
        // deliveries together). When the second lands while a drainer settles the first, the
        // drainer's removal of the marker it read must not remove the second delivery's.
        let inner = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[("VALUESTREAM_SETTLE_SECS", "0")]).unwrap());
        let at = t("2024-03-01T12:00:00.123Z");
        let clock: Clock = Arc::new(move || at);
        let second = Engine::new(inner.clone(), config.clone()).with_clock(clock.clone());
        let hook = Box::pin(async move {
            let b = [
                issue(2, Action::Open, "2024-01-01T10:00:00Z"),
                issue(2, Action::Close, "2024-01-01T12:00:00Z"),
            ];
            second.apply("github", "b", &b).await.unwrap();
        });
        let store = Arc::new(Spy::new(
            inner.clone(),
            BeforeMarkerRemoval(tokio::sync::Mutex::new(Some(hook))),
        ));
        let engine = Engine::new(store.clone(), config).with_clock(clock);
        let a = [
            issue(1, Action::Open, "2024-01-01T10:00:00Z"),
            issue(1, Action::Close, "2024-01-01T11:00:00Z"),
        ];
        engine.apply("github", "a", &a).await.unwrap();
        engine.settle(at).await.unwrap();
        assert!(
            store.hooks.0.lock().await.is_none(),
            "the second delivery came in between"
        );
        assert_eq!(issue_durations(&inner).await, 1, "the first issue, settled");

        assert_eq!(
            pending(&inner).await,
            1,
            "the second delivery's marker is still there"
        );
        engine.settle(at).await.unwrap();
        assert_eq!(
            issue_durations(&inner).await,
            2,
            "the second issue, settled too"
        );
        assert_eq!(pending(&inner).await, 0);
    }

    #[tokio::test]
    async fn a_rewritten_marker_stays_on_its_own_and_the_others_go() {
        // Two deliveries about one repository, a millisecond apart: two wake-up markers. While
        // the drainer settles them, a third delivery lands in the second one's millisecond and
        // rewrites its marker. The drainer removes each marker on its own: the first goes, the
        // rewritten one stays. (Removed in one transaction, the rewritten marker made the
        // removal fail and kept both.)
        let inner = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[("VALUESTREAM_SETTLE_SECS", "0")]).unwrap());
        let first = t("2024-03-01T12:00:00.100Z");
        let second = t("2024-03-01T12:00:00.101Z");
        let at = |time: Time| -> Clock { Arc::new(move || time) };
        let plain = |time| Engine::new(inner.clone(), config.clone()).with_clock(at(time));
        let late = plain(second);
        let hook = Box::pin(async move {
            let c = [
                issue(3, Action::Open, "2024-01-01T10:00:00Z"),
                issue(3, Action::Close, "2024-01-01T13:00:00Z"),
            ];
            late.apply("github", "c", &c).await.unwrap();
        });
        for (n, time, id) in [(1, first, "a"), (2, second, "b")] {
            let closed = [
                issue(n, Action::Open, "2024-01-01T10:00:00Z"),
                issue(n, Action::Close, "2024-01-01T11:00:00Z"),
            ];
            plain(time).apply("github", id, &closed).await.unwrap();
        }
        assert_eq!(pending(&inner).await, 2);
        let store = Arc::new(Spy::new(
            inner.clone(),
            BeforeMarkerRemoval(tokio::sync::Mutex::new(Some(hook))),
        ));
        let drainer = Engine::new(store.clone(), config).with_clock(at(second));
        drainer.settle(second).await.unwrap();
        assert!(
            store.hooks.0.lock().await.is_none(),
            "the third came in between"
        );
        assert_eq!(issue_durations(&inner).await, 2);
        assert_eq!(
            pending(&inner).await,
            1,
            "only the rewritten marker is left"
        );
        drainer.settle(second).await.unwrap();
        assert_eq!(issue_durations(&inner).await, 3, "the third, settled next");
        assert_eq!(pending(&inner).await, 0);
    }

    /// The wake-up markers as (partition, sort key).
    async fn markers(store: &MemoryStore) -> Vec<(String, String)> {
        let all = drain::pending_markers(store, KeyRange::all(), 10_000)
            .await
            .unwrap();
        all.into_iter().map(|r| (r.key.pk, r.key.sk)).collect()
    }

    #[tokio::test]
    async fn deliveries_within_a_bucket_share_one_wake_up_marker() {
        // Default settle period (120 s): due times are rounded up to the next whole second.
        // Five deliveries about one repository at 12:00:01.100-.500 want the marker due at
        // 12:02:02: the first writes it, the others find it and write none. One at 12:00:02.100
        // wants the next second's.
        let store = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[]).unwrap());
        let at = |time: &str| -> Clock {
            let time = t(time);
            Arc::new(move || time)
        };
        for n in 1..=5 {
            let engine = Engine::new(store.clone(), config.clone())
                .with_clock(at(&format!("2024-03-01T12:00:01.{n}00Z")));
            let closed = [
                issue(n, Action::Open, "2024-01-01T10:00:00Z"),
                issue(n, Action::Close, "2024-01-01T11:00:00Z"),
            ];
            let applied = engine.apply("github", &format!("d-{n}"), &closed).await;
            assert_eq!(applied.unwrap().requests, 2, "one read, one commit");
        }
        let found = markers(&store).await;
        assert_eq!(found.len(), 1, "{found:?}");
        let (pk, sk) = &found[0];
        assert_eq!(sk, "2024-03-01T12:02:02.000Z#repo#a/b");
        assert!(pk.starts_with("pending#"), "a shard: {pk}");
        let later =
            Engine::new(store.clone(), config.clone()).with_clock(at("2024-03-01T12:00:02.100Z"));
        let closed = [
            issue(6, Action::Open, "2024-01-01T10:00:00Z"),
            issue(6, Action::Close, "2024-01-01T11:00:00Z"),
        ];
        later.apply("github", "d-6", &closed).await.unwrap();
        let sks: Vec<String> = markers(&store)
            .await
            .into_iter()
            .map(|(_, sk)| sk)
            .collect();
        assert_eq!(
            sks,
            [
                "2024-03-01T12:02:02.000Z#repo#a/b",
                "2024-03-01T12:02:03.000Z#repo#a/b"
            ]
        );
        // Not due before the end of its second; then the first marker settles the five.
        let drainer = |time: &str| Engine::new(store.clone(), config.clone()).with_clock(at(time));
        let early = drainer("2024-03-01T12:02:01.900Z");
        let none = early.settle(t("2024-03-01T12:02:01.900Z")).await.unwrap();
        assert!(none.spans.is_empty());
        let first = drainer("2024-03-01T12:02:02Z");
        let settled = first.settle(t("2024-03-01T12:02:02Z")).await.unwrap();
        assert_eq!(settled.spans.len(), 5);
        let last = drainer("2024-03-01T12:02:03Z");
        let settled = last.settle(t("2024-03-01T12:02:03Z")).await.unwrap();
        assert_eq!(settled.spans.len(), 1);
        assert!(markers(&store).await.is_empty());
        assert_eq!(issue_durations(&store).await, 6);
    }

    #[tokio::test]
    async fn with_a_short_settle_period_each_delivery_writes_its_own_marker() {
        // VALUESTREAM_SETTLE_SECS=0 (or anything not longer than two store timeouts and a
        // margin): a marker due to the millisecond per delivery, none read first.
        let store = Arc::new(MemoryStore::new());
        let config = Arc::new(Config::from_pairs(&[("VALUESTREAM_SETTLE_SECS", "20")]).unwrap());
        for n in 1..=3 {
            let time = t(&format!("2024-03-01T12:00:00.00{n}Z"));
            let engine =
                Engine::new(store.clone(), config.clone()).with_clock(Arc::new(move || time));
            let closed = [issue(n, Action::Close, "2024-01-01T11:00:00Z")];
            engine
                .apply("github", &format!("d-{n}"), &closed)
                .await
                .unwrap();
        }
        let sks: Vec<String> = markers(&store)
            .await
            .into_iter()
            .map(|(_, sk)| sk)
            .collect();
        assert_eq!(
            sks,
            [
                "2024-03-01T12:00:20.001Z#repo#a/b",
                "2024-03-01T12:00:20.002Z#repo#a/b",
                "2024-03-01T12:00:20.003Z#repo#a/b"
            ]
        );
    }

    #[tokio::test]
    async fn a_marker_under_the_legacy_partition_is_still_drained() {
        // A table written before the markers were sharded holds them under plain `pending`: a
        // drain reads that partition too, settles the scope and removes the marker.
        let (engine, store) = engine();
        let closed = [
            event(Action::Open, "2024-01-01T10:00:00Z"),
            event(Action::Close, "2024-01-01T11:00:00Z"),
        ];
        engine.apply("github", "d-1", &closed).await.unwrap();
        let mut moved = Vec::new();
        for (pk, sk) in markers(&store).await {
            moved.push(crate::store::Write::Delete {
                key: Key::new(pk, sk.clone()),
                cond: crate::store::Cond::Any,
            });
            moved.push(crate::store::Write::Put {
                record: crate::store::Record {
                    key: Key::new(keys::PENDING_LEGACY, sk),
                    version: 7,
                    expires_at: crate::store::now_epoch() + 3600,
                    data: crate::store::Data::from(serde_json::json!({})),
                },
                cond: crate::store::Cond::Any,
            });
        }
        store.commit(moved).await.unwrap();
        let left = markers(&store).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, "pending", "{left:?}");
        let settled = engine
            .settle(engine.now() + chrono::TimeDelta::days(1))
            .await
            .unwrap();
        assert_eq!(settled.spans.len(), 1);
        assert!(
            markers(&store).await.is_empty(),
            "the legacy marker removed"
        );
        assert_eq!(issue_durations(&store).await, 1);
    }

    #[tokio::test]
    async fn a_backlog_is_settled_by_one_drain_within_its_budget() {
        // More due wake-up markers than one query reads (500): a burst, or a replayed history.
        // A drain used to settle the first 500 only, so a backlog on AWS (a drain a minute)
        // shrank by 500 deliveries a minute at most. The budget is out of the way here (a
        // loaded machine took 9 s for these 1,200 scopes): what is checked is the markers past
        // the first query's 500.
        let (engine, store) = engine();
        let engine = engine.with_settle_budget(Duration::from_secs(600));
        for r in 0..1_200 {
            engine
                .apply("github", &format!("d-{r}"), &testing::closed_issue(r))
                .await
                .unwrap();
        }
        assert_eq!(pending(&store).await, 1_200);
        let day = chrono::TimeDelta::days(1);
        let settled = engine.settle(engine.now() + day).await.unwrap();
        assert_eq!((settled.scopes, settled.more), (1_200, false));
        assert_eq!(issue_durations(&store).await, 1_200);
        assert_eq!(pending(&store).await, 0);
    }

    #[tokio::test]
    async fn a_settle_out_of_budget_leaves_the_rest_to_the_next_drain() {
        let (engine, store) = engine();
        let engine = engine.with_settle_budget(Duration::ZERO);
        for r in 0..3 {
            let d = format!("d-{r}");
            engine
                .apply("github", &d, &testing::closed_issue(r))
                .await
                .unwrap();
        }
        let later = engine.now() + chrono::TimeDelta::days(1);
        // Each settle makes progress (one scope at least) and says whether it stopped early.
        let mut passes = Vec::new();
        for _ in 0..3 {
            let s = engine.settle(later).await.unwrap();
            passes.push((s.scopes, s.more, issue_durations(&store).await));
        }
        assert_eq!(passes, [(1, true, 1), (1, true, 2), (1, false, 3)]);
        assert_eq!(pending(&store).await, 0);
    }
}
