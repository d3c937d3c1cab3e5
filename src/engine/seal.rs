//! Sealed history (issue 30, parts 1-2): what keeps a settlement's reads bounded by what
//! changed, not by how much a repository has accumulated.
//!
//! A repository's records are *live* (its scope shards, read whole by every settlement) or
//! *sealed* (the `sealed#…` partitions, read by key). After a pass, a settlement seals the
//! settled records whose every time is before a cut `w` that lags the repository's latest event
//! by `VALUESTREAM_SEAL_AFTER_SECS`, and writes a [`Checkpoint`]: the cut, and which sealed
//! records later settlements still need. `dora::derive` is unchanged: a settlement derives the
//! live records together with those sealed records, and writes only the live owners.
//!
//! Which sealed records a live one can need, rule by rule (docs/ARCHITECTURE.md, "Sealed
//! history"):
//! - an environment's timeline: its last successful deployment and every one after it
//!   ([`Checkpoint::summaries`]);
//! - incidents' causes: production successes within the incident window before the cut;
//! - what a deployment ships: sealed landings from [`Checkpoint::landings_from`] on (a
//!   deployment whose environment last shipped before that reads the whole history);
//! - anything named by commit or branch: the `h#<sha>` and `b#<branch>` lookups ([`names`]);
//! - a parent chain through a sealed item: the trace it was sealed with
//!   ([`super::scope::Summary::sealed_trace`]).
//!
//! A fact that reaches before the cut (a late delivery, a backfill, a change of a sealed item)
//! makes the settlement read everything instead ([`needs_full`]), as before sealing existed.
//! The cut is *clean*: no deployment or incident spans it, so what the rules fold over time
//! starts again from the checkpoint.

use super::dora::{DeployInfo, Derived};
use super::scope::{GenRef, PushFact, Summary};
use super::settings::EngineSettings;
use crate::model::{Kind, ParentRef, Time, WorkResult};
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// A repository's cut and the sealed records later settlements read with its live ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every sealed record is before it; no deployment or incident spans it.
    pub w: Time,
    /// When it was written (the settle clock): the sealed records that live records written
    /// before then name are in `summaries` and `pushes`; a settlement looks up only what newer
    /// ones name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<Time>,
    /// Sealed landings (merged changes, default-branch pushes) from this time on are in
    /// `summaries` and `pushes`; a deployment that ships from before it reads everything.
    pub landings_from: Time,
    /// Sealed summaries (item keys) a settlement reads with the live records.
    pub summaries: Vec<String>,
    /// Sealed pushes (their `after` commit) a settlement reads with the live records.
    pub pushes: Vec<String>,
    /// Some sealed landing is before `landings_from` (and so not in `summaries`/`pushes`).
    #[serde(default)]
    pub landed_before: bool,
    /// Live changes that started before `w` when it was set (open pull requests): any other
    /// live change that starts before it is a late fact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub straddlers: Vec<String>,
    /// The latest sealed production success, if it ended within the incident window before
    /// the cut: an incident after the cut may still follow it (and make it a change failure),
    /// and whether a sealed incident already did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prod: Option<LastProd>,
}

/// The sealed deployment a live incident may follow ([`Checkpoint::last_prod`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastProd {
    pub key: String,
    /// A sealed incident followed it: it is a change failure whatever the live ones do.
    pub failed_by_sealed: bool,
}

/// Which sealed records name a commit or a branch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lookup {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summaries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<String>,
}

impl Lookup {
    pub fn add(&mut self, other: &Lookup) {
        for (mine, theirs) in [
            (&mut self.summaries, &other.summaries),
            (&mut self.pushes, &other.pushes),
        ] {
            mine.extend(theirs.iter().cloned());
            mine.sort();
            mine.dedup();
        }
    }
}

