//! The span lifecycle: open, update, close and reopen of one work item, parent resolution, and
//! the change indexes that let pipeline runs find their change.

use super::flow::{self, DeployEntry};
use super::metrics::{self, Delta, Labels};
use super::{keys, tx::Tx, Effects, Engine, EngineError};
use crate::model::ids;
use crate::model::{
    Action, AttrValue, Attrs, FinishedSpan, Kind, ParentRef, Repo, SpanEvent, SpanLink, Time,
    WorkEvent,
};
use crate::store::Key;
use serde::{Deserialize, Serialize};

/// A span's identity, as indexes and children need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanRef {
    pub key: String,
    pub trace_id: String,
    pub span_id: String,
}

/// What the store keeps of a work item between deliveries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemState {
    pub source: String,
    pub kind: Kind,
    pub name: String,
    pub generation: u32,
    pub open: bool,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub start: Option<Time>,
    /// End of the last closed generation.
    pub end: Option<Time>,
    pub attributes: Attrs,
    #[serde(default)]
    pub events: Vec<SpanEvent>,
    #[serde(default)]
    pub links: Vec<SpanLink>,
    pub repo: Option<Repo>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    pub environment: Option<String>,
    /// Incidents: the deployment they most likely followed.
    #[serde(default)]
    pub cause: Option<DeployEntry>,
}

impl ItemState {
    pub fn span_ref(&self, key: &str) -> SpanRef {
        SpanRef {
            key: key.to_string(),
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
        }
    }
}

/// The keys a work event needs read before it is applied.
pub fn keys_for(ev: &WorkEvent) -> Vec<Key> {
    let mut k = vec![keys::item(&ev.key)];
    for p in &ev.parents {
        k.push(parent_key(p));
    }
    k.extend(ev.follows.iter().map(|f| keys::item(f)));
    if ev.kind == Kind::Change {
        if let Some(repo) = &ev.repo {
            if let Some(sha) = &ev.head_sha {
                k.push(keys::sha(repo, sha));
            }
            if let Some(b) = &ev.head_branch {
                k.push(keys::branch(repo, b));
            }
        }
    }
    k
}

fn parent_key(p: &ParentRef) -> Key {
    match p {
        ParentRef::Item(k) => keys::item(k),
        ParentRef::Sha { repo, sha } => keys::sha(repo, sha),
        ParentRef::Branch { repo, branch } => keys::branch(repo, branch),
    }
}

/// The parent a work event names: the first candidate found in the store; otherwise the first
/// named item, taken as a root not seen yet (its IDs are derived from its key, so they agree
/// with what it will get when it arrives).
fn resolve_parent(tx: &Tx<'_>, ev: &WorkEvent) -> Option<SpanRef> {
    for p in &ev.parents {
        let found = match p {
            ParentRef::Item(k) => tx.data::<ItemState>(&keys::item(k)).map(|s| s.span_ref(k)),
            ParentRef::Sha { repo, sha } => tx
                .data::<flow::ShaEntry>(&keys::sha(repo, sha))
                .and_then(|e| e.change),
            ParentRef::Branch { .. } => tx.data::<SpanRef>(&parent_key(p)),
        };
        if found.is_some() {
            return found;
        }
    }
    ev.parents.iter().find_map(|p| match p {
        ParentRef::Item(k) => Some(SpanRef {
            key: k.clone(),
            trace_id: ids::trace_id(k),
            span_id: ids::span_id(k, 0),
        }),
        _ => None,
    })
}

