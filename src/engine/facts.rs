//! Facts about one work item, and the generations (spans) they describe.
//!
//! Every work event a delivery carries is kept as a *fact* of its item, in a set: facts are
//! deduplicated by content (the same event redelivered under a new ID adds only that delivery's
//! tag) and kept sorted by event time (payload time, never arrival), so the stored record, and
//! everything derived from it, is a function of the set of deliveries. A fact's delivery tags are
//! how a redelivery is recognised. [`generations`] reads the facts as the item's spans: a
//! reopening starts the next generation; the first close of a generation ends it, and its
//! attributes are the fold of the generation's facts in event-time order.

use crate::model::{attr, ids};
use crate::model::{
    Action, Attrs, ChangeStep, Ending, Kind, ParentRef, Repo, RepoTraits, SpanEvent, Time,
    WorkEvent, WorkResult,
};
use chrono::DateTime;
use serde::{Deserialize, Serialize};

/// At most this many facts are kept per item: all opens and closes first, then the latest
/// updates. Keeping the greatest facts of a total order keeps the record order-independent.
pub const MAX_FACTS: usize = 48;

/// At most this many delivery tags are kept per fact (the smallest, so the record stays a
/// function of the set of deliveries). More than one means the same event came under several
/// delivery IDs; redeliveries of any of them are recognised.
pub const MAX_DELIVERIES: usize = 8;

/// One work event, as a fact of its item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredFact")]
pub struct Fact {
    /// A hash of the event's content: the same event under another delivery ID is one fact.
    pub hash: String,
    pub source: String,
    pub ev: WorkEvent,
    /// Tags ([`ids::delivery_tag`]) of the deliveries that brought this fact: a redelivery is
    /// recognised by its tag. Facts stored before tags were kept have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<String>,
}

/// A fact as the store holds it: facts written before the repository traits and the pipeline
/// name were typed carry them as attributes, and are upgraded as they are read.
#[derive(Deserialize)]
struct StoredFact {
    hash: String,
    source: String,
    ev: WorkEvent,
    #[serde(default)]
    deliveries: Vec<String>,
}

impl From<StoredFact> for Fact {
    fn from(f: StoredFact) -> Self {
        let mut ev = f.ev;
        ev.upgrade_stored();
        Fact {
            hash: f.hash,
            source: f.source,
            ev,
            deliveries: f.deliveries,
        }
    }
}

impl Fact {
    pub fn new(source: &str, ev: &WorkEvent) -> Self {
        let body = serde_json::to_vec(ev).expect("work events serialize");
        Fact {
            hash: ids::short_hash(&body),
            source: source.to_string(),
            ev: ev.clone(),
            deliveries: Vec::new(),
        }
    }

    /// The same fact, brought by the delivery tagged `tag`.
    pub fn delivered_by(mut self, tag: &str) -> Self {
        self.deliveries = vec![tag.to_string()];
        self
    }

    /// When the fact happened: a close when it ended, anything else at the payload's own event
    /// time, else when it started.
    pub fn time(&self) -> Time {
        let ev = &self.ev;
        let first = if ev.action == Action::Close {
            ev.end.or(ev.at)
        } else {
            ev.at
        };
        first
            .or(ev.start)
            .or(ev.end)
            .or_else(|| ev.span_events.iter().map(|e| e.time).max())
            .unwrap_or(DateTime::UNIX_EPOCH)
    }

    fn rank(&self) -> u8 {
        match self.ev.action {
            Action::Open => 0,
            Action::Update => 1,
            Action::Close => 2,
        }
    }

    /// The total order of facts: event time, then open < update < close, then content.
    pub fn order_key(&self) -> (Time, u8, &str) {
        (self.time(), self.rank(), &self.hash)
    }

    /// Over the cap, the facts with the greatest priority stay: opens and closes, then updates
    /// that carry a change's steps (the earliest first: the first review and the ready mark
    /// bound the stages), then the latest plain updates.
    fn keep_priority(&self) -> (u8, i128, u8, &str) {
        let (t, r, h) = self.order_key();
        let nanos =
            i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
        match (self.ev.action, self.ev.steps.is_empty()) {
            (Action::Update, true) => (0, nanos, r, h),
            (Action::Update, false) => (1, -nanos, r, h),
            _ => (2, nanos, r, h),
        }
    }
}