/// A commit (lower case) or a branch: what a lookup is keyed by. It borrows the record it is
/// the name of (a settlement takes thousands of names, most already in lower case).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Name<'a> {
    Sha(Cow<'a, str>),
    Branch(Cow<'a, str>),
}

/// The names a sealed summary is found by: a change's head and merge commits and head branch,
/// a deployment's commit.
pub fn names_of_summary(s: &Summary) -> BTreeSet<Name<'_>> {
    let mut out: BTreeSet<Name> = s.head_shas.iter().map(|x| sha(x)).collect();
    for g in &s.gens {
        out.extend(g.merge_sha.iter().chain(&g.head_sha).map(|x| sha(x)));
    }
    out.extend(s.head_branch.iter().map(|b| Name::Branch(b.into())));
    out
}

/// The names a sealed push is found by: its commits, and its branch unless the default one.
pub fn names_of_push(p: &PushFact) -> BTreeSet<Name<'_>> {
    let mut out: BTreeSet<Name> = p.commits.iter().map(|c| sha(&c.sha)).collect();
    out.insert(sha(&p.after));
    if !p.to_default_branch {
        out.insert(Name::Branch(p.branch.as_str().into()));
    }
    out
}

/// Whether a live summary was written after the checkpoint (its names are looked up).
pub fn newer_summary(s: &Summary, cp: &Checkpoint) -> bool {
    cp.written.is_none_or(|w| s.touched >= w)
}

/// Whether a live push was written after the checkpoint (its names are looked up).
pub fn newer_push(p: &PushFact, cp: &Checkpoint) -> bool {
    cp.written.is_none_or(|w| p.touched.is_none_or(|t| t >= w))
}

/// The names a live summary looks up: its own, and the commits and branches its parents name.
pub fn wanted_by_summary(s: &Summary) -> BTreeSet<Name<'_>> {
    let mut out = names_of_summary(s);
    for p in &s.parents {
        match p {
            ParentRef::Sha { sha: x, .. } => {
                out.insert(sha(x));
            }
            ParentRef::Branch { branch, .. } => {
                out.insert(Name::Branch(branch.into()));
            }
            ParentRef::Item(_) => {}
        }
    }
    out
}

fn sha(s: &str) -> Name<'_> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Name::Sha(s.to_ascii_lowercase().into())
    } else {
        Name::Sha(s.into())
    }
}

/// What a settlement read of a repository, as sealing sees it.
pub struct Records<'a> {
    pub summaries: &'a [Summary],
    pub pushes: &'a [PushFact],
    /// Keys of the summaries that are sealed (read from the sealed partitions).
    pub sealed: &'a BTreeSet<String>,
    /// `after` of the pushes that are sealed.
    pub sealed_pushes: &'a BTreeSet<String>,
    /// Live records that cannot be sealed yet, whatever their times (an older layout's).
    pub pinned: &'a BTreeSet<String>,
    pub checkpoint: Option<&'a Checkpoint>,
    /// Every sealed record was read: the checkpoint may take records back that it left out.
    pub full: bool,
}

/// What one sealing does: the records it moves, and the checkpoint it writes.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub checkpoint: Checkpoint,
    pub summaries: Vec<String>,
    pub pushes: Vec<String>,
}

/// The times of a live record that place it against a cut.
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: Time,
    /// `None`: not finished.
    hi: Option<Time>,
    /// A deployment or an incident (or a push): no cut may fall inside it.
    strict: bool,
    sealable: bool,
    /// A merged change not sealable yet: no cut may pass its landing.
    landing: Option<Time>,
}

fn times(s: &Summary) -> impl Iterator<Item = Time> + '_ {
    s.gens
        .iter()
        .flat_map(|g| g.start.into_iter().chain(g.end))
        .chain(s.gens.iter().flat_map(|g| g.steps.iter().map(|st| st.time)))
}