pub async fn work(
    engine: &Engine,
    tx: &mut Tx<'_>,
    source: &str,
    ev: &WorkEvent,
    fx: &mut Effects,
) -> Result<(), EngineError> {
    let ik = keys::item(&ev.key);
    let state: Option<ItemState> = tx.data(&ik);
    let state = match (state, ev.action) {
        (Some(mut st), Action::Open | Action::Update) if st.open => {
            merge(&mut st, ev);
            fx.updated += 1;
            st
        }
        (Some(mut st), Action::Close) if st.open => {
            merge(&mut st, ev);
            st
        }
        (Some(st), Action::Open)
            if ev.reopened || ev.start.zip(st.end).is_some_and(|(s, e)| s > e) =>
        {
            // A reopening: a new span (next generation), linked to the one it continues.
            let generation = st.generation + 1;
            let mut next = new_state(
                source,
                ev,
                generation,
                st.trace_id.clone(),
                st.parent_span_id.clone(),
            );
            next.links.push(SpanLink {
                trace_id: st.trace_id.clone(),
                span_id: st.span_id.clone(),
                attributes: link_attr("reopens"),
            });
            next.cause = st.cause.clone();
            fx.opened += 1;
            next
        }
        // Late news about a finished span (a second close, an update after close): nothing to do.
        (Some(_), _) => return Ok(()),
        (None, action) => {
            let generation = u32::from(ev.reopened);
            let mut parent = resolve_parent(tx, ev);
            let mut cause = None;
            if ev.kind == Kind::Incident && parent.is_none() {
                cause = flow::incident_cause(engine, tx, ev).await?;
                parent = cause.as_ref().map(|c| c.span.clone());
            }
            let trace = parent
                .as_ref()
                .map(|p| p.trace_id.clone())
                .unwrap_or_else(|| ids::trace_id(&ev.key));
            let mut st = new_state(source, ev, generation, trace, parent.map(|p| p.span_id));
            for f in &ev.follows {
                if let Some(prev) = tx.data::<ItemState>(&keys::item(f)) {
                    st.links.push(SpanLink {
                        trace_id: prev.trace_id,
                        span_id: prev.span_id,
                        attributes: link_attr("retries"),
                    });
                }
            }
            if let Some(c) = &cause {
                st.attributes.insert(
                    "valuestream.incident.deployment".into(),
                    c.span.key.clone().into(),
                );
                flow::count_change_failure(engine, tx, c, fx).await?;
            }
            st.cause = cause;
            if action != Action::Close {
                fx.opened += 1;
            }
            st
        }
    };
    if ev.kind == Kind::Change {
        index_change(engine, tx, &ev.key, &state);
    }
    if ev.action == Action::Close {
        finish(engine, tx, ev, state, fx).await
    } else {
        tx.put(ik, &state, engine.config.ttl_open_secs);
        Ok(())
    }
}

fn link_attr(kind: &str) -> Attrs {
    let mut a = Attrs::new();
    a.insert("valuestream.link".into(), kind.into());
    a
}

fn new_state(
    source: &str,
    ev: &WorkEvent,
    generation: u32,
    trace_id: String,
    parent_span_id: Option<String>,
) -> ItemState {
    ItemState {
        source: source.to_string(),
        kind: ev.kind,
        name: ev.name.clone(),
        generation,
        open: true,
        span_id: ids::span_id(&ev.key, generation),
        trace_id,
        parent_span_id,
        start: ev.start,
        end: None,
        attributes: ev.attributes.clone(),
        events: ev.span_events.clone(),
        links: Vec::new(),
        repo: ev.repo.clone(),
        head_branch: ev.head_branch.clone(),
        head_sha: ev.head_sha.clone(),
        environment: ev.environment.clone(),
        cause: None,
    }
}

fn merge(st: &mut ItemState, ev: &WorkEvent) {
    st.name = ev.name.clone();
    st.kind = ev.kind;
    st.attributes.extend(ev.attributes.clone());
    for e in &ev.span_events {
        if !st.events.contains(e) {
            st.events.push(e.clone());
        }
    }
    if st.start.is_none() {
        st.start = ev.start;
    }
    st.repo = ev.repo.clone().or(st.repo.take());
    st.head_branch = ev.head_branch.clone().or(st.head_branch.take());
    st.head_sha = ev.head_sha.clone().or(st.head_sha.take());
    st.environment = ev.environment.clone().or(st.environment.take());
}

/// Points the change's head commit and branch at its span, so pipeline runs find it.
fn index_change(engine: &Engine, tx: &mut Tx<'_>, key: &str, st: &ItemState) {
    let Some(repo) = &st.repo else { return };
    let me = st.span_ref(key);
    if let Some(sha) = &st.head_sha {
        let k = keys::sha(repo, sha);
        let mut entry: flow::ShaEntry = tx.data(&k).unwrap_or_default();
        if entry.change.as_ref() != Some(&me) {
            entry.change = Some(me.clone());
            tx.put(k, &entry, engine.config.ttl_index_secs);
        }
    }
    if let Some(b) = &st.head_branch {
        let k = keys::branch(repo, b);
        if tx.data::<SpanRef>(&k).as_ref() != Some(&me) && st.open {
            tx.put(k, &me, engine.config.ttl_index_secs);
        }
    }
}