/// What the store keeps of a work item: its facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub facts: Vec<Fact>,
}

/// What [`ItemRecord::add`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// A fact not known before.
    Fact,
    /// A known fact, under a delivery not known before (only its tags changed).
    Delivery,
    /// Nothing: the fact and its delivery were known, or the fact is one the cap
    /// ([`MAX_FACTS`]) does not keep.
    Nothing,
}

/// Adds the tags of `from` to `to`: sorted, deduplicated, the smallest [`MAX_DELIVERIES`].
/// True when `to` changed.
pub fn merge_tags(to: &mut Vec<String>, from: &[String]) -> bool {
    let before = to.clone();
    to.extend(from.iter().cloned());
    to.sort();
    to.dedup();
    to.truncate(MAX_DELIVERIES);
    *to != before
}

impl ItemRecord {
    /// Whether a fact of this item was brought by the delivery tagged `tag`.
    pub fn has_delivery(&self, tag: &str) -> bool {
        self.facts
            .iter()
            .any(|f| f.deliveries.iter().any(|d| d == tag))
    }

    /// Adds a fact, or the fact's delivery tags to the same fact already known.
    pub fn add(&mut self, fact: Fact) -> Added {
        if let Some(known) = self.facts.iter_mut().find(|f| f.hash == fact.hash) {
            return if merge_tags(&mut known.deliveries, &fact.deliveries) {
                Added::Delivery
            } else {
                Added::Nothing
            };
        }
        let hash = fact.hash.clone();
        self.facts.push(fact);
        if self.facts.len() > MAX_FACTS {
            self.facts
                .sort_by(|a, b| b.keep_priority().cmp(&a.keep_priority()));
            self.facts.truncate(MAX_FACTS);
        }
        self.facts.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        // Over the cap, the fact with the lowest priority goes; when that is the new one, the
        // record is as before and there is nothing to write (its redeliveries likewise).
        if self.facts.iter().any(|f| f.hash == hash) {
            Added::Fact
        } else {
            Added::Nothing
        }
    }

    /// The repository the item belongs to (its latest fact that names one).
    pub fn repo(&self) -> Option<Repo> {
        self.facts.iter().rev().find_map(|f| f.ev.repo.clone())
    }
}

/// One generation of an item: one span.
#[derive(Clone, Debug, PartialEq)]
pub struct Gen {
    pub index: u32,
    pub source: String,
    pub kind: Kind,
    pub name: String,
    pub start: Option<Time>,
    /// Set when the generation is closed.
    pub end: Option<Time>,
    pub outcome: Option<Ending>,
    pub attributes: Attrs,
    pub events: Vec<SpanEvent>,
    pub parents: Vec<ParentRef>,
    pub follows: Vec<String>,
    pub repo: Option<Repo>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    pub merge_sha: Option<String>,
    pub environment: Option<String>,
    pub traits: RepoTraits,
    pub pipeline: Option<String>,
    /// Changes: the title and labels of the latest fact that names them.
    pub change_title: Option<String>,
    pub change_labels: Vec<String>,
    /// Changes: the generation's steps (drafts, ready, review requests, reviews up to its
    /// close), in time order.
    pub steps: Vec<ChangeStep>,
}

impl Gen {
    /// The span's attributes: the facts' own, and the typed values the engine decided on
    /// (repository, traits, pipeline name).
    pub fn span_attributes(&self) -> Attrs {
        let mut a = self.attributes.clone();
        if let Some(repo) = &self.repo {
            a.insert(attr::REPOSITORY.into(), repo.0.clone().into());
        }
        for (k, v) in self.traits.entries() {
            a.insert(k.into(), v.into());
        }
        if let Some(p) = &self.pipeline {
            a.insert(attr::CICD_PIPELINE_NAME.into(), p.clone().into());
        }
        a
    }

    pub fn closed(&self) -> bool {
        self.end.is_some()
    }
    pub fn result(&self) -> Option<WorkResult> {
        self.outcome.as_ref().map(|o| o.result)
    }
    pub fn error(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.error)
    }
}