fn summary_span(s: &Summary, derived: &Derived, pinned: &BTreeSet<String>) -> Option<Span> {
    let landing = derived.landing.get(&s.key).copied();
    let lo = times(s).chain(landing).min()?;
    let open = s.gens.iter().any(|g| g.end.is_none());
    let hi = (!open).then(|| times(s).chain(landing).max()).flatten();
    let exported = (0..s.gens.len() as u32).all(|g| s.exported.contains(&g));
    let applied = s.applied().unwrap_or_default();
    let derived_now = derived
        .contributions
        .get(&s.key)
        .map_or(&[][..], Vec::as_slice);
    let sealable = !open && exported && *applied == *derived_now && !pinned.contains(&s.key);
    Some(Span {
        lo,
        hi,
        strict: matches!(s.kind, Kind::Deployment | Kind::Incident),
        sealable,
        landing: (!sealable).then_some(landing).flatten(),
    })
}

fn push_span(p: &PushFact) -> Span {
    Span {
        lo: p.time,
        hi: Some(p.time),
        strict: true,
        sealable: true,
        landing: None,
    }
}

/// The largest clean cut at or below `top`: below every unfinished deployment or incident and
/// every unsealable landing, and inside no deployment or incident.
fn clean_cut(spans: &[Span], top: Time) -> Time {
    let mut w = top;
    for s in spans {
        if s.strict && (!s.sealable || s.hi.is_none()) {
            w = w.min(s.lo);
        }
        if let Some(l) = s.landing {
            w = w.min(l);
        }
    }
    loop {
        let mut moved = false;
        for s in spans.iter().filter(|s| s.strict) {
            if let Some(hi) = s.hi {
                if s.lo < w && w <= hi {
                    w = s.lo;
                    moved = true;
                }
            }
        }
        if !moved {
            return w;
        }
    }
}

/// The live summaries and pushes of `r`, each with its place against a cut.
type LiveSpans<'a> = (Vec<(&'a Summary, Span)>, Vec<(&'a PushFact, Span)>);

fn live_spans<'a>(r: &Records<'a>, derived: &Derived) -> LiveSpans<'a> {
    let summaries = r
        .summaries
        .iter()
        .filter(|s| !r.sealed.contains(&s.key))
        .filter_map(|s| summary_span(s, derived, r.pinned).map(|sp| (s, sp)))
        .collect();
    let pushes = r
        .pushes
        .iter()
        .filter(|p| !r.sealed_pushes.contains(&p.after))
        .map(|p| (p, push_span(p)))
        .collect();
    (summaries, pushes)
}

/// The cut: the largest clean one at or below `top` that seals at most `most` records, never
/// below the previous one (`old`: what is sealed stays sealed).
fn choose_cut(spans: &[Span], top: Time, most: usize, old: Option<Time>) -> Time {
    let below = |w: Time| {
        spans
            .iter()
            .filter(|s| s.sealable && s.hi.is_some_and(|hi| hi < w))
            .count()
    };
    let mut w = clean_cut(spans, top);
    while below(w) > most {
        // Bring the cut down to the `most`-th record's end, then to a clean cut again.
        let mut ends: Vec<Time> = spans
            .iter()
            .filter(|s| s.sealable)
            .filter_map(|s| s.hi.filter(|hi| *hi < w))
            .collect();
        ends.sort();
        w = clean_cut(spans, ends[most]);
    }
    old.map_or(w, |o| w.max(o))
}