async fn finish(
    engine: &Engine,
    tx: &mut Tx<'_>,
    ev: &WorkEvent,
    mut st: ItemState,
    fx: &mut Effects,
) -> Result<(), EngineError> {
    let start = st
        .start
        .or(ev.start)
        .or(ev.end)
        .expect("a closing event carries its times");
    let end = ev.end.or(ev.start).unwrap_or(start).max(start);
    // A known run time: the end is no earlier than start + duration (model::WorkEvent::duration_ms).
    let end = ev
        .duration_ms
        .and_then(chrono::TimeDelta::try_milliseconds)
        .and_then(|d| start.checked_add_signed(d))
        .map_or(end, |e| end.max(e));
    let outcome = ev.outcome.clone();
    let mut attributes = st.attributes.clone();
    attributes.insert("valuestream.kind".into(), st.kind.as_str().into());
    attributes.insert("valuestream.source".into(), st.source.clone().into());
    attributes.insert("valuestream.key".into(), ev.key.clone().into());
    if st.generation > 0 {
        attributes.insert(
            "valuestream.generation".into(),
            AttrValue::Int(st.generation.into()),
        );
    }
    if let Some(o) = &outcome {
        attributes.insert("valuestream.result".into(), o.result.clone().into());
        match st.kind {
            Kind::PipelineRun => {
                attributes.insert("cicd.pipeline.result".into(), o.result.clone().into());
            }
            Kind::Task => {
                attributes.insert(
                    "cicd.pipeline.task.run.result".into(),
                    o.result.clone().into(),
                );
            }
            _ => {}
        }
    }
    let mut span = FinishedSpan {
        source: st.source.clone(),
        trace_id: st.trace_id.clone(),
        span_id: st.span_id.clone(),
        parent_span_id: st.parent_span_id.clone(),
        name: st.name.clone(),
        kind: st.kind,
        start,
        end,
        attributes,
        events: st.events.clone(),
        links: st.links.clone(),
        error: outcome.as_ref().is_some_and(|o| o.error),
        status_message: outcome
            .as_ref()
            .filter(|o| o.error)
            .map(|o| o.result.clone()),
    };
    flow::on_finish(engine, tx, ev, &st, &mut span, fx).await?;
    fx.deltas.push(duration_delta(&span, &st));
    st.open = false;
    st.start = Some(start);
    st.end = Some(end);
    // Keep only what children, reopenings and incidents need of a finished item.
    st.events.clear();
    tx.put(keys::item(&ev.key), &st, engine.config.ttl_open_secs);
    fx.finished.push(span);
    Ok(())
}

/// The labels every metric point about a span carries. The team is lower-cased: one team named
/// `Payments` by PagerDuty and `payments` by a GitHub label is one series.
pub fn base_labels(source: &str, attrs: &Attrs) -> Labels {
    let mut l = Labels::new();
    l.insert("valuestream.source".into(), source.to_string());
    for k in ["valuestream.repository", "valuestream.team"] {
        if let Some(v) = attrs.get(k).and_then(AttrValue::as_str) {
            l.insert(k.into(), v.to_lowercase());
        }
    }
    l
}

fn duration_delta(span: &FinishedSpan, st: &ItemState) -> Delta {
    let mut labels = base_labels(&span.source, &span.attributes);
    let result = span
        .attributes
        .get("valuestream.result")
        .and_then(AttrValue::as_str)
        .unwrap_or("unknown")
        .to_string();
    let copy = |labels: &mut Labels, k: &str| {
        if let Some(v) = span.attributes.get(k).and_then(AttrValue::as_str) {
            labels.insert(k.into(), v.to_string());
        }
    };
    let name = match st.kind {
        Kind::Issue => metrics::ISSUE_DURATION,
        Kind::Change => metrics::CHANGE_DURATION,
        Kind::PipelineRun => {
            copy(&mut labels, "cicd.pipeline.name");
            labels.insert("cicd.pipeline.result".into(), result.clone());
            metrics::RUN_DURATION
        }
        Kind::Task => {
            copy(&mut labels, "cicd.pipeline.name");
            metrics::TASK_DURATION
        }
        Kind::Deployment => {
            // The same label value valuestream.deployments uses, `unknown` included.
            let env = st.environment.clone().unwrap_or_else(|| "unknown".into());
            labels.insert("deployment.environment.name".into(), env);
            metrics::DEPLOYMENT_DURATION
        }
        Kind::Incident => metrics::INCIDENT_DURATION,
    };
    labels.insert("valuestream.result".into(), result);
    Delta {
        name,
        labels,
        value: seconds(span.end - span.start),
    }
}

pub fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}