/// The reopening times of an item: opens flagged as reopenings, and opens that start after a
/// close ended.
fn reopen_times(facts: &[Fact]) -> Vec<Time> {
    let close_ends: Vec<Time> = facts
        .iter()
        .filter(|f| f.ev.action == Action::Close)
        .filter_map(|f| f.ev.end.or(f.ev.start))
        .collect();
    let mut times: Vec<Time> = facts
        .iter()
        .filter(|f| f.ev.action == Action::Open)
        .filter(|f| {
            f.ev.reopened
                || f.ev
                    .start
                    .is_some_and(|s| close_ends.iter().any(|e| s > *e))
        })
        .map(|f| f.ev.start.unwrap_or_else(|| f.time()))
        .collect();
    times.sort();
    times.dedup();
    times
}

/// The generations the facts describe, oldest first. `facts` are in fact order.
pub fn generations(facts: &[Fact]) -> Vec<Gen> {
    if facts.is_empty() {
        return Vec::new();
    }
    let reopens = reopen_times(facts);
    let gen_of = |f: &Fact| -> usize {
        let t = if f.ev.action == Action::Open && f.ev.reopened {
            f.ev.start.unwrap_or_else(|| f.time())
        } else {
            f.time()
        };
        reopens.iter().filter(|r| **r <= t).count()
    };
    let mut gens = Vec::new();
    for g in 0..=reopens.len() {
        let in_gen: Vec<&Fact> = facts.iter().filter(|f| gen_of(f) == g).collect();
        let close = in_gen
            .iter()
            .find(|f| f.ev.action == Action::Close)
            .copied();
        // The generation's facts up to its first close; later ones are late news.
        let folded: Vec<&Fact> = match close {
            Some(c) => in_gen
                .iter()
                .copied()
                .filter(|f| f.order_key() <= c.order_key())
                .collect(),
            None => in_gen.clone(),
        };
        let Some(mut gen) = Gen::fold(g as u32, &folded) else {
            continue;
        };
        gen.start = if g == 0 {
            folded.iter().find_map(|f| f.ev.start)
        } else {
            Some(reopens[g - 1])
        };
        if let Some(c) = close {
            gen.close(c);
        }
        gens.push(gen);
    }
    gens
}

impl Gen {
    /// Generation `index` as its facts (in fact order) tell it, times and outcome aside.
    fn fold(index: u32, folded: &[&Fact]) -> Option<Gen> {
        let last = folded.last()?;
        let mut gen = Gen {
            index,
            source: folded[0].source.clone(),
            kind: last.ev.kind,
            name: last.ev.name.clone(),
            start: None,
            end: None,
            outcome: None,
            attributes: Attrs::new(),
            events: Vec::new(),
            parents: Vec::new(),
            follows: Vec::new(),
            repo: None,
            head_branch: None,
            head_sha: None,
            merge_sha: None,
            environment: None,
            traits: RepoTraits::default(),
            pipeline: None,
            change_title: None,
            change_labels: Vec::new(),
            steps: Vec::new(),
        };
        for f in folded {
            gen.absorb(&f.ev);
        }
        gen.steps.sort();
        Some(gen)
    }

    /// One fact's event folded in: lists united, later values winning.
    fn absorb(&mut self, ev: &WorkEvent) {
        // Passed through onto the span, never read: later facts' values win.
        self.attributes.extend(ev.attributes.clone());
        push_new(&mut self.events, &ev.span_events);
        push_new(&mut self.steps, &ev.steps);
        push_new(&mut self.parents, &ev.parents);
        push_new(&mut self.follows, &ev.follows);
        self.repo = ev.repo.clone().or(self.repo.take());
        self.head_branch = ev.head_branch.clone().or(self.head_branch.take());
        self.head_sha = ev.head_sha.clone().or(self.head_sha.take());
        self.environment = ev.environment.clone().or(self.environment.take());
        self.traits.fold(&ev.traits);
        self.pipeline = ev.pipeline.clone().or(self.pipeline.take());
        if ev.change_title.is_some() {
            // A change's event names its title and all its labels.
            self.change_title = ev.change_title.clone();
            self.change_labels = ev.change_labels.clone();
        }
    }