/// What to seal after a pass: `None` when nothing would be sealed and the checkpoint would
/// not change. At most `most` records are sealed (the cut comes down until that many remain
/// before it).
pub fn plan(
    r: &Records<'_>,
    derived: &Derived,
    config: &EngineSettings,
    most: usize,
    now: Time,
) -> Option<Plan> {
    let (live, live_pushes) = live_spans(r, derived);
    let spans: Vec<Span> = live
        .iter()
        .map(|x| x.1)
        .chain(live_pushes.iter().map(|x| x.1))
        .collect();
    let latest = spans
        .iter()
        .flat_map(|s| [Some(s.lo), s.hi])
        .flatten()
        .max()?;
    let top = latest - TimeDelta::seconds(config.seal_after_secs);
    let w = choose_cut(&spans, top, most, r.checkpoint.map(|c| c.w));
    let sealed_now = |sp: &Span| sp.sealable && sp.hi.is_some_and(|hi| hi < w);
    let summaries: Vec<String> = live
        .iter()
        .filter(|(_, sp)| sealed_now(sp))
        .map(|(s, _)| s.key.clone())
        .collect();
    let pushes: Vec<String> = live_pushes
        .iter()
        .filter(|(_, sp)| sealed_now(sp))
        .map(|(p, _)| p.after.clone())
        .collect();
    let straddlers = live
        .iter()
        .filter(|(s, sp)| s.kind == Kind::Change && !sealed_now(sp))
        .filter(|(s, _)| s.gens.first().and_then(|g| g.start).is_some_and(|t| t < w))
        .map(|(s, _)| s.key.clone())
        .collect();
    let sealed = Sealed {
        summaries: summaries
            .iter()
            .chain(r.sealed.iter())
            .map(String::as_str)
            .collect(),
        pushes: pushes
            .iter()
            .chain(r.sealed_pushes.iter())
            .map(String::as_str)
            .collect(),
    };
    let mut checkpoint = context(r, derived, config, w, &sealed);
    checkpoint.straddlers = straddlers;
    let (more, more_pushes) = linked(r, &sealed, &checkpoint);
    checkpoint.summaries.extend(more);
    checkpoint.pushes.extend(more_pushes);
    for ids in [&mut checkpoint.summaries, &mut checkpoint.pushes] {
        ids.sort();
        ids.dedup();
    }
    checkpoint.written = r.checkpoint.and_then(|c| c.written);
    let unchanged = r.checkpoint.is_none_or(|c| *c == checkpoint);
    checkpoint.written = Some(now);
    if summaries.is_empty() && pushes.is_empty() && unchanged {
        return None;
    }
    Some(Plan {
        checkpoint,
        summaries,
        pushes,
    })
}

/// The sealed summaries (keys) and pushes (`after`) that share a commit or branch with a record
/// that stays live or with one the checkpoint keeps: later settlements do not look up what
/// those name again.
fn linked(r: &Records<'_>, sealed: &Sealed<'_>, cp: &Checkpoint) -> (Vec<String>, Vec<String>) {
    let kept: BTreeSet<&str> = cp.summaries.iter().map(String::as_str).collect();
    let kept_pushes: BTreeSet<&str> = cp.pushes.iter().map(String::as_str).collect();
    let mut wanted: BTreeSet<Name> = BTreeSet::new();
    for s in r.summaries {
        if !sealed.summaries.contains(s.key.as_str()) {
            wanted.extend(wanted_by_summary(s));
        } else if kept.contains(s.key.as_str()) {
            wanted.extend(names_of_summary(s));
        }
    }
    for p in r.pushes {
        let live = !sealed.pushes.contains(p.after.as_str());
        if live || kept_pushes.contains(p.after.as_str()) {
            wanted.extend(names_of_push(p));
        }
    }
    let summaries = r
        .summaries
        .iter()
        .filter(|s| sealed.summaries.contains(s.key.as_str()))
        .filter(|s| names_of_summary(s).iter().any(|n| wanted.contains(n)))
        .map(|s| s.key.clone())
        .collect();
    let pushes = r
        .pushes
        .iter()
        .filter(|p| sealed.pushes.contains(p.after.as_str()))
        .filter(|p| names_of_push(p).iter().any(|n| wanted.contains(n)))
        .map(|p| p.after.clone())
        .collect();
    (summaries, pushes)
}

/// The records sealed once a plan is carried out (those read and those it seals).
struct Sealed<'a> {
    summaries: BTreeSet<&'a str>,
    pushes: BTreeSet<&'a str>,
}

fn success(g: &super::scope::GenSummary) -> bool {
    !g.error && g.result.is_none_or(|x| x == WorkResult::Success)
}

/// A finished deployment generation: (end, key, generation, environment, success).
type Finished<'a> = (Time, &'a str, usize, String, bool);

/// The checkpoint at cut `w`: which of the sealed records (all in `r`) later settlements read.
fn context(
    r: &Records<'_>,
    derived: &Derived,
    config: &EngineSettings,
    w: Time,
    sealed: &Sealed<'_>,
) -> Checkpoint {
    let window = TimeDelta::seconds(config.incident_window_secs);
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let (by_env, last_prod) = sealed_deployments(r, config, &sealed.summaries);
    // Each environment deployed to within the window: its last success and every deployment
    // after it, and where it shipped up to. One not deployed to within the window is left out:
    // its next deployment reads the whole history (it ships from before the landings kept).
    let mut bounds: Vec<Time> = Vec::new();
    for deps in by_env.values() {
        if deps.last().is_some_and(|d| d.0 < w - window) {
            continue;
        }
        let from = deps.iter().rposition(|d| d.4).unwrap_or(0);
        keep.extend(deps[from..].iter().map(|d| d.1.to_string()));
        if let Some(last) = deps.iter().rev().find(|d| d.4) {
            let me = super::scope::GenRef {
                key: last.1.to_string(),
                gen: last.2 as u32,
            };
            bounds.extend(derived.deploys.get(&me).and_then(|i| i.upper));
        }
    }
    let last_prod = last_prod
        .filter(|(end, _)| *end >= w - window)
        .map(|(_, key)| {
            keep.insert(key.to_string());
            LastProd {
                key: key.to_string(),
                failed_by_sealed: failed_by_sealed(r, derived, key, &sealed.summaries),
            }
        });
    let mut cp = landings(r, derived, w, bounds, sealed);
    cp.summaries.extend(keep);
    cp.summaries.sort();
    cp.summaries.dedup();
    cp.last_prod = last_prod;
    cp
}

/// Finished deployment generations by environment, and the latest production success.
type SealedDeployments<'a> = (BTreeMap<String, Vec<Finished<'a>>>, Option<(Time, &'a str)>);

/// The sealed deployments' finished generations by environment (lower case), in finishing
/// order, and the latest production success (its end and key).
fn sealed_deployments<'a>(
    r: &Records<'a>,
    config: &EngineSettings,
    sealed: &BTreeSet<&str>,
) -> SealedDeployments<'a> {
    let mut by_env: BTreeMap<String, Vec<Finished>> = BTreeMap::new();
    let mut last_prod: Option<(Time, &str)> = None;
    for s in r.summaries.iter().filter(|s| s.kind == Kind::Deployment) {
        if !sealed.contains(s.key.as_str()) {
            continue;
        }
        for (i, g) in s.gens.iter().enumerate() {
            let Some(end) = g.end else { continue };
            let env = g.environment.as_deref().unwrap_or("unknown").to_string();
            let success = success(g);
            let later = |(e, k): (Time, &str)| (end, s.key.as_str()) > (e, k);
            if success && config.is_production(&env) && last_prod.is_none_or(later) {
                last_prod = Some((end, s.key.as_str()));
            }
            let deps = by_env.entry(env.to_ascii_lowercase()).or_default();
            deps.push((end, s.key.as_str(), i, env, success));
        }
    }
    for deps in by_env.values_mut() {
        deps.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    }
    (by_env, last_prod)
}