    /// The generation closed by fact `c`: its end (no earlier than its start, nor than start
    /// plus a known run time), outcome and merge commit.
    fn close(&mut self, c: &Fact) {
        let start = self.start.or(c.ev.start).or(c.ev.end);
        if let Some(start) = start {
            self.start = Some(start);
            let end = c.ev.end.or(c.ev.start).unwrap_or(start).max(start);
            // A known run time: no earlier than start + duration (WorkEvent::duration_ms).
            let end =
                c.ev.duration_ms
                    .and_then(chrono::TimeDelta::try_milliseconds)
                    .and_then(|d| start.checked_add_signed(d))
                    .map_or(end, |e| end.max(e));
            self.end = Some(end);
        }
        self.outcome = c.ev.outcome.clone();
        self.merge_sha = c.ev.merge_sha.clone();
    }
}

/// Appends the items of `from` that `to` does not hold yet, in order.
fn push_new<T: Clone + PartialEq>(to: &mut Vec<T>, from: &[T]) {
    for x in from {
        if !to.contains(x) {
            to.push(x.clone());
        }
    }
}

/// Every head commit any fact named (a change's pushes move its head).
pub fn head_shas(facts: &[Fact]) -> Vec<String> {
    let mut shas: Vec<String> = facts
        .iter()
        .filter_map(|f| f.ev.head_sha.as_ref().map(|s| s.to_ascii_lowercase()))
        .collect();
    shas.sort();
    shas.dedup();
    shas
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, Ending};

    fn t(s: &str) -> Time {
        s.parse().unwrap()
    }

    fn ev(action: Action, start: &str, end: Option<&str>, at: Option<&str>) -> WorkEvent {
        let mut w = WorkEvent::new(Kind::Issue, "k".into(), "ISSUE".into(), action);
        w.start = Some(t(start));
        w.end = end.map(t);
        w.at = at.map(t);
        if action == Action::Close {
            w.outcome = Some(Ending::ok(WorkResult::Closed));
        }
        w
    }

    fn record(evs: &[WorkEvent]) -> ItemRecord {
        let mut r = ItemRecord::default();
        for e in evs {
            r.add(Fact::new("github", e));
        }
        r
    }

    #[test]
    fn the_record_is_the_same_whatever_the_order() {
        let mut open = ev(Action::Open, "2024-01-01T00:00:00Z", None, None);
        open.attributes.insert("a".into(), "1".into());
        let mut label = ev(
            Action::Update,
            "2024-01-01T00:00:00Z",
            None,
            Some("2024-01-02T00:00:00Z"),
        );
        label.attributes.insert("a".into(), "2".into());
        let close = ev(
            Action::Close,
            "2024-01-01T00:00:00Z",
            Some("2024-01-03T00:00:00Z"),
            Some("2024-01-03T00:00:00Z"),
        );
        let a = record(&[open.clone(), label.clone(), close.clone()]);
        let b = record(&[close.clone(), open.clone(), label.clone(), close.clone()]);
        assert_eq!(a, b);
        let g = generations(&a.facts);
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].attributes.get("a").and_then(AttrValue::as_str),
            Some("2"),
            "the later update wins"
        );
        assert_eq!(g[0].end, Some(t("2024-01-03T00:00:00Z")));
    }

    #[test]
    fn a_reopening_starts_the_next_generation() {
        let open = ev(Action::Open, "2024-01-01T00:00:00Z", None, None);
        let close1 = ev(
            Action::Close,
            "2024-01-01T00:00:00Z",
            Some("2024-01-02T00:00:00Z"),
            Some("2024-01-02T00:00:00Z"),
        );
        let mut reopen = ev(
            Action::Open,
            "2024-01-05T00:00:00Z",
            None,
            Some("2024-01-05T00:00:00Z"),
        );
        reopen.reopened = true;
        let close2 = ev(
            Action::Close,
            "2024-01-01T00:00:00Z",
            Some("2024-01-07T00:00:00Z"),
            Some("2024-01-07T00:00:00Z"),
        );
        let r = record(&[close2, reopen, close1, open]);
        let g = generations(&r.facts);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].start, Some(t("2024-01-01T00:00:00Z")));
        assert_eq!(g[0].end, Some(t("2024-01-02T00:00:00Z")));
        assert_eq!(g[1].start, Some(t("2024-01-05T00:00:00Z")));
        assert_eq!(g[1].end, Some(t("2024-01-07T00:00:00Z")));
    }

    #[test]
    fn the_cap_keeps_opens_closes_and_the_latest_updates() {
        let mut evs = vec![ev(Action::Open, "2024-01-01T00:00:00Z", None, None)];
        for i in 0..100 {
            let mut u = ev(Action::Update, "2024-01-01T00:00:00Z", None, None);
            u.at = Some(t("2024-01-01T00:00:00Z") + chrono::TimeDelta::seconds(i));
            evs.push(u);
        }
        let a = record(&evs);
        evs.reverse();
        let b = record(&evs);
        assert_eq!(a, b);
        assert_eq!(a.facts.len(), MAX_FACTS);
        assert_eq!(a.facts[0].ev.action, Action::Open);
    }

    #[test]
    fn a_fact_the_cap_does_not_keep_changes_nothing() {
        let update = |s: i64| {
            let mut u = ev(Action::Update, "2024-01-01T00:00:00Z", None, None);
            u.at = Some(t("2024-01-01T00:00:00Z") + chrono::TimeDelta::seconds(s));
            u
        };
        let mut evs = vec![ev(Action::Open, "2024-01-01T00:00:00Z", None, None)];
        evs.extend((100..100 + MAX_FACTS as i64 - 1).map(update));
        let mut r = record(&evs);
        assert_eq!(r.facts.len(), MAX_FACTS);
        let full = r.clone();
        // Older than every kept update: the cap drops it, and the record is as it was.
        let old = Fact::new("jira", &update(5)).delivered_by("00000000000000aa");
        assert_eq!(r.add(old.clone()), Added::Nothing);
        assert_eq!(r, full);
        assert_eq!(r.add(old), Added::Nothing, "its redelivery too");
        // Newer than the oldest kept update: kept, and the oldest goes.
        assert_eq!(r.add(Fact::new("jira", &update(1_000))), Added::Fact);
        assert_eq!(r.facts.len(), MAX_FACTS);
        assert_ne!(r, full);
    }

    #[test]
    fn facts_stored_with_traits_as_attributes_read_back_typed() {
        let mut ev = WorkEvent::new(Kind::PipelineRun, "k".into(), "RUN ci".into(), Action::Open);
        ev.start = Some(t("2024-01-01T10:00:00Z"));
        ev.repo = Some(Repo::new("acme/api"));
        // How a fact was written before the traits were typed.
        let mut old = serde_json::to_value(Fact::new("jenkins", &ev)).unwrap();
        old["ev"]["attributes"] = [
            (attr::REPOSITORY, "acme/api"),
            (attr::TEAM, "payments"),
            (attr::LANGUAGE, "Go"),
            (attr::CICD_PIPELINE_NAME, "ci"),
            (attr::CICD_PIPELINE_RUN_ID, "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
        let hash = old["hash"].clone();
        let fact: Fact = serde_json::from_value(old).unwrap();
        assert_eq!(
            serde_json::Value::String(fact.hash.clone()),
            hash,
            "the stored hash is kept"
        );
        let g = &generations(&[fact])[0];
        assert_eq!(g.traits.team.as_deref(), Some("payments"));
        assert_eq!(g.traits.language.as_deref(), Some("Go"));
        assert_eq!(g.pipeline.as_deref(), Some("ci"));
        let a = g.span_attributes();
        for (k, v) in [
            (attr::REPOSITORY, "acme/api"),
            (attr::TEAM, "payments"),
            (attr::LANGUAGE, "Go"),
            (attr::CICD_PIPELINE_NAME, "ci"),
            (attr::CICD_PIPELINE_RUN_ID, "7"),
        ] {
            assert_eq!(a.get(k).and_then(AttrValue::as_str), Some(v), "{k}");
        }
    }
}