/// The checkpoint's landings: sealed merged changes and default-branch pushes from the earliest
/// point a deployment can ship from (`bounds`, and what live deployments ship from; all of them
/// while a live deployment is its environment's first).
fn landings(
    r: &Records<'_>,
    derived: &Derived,
    w: Time,
    mut bounds: Vec<Time>,
    sealed: &Sealed<'_>,
) -> Checkpoint {
    let mut everything = false;
    let done = exported_deployments(r);
    for (me, info) in &derived.deploys {
        if sealed.summaries.contains(me.key.as_str()) || !ships_still(me, info, &done) {
            continue;
        }
        match info.after {
            Some(a) => bounds.push(a),
            None => everything = true,
        }
    }
    let ever = w - TimeDelta::days(36_500);
    let old_from = r.checkpoint.map(|c| c.landings_from);
    let floor = if r.full {
        ever
    } else {
        old_from.unwrap_or(ever)
    };
    let from = bounds.into_iter().chain([w]).min().unwrap_or(w);
    let landings_from = if everything {
        floor
    } else {
        from.max(floor).min(w)
    };
    let sealed_default = || {
        r.pushes
            .iter()
            .filter(|p| sealed.pushes.contains(p.after.as_str()) && p.to_default_branch)
    };
    let landed = |s: &&Summary| sealed.summaries.contains(s.key.as_str());
    let landing = |s: &Summary| derived.landing.get(&s.key).copied();
    let landed_before = (!r.full && r.checkpoint.is_some_and(|c| c.landed_before))
        || sealed_default().any(|p| p.time < landings_from)
        || r.summaries
            .iter()
            .filter(landed)
            .any(|s| landing(s).is_some_and(|l| l < landings_from));
    Checkpoint {
        w,
        landings_from,
        summaries: r
            .summaries
            .iter()
            .filter(landed)
            .filter(|s| landing(s).is_some_and(|l| l >= landings_from))
            .map(|s| s.key.clone())
            .collect(),
        pushes: sealed_default()
            .filter(|p| p.time >= landings_from)
            .map(|p| p.after.clone())
            .collect(),
        landed_before,
        straddlers: Vec::new(),
        last_prod: None,
        written: None,
    }
}

/// Whether a sealed incident made deployment `key` a change failure: one of those read (all of
/// them when `r.full`) follows it, or the previous checkpoint said so.
fn failed_by_sealed(
    r: &Records<'_>,
    derived: &Derived,
    key: &str,
    sealed: &BTreeSet<&str>,
) -> bool {
    let before = !r.full
        && r.checkpoint
            .and_then(|c| c.last_prod.as_ref())
            .is_some_and(|l| l.key == key && l.failed_by_sealed);
    before
        || derived
            .causes
            .iter()
            .any(|(incident, c)| c.deployment.key == key && sealed.contains(incident.as_str()))
}

/// Why the records a settlement read from its checkpoint are not enough (a fact that reaches
/// before the cut): it reads the whole history instead. `None`: they are.
pub fn needs_full(r: &Records<'_>, derived: &Derived) -> Option<&'static str> {
    let cp = r.checkpoint?;
    late_live(r, derived, cp)
        .or_else(|| shipped_from_before(r, derived, cp))
        .or_else(|| shared_names(r))
}

/// A live record that reaches before the cut: a late deployment, incident, push or landing, a
/// change that started before it and was not live when it was set.
fn late_live(r: &Records<'_>, derived: &Derived, cp: &Checkpoint) -> Option<&'static str> {
    let before = |t: Option<Time>| t.is_some_and(|t| t < cp.w);
    for s in r.summaries.iter().filter(|s| !r.sealed.contains(&s.key)) {
        match s.kind {
            Kind::Deployment | Kind::Incident
                if s.gens.iter().any(|g| before(g.start) || before(g.end)) =>
            {
                return Some("a deployment or incident before the cut");
            }
            Kind::Change => {
                if before(derived.landing.get(&s.key).copied()) {
                    return Some("a change that landed before the cut");
                }
                let started = s.gens.first().and_then(|g| g.start);
                if before(started) && !cp.straddlers.contains(&s.key) {
                    return Some("a change that started before the cut");
                }
            }
            _ => {}
        }
    }
    let live_pushes = r
        .pushes
        .iter()
        .filter(|p| !r.sealed_pushes.contains(&p.after));
    if live_pushes.clone().any(|p| p.time < cp.w) {
        return Some("a push before the cut");
    }
    None
}

/// A live deployment that ships from before the checkpoint's landings, or a sealed change that
/// lands after the cut (a push brought its merge commit late).
fn shipped_from_before(
    r: &Records<'_>,
    derived: &Derived,
    cp: &Checkpoint,
) -> Option<&'static str> {
    let done = exported_deployments(r);
    for (me, info) in &derived.deploys {
        let counts = !r.sealed.contains(&me.key) && ships_still(me, info, &done);
        if cp.landed_before && counts && info.after.is_none_or(|a| a < cp.landings_from) {
            return Some("a deployment that ships from before the checkpoint's landings");
        }
    }
    let sealed_late = r
        .summaries
        .iter()
        .filter(|s| r.sealed.contains(&s.key))
        .any(|s| derived.landing.get(&s.key).is_some_and(|l| *l >= cp.w));
    sealed_late.then_some("a sealed change that lands after the cut")
}

/// The generations of deployments whose span is out.
fn exported_deployments<'r>(r: &'r Records<'_>) -> BTreeSet<(&'r str, u32)> {
    r.summaries
        .iter()
        .filter(|s| s.kind == Kind::Deployment)
        .flat_map(|s| s.exported.iter().map(|g| (s.key.as_str(), *g)))
        .collect()
}

/// Whether what deployment generation `me` shipped still counts: always in production (its
/// lead times are in its tally); elsewhere only until its span is out, the one thing a
/// non-production deployment's shipped changes go into (its links and
/// `valuestream.deployment.changes`; deploy stages and rework are production's). So a
/// review app's first deployment, which ships every change landed before it, makes its
/// repository's settlements read the whole sealed history until its span is exported, not
/// until it is sealed a day later.
fn ships_still(me: &GenRef, info: &DeployInfo, done: &BTreeSet<(&str, u32)>) -> bool {
    info.production || !done.contains(&(me.key.as_str(), me.gen))
}

/// Commits and branches shared between live and sealed records in ways that change what was
/// sealed: a live change or push naming a sealed deployment's commit, a live change naming a
/// sealed default-branch push's commit, a live push before a sealed change's first commit.
fn shared_names(r: &Records<'_>) -> Option<&'static str> {
    let sealed = || r.summaries.iter().filter(|s| r.sealed.contains(&s.key));
    let live = || r.summaries.iter().filter(|s| !r.sealed.contains(&s.key));
    let sealed_deploy_shas: BTreeSet<&str> = sealed()
        .filter(|s| s.kind == Kind::Deployment)
        .flat_map(|s| s.gens.iter().filter_map(|g| g.head_sha.as_deref()))
        .collect();
    let sealed_default_commits: BTreeSet<&str> = r
        .pushes
        .iter()
        .filter(|p| r.sealed_pushes.contains(&p.after) && p.to_default_branch)
        .flat_map(|p| {
            p.commits
                .iter()
                .map(|c| c.sha.as_str())
                .chain([p.after.as_str()])
        })
        .collect();
    for s in live().filter(|s| s.kind == Kind::Change) {
        let merges = s.gens.iter().filter_map(|g| g.merge_sha.as_ref());
        if s.head_shas.iter().chain(merges).any(|x| {
            sealed_deploy_shas.contains(x.as_str()) || sealed_default_commits.contains(x.as_str())
        }) {
            return Some("a live change names a sealed deployment's or push's commit");
        }
    }
    for p in r
        .pushes
        .iter()
        .filter(|p| !r.sealed_pushes.contains(&p.after))
    {
        let mut commits = p
            .commits
            .iter()
            .map(|c| c.sha.as_str())
            .chain([p.after.as_str()]);
        if commits.any(|c| sealed_deploy_shas.contains(c)) {
            return Some("a live push carries a sealed deployment's commit");
        }
        let Some(first) = p.commits.iter().map(|c| c.time).min() else {
            continue;
        };
        let moves = !p.to_default_branch
            && sealed().any(|s| {
                s.kind == Kind::Change
                    && s.head_branch.as_deref() == Some(p.branch.as_str())
                    && s.gens
                        .first()
                        .and_then(|g| g.start)
                        .is_some_and(|t| first < t)
            });
        if moves {
            return Some("a live push moves a sealed change's first commit");
        }
    }
    None
}
