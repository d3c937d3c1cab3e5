//! Finished spans, built at export time from an item's facts and its scope's derivations: the
//! parent and trace are resolved then, from whatever the store knows, so a child that arrived
//! before its parent gets the same parent as one that arrived after it.

use super::dora::{Derived, Index};
use super::facts::Gen;
use super::scope::{GenRef, Summary};
use super::stages::StageName;
use crate::model::attr;
use crate::model::ids;
use crate::model::{AttrValue, Attrs, FinishedSpan, Kind, ParentRef, SpanLink};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// How deep a parent chain is followed (task → run → change → issue is three).
pub const MAX_DEPTH: usize = 8;

/// A span's identity, as children and links need it.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRef {
    pub key: String,
    pub trace_id: String,
    pub span_id: String,
}

/// Resolves parents and traces within a scope, and across scopes through named items.
pub struct Resolver<'a> {
    pub idx: &'a Index<'a>,
    /// Summaries of items outside the scope that a parent chain names.
    pub external: &'a HashMap<String, Summary>,
    pub derived: &'a Derived,
    /// Most links one span carries (`OTEL_SPAN_LINK_COUNT_LIMIT`).
    pub link_limit: usize,
    /// Items asked for that neither the scope nor `external` holds: the caller reads them
    /// and resolves again, so that only the items a chain actually reaches are read.
    pub missing: RefCell<BTreeSet<String>>,
}

impl<'a> Resolver<'a> {
    /// A resolver that has missed nothing yet.
    pub fn new(
        idx: &'a Index<'a>,
        external: &'a HashMap<String, Summary>,
        derived: &'a Derived,
        link_limit: usize,
    ) -> Self {
        Resolver {
            idx,
            external,
            derived,
            link_limit,
            missing: RefCell::new(BTreeSet::new()),
        }
    }

    fn summary(&self, key: &str) -> Option<&Summary> {
        let found = self
            .idx
            .items
            .get(key)
            .copied()
            .or_else(|| self.external.get(key));
        if found.is_none() {
            self.missing.borrow_mut().insert(key.to_string());
        }
        found
    }

    /// The parent of an item's spans (every generation shares the first one's).
    pub fn parent(&self, s: &Summary, depth: usize) -> Option<SpanRef> {
        let t = s.gens.first().and_then(|g| g.start);
        for p in &s.parents {
            let found = match p {
                ParentRef::Item(k) => self.summary(k).map(|ps| (ps, ps.gen_at(t))),
                // Commits and branches are looked up in the scope's own repository.
                p if self.idx.items.contains_key(s.key.as_str()) => self
                    .idx
                    .resolve(p, t)
                    .and_then(|GenRef { key, gen }| self.summary(&key).map(|ps| (ps, gen))),
                _ => None,
            };
            if let Some((ps, gen)) = found {
                if ps.key != s.key {
                    return Some(self.span(ps, gen, depth + 1));
                }
            }
        }
        // A named item not seen yet: its IDs follow from its key.
        if let Some(k) = s.parents.iter().find_map(|p| match p {
            ParentRef::Item(k) => Some(k),
            _ => None,
        }) {
            return Some(SpanRef {
                key: k.clone(),
                trace_id: ids::trace_id(k),
                span_id: ids::span_id(k, 0),
            });
        }
        let cause = self.derived.causes.get(&s.key)?;
        let ds = self.summary(&cause.deployment.key)?;
        Some(self.span(ds, cause.deployment.gen, depth + 1))
    }

    pub fn trace(&self, s: &Summary, depth: usize) -> String {
        if let Some(t) = &s.sealed_trace {
            return t.clone();
        }
        if depth < MAX_DEPTH {
            if let Some(p) = self.parent(s, depth) {
                return p.trace_id;
            }
        }
        ids::trace_id(&s.key)
    }

    pub fn span(&self, s: &Summary, gen: u32, depth: usize) -> SpanRef {
        SpanRef {
            key: s.key.clone(),
            trace_id: self.trace(s, depth),
            span_id: ids::span_id(&s.key, gen),
        }
    }

    fn span_of_key(&self, key: &str, gen: Option<u32>) -> Option<SpanRef> {
        let s = self.summary(key)?;
        let gen = gen.unwrap_or(s.gens.len().saturating_sub(1) as u32);
        Some(self.span(s, gen, 0))
    }
}

fn link(trace_id: String, span_id: String, kind: &str, key: Option<&str>) -> SpanLink {
    let mut a = Attrs::new();
    a.insert(attr::LINK.into(), kind.into());
    if let Some(k) = key {
        a.insert(attr::KEY.into(), k.into());
    }
    SpanLink {
        trace_id,
        span_id,
        attributes: a,
    }
}

/// The finished span of generation `g` (closed) of item `s`.
pub fn build(r: &Resolver<'_>, s: &Summary, g: &Gen) -> Option<FinishedSpan> {
    let (start, end) = (g.start?, g.end?);
    let me = GenRef {
        key: s.key.clone(),
        gen: g.index,
    };
    let parent = r.parent(s, 0);
    let trace_id = parent
        .as_ref()
        .map(|p| p.trace_id.clone())
        .unwrap_or_else(|| ids::trace_id(&s.key));
    let mut attributes = own_attributes(s, g);
    let mut links = generation_links(r, s, g, &trace_id);
    let mut dropped_links = 0u32;
    match s.kind {
        Kind::Change => {
            if let Some(first) = r.derived.first_commit.get(&me) {
                attributes.insert(
                    attr::CHANGE_FIRST_COMMIT_TIME.into(),
                    first.to_rfc3339().into(),
                );
            }
        }
        Kind::Deployment => {
            dropped_links = deployment(r, g, &me, &mut attributes, &mut links);
        }
        Kind::Incident => {
            if let Some(c) = r.derived.causes.get(&s.key) {
                attributes.insert(
                    attr::INCIDENT_DEPLOYMENT.into(),
                    c.deployment.key.clone().into(),
                );
            }
        }
        _ => {}
    }
    let error = g.error();
    if error && matches!(s.kind, Kind::PipelineRun | Kind::Task) {
        // OpenTelemetry CI/CD: a failed run or task names its class of error; the source's own
        // (GitLab's failure reason) wins, else the result (`failure`, `timeout`, …).
        if let Some(result) = g.result() {
            attributes
                .entry(attr::ERROR_TYPE.into())
                .or_insert_with(|| result.as_str().into());
        }
    }
    Some(FinishedSpan {
        source: s.source.to_string(),
        trace_id,
        span_id: ids::span_id(&s.key, g.index),
        parent_span_id: parent.map(|p| p.span_id),
        name: g.name.clone(),
        kind: s.kind,
        start,
        end,
        attributes,
        events: g.events.clone(),
        links,
        dropped_links,
        error,
        status_message: if error {
            g.result().map(|r| r.as_str().to_string())
        } else {
            None
        },
    })
}

/// What a span says of itself: the generation's attributes, its kind, source, key,
/// generation and result.
fn own_attributes(s: &Summary, g: &Gen) -> Attrs {
    let mut attributes = g.span_attributes();
    attributes.insert(attr::KIND.into(), s.kind.as_str().into());
    attributes.insert(attr::SOURCE.into(), s.source.to_string().into());
    attributes.insert(attr::KEY.into(), s.key.clone().into());
    if g.index > 0 {
        attributes.insert(attr::GENERATION.into(), AttrValue::Int(g.index.into()));
    }
    if let Some(result) = g.result() {
        attributes.insert(attr::RESULT.into(), result.into());
        match s.kind {
            Kind::PipelineRun => {
                attributes.insert(attr::CICD_PIPELINE_RESULT.into(), result.into());
            }
            Kind::Task => {
                attributes.insert(attr::CICD_PIPELINE_TASK_RUN_RESULT.into(), result.into());
            }
            _ => {}
        }
    }
    attributes
}

/// A reopened item's link to its previous generation; a first generation's links to the
/// runs it retries.
fn generation_links(r: &Resolver<'_>, s: &Summary, g: &Gen, trace_id: &str) -> Vec<SpanLink> {
    if g.index > 0 {
        return vec![link(
            trace_id.to_string(),
            ids::span_id(&s.key, g.index - 1),
            "reopens",
            None,
        )];
    }
    g.follows
        .iter()
        .filter_map(|f| r.span_of_key(f, None))
        .map(|prev| link(prev.trace_id, prev.span_id, "retries", None))
        .collect()
}

/// A deployment's attributes (production, status, changes, rework, recovery) and its links to
/// what it shipped; returns the links dropped past the limit.
fn deployment(
    r: &Resolver<'_>,
    g: &Gen,
    me: &GenRef,
    attributes: &mut Attrs,
    links: &mut Vec<SpanLink>,
) -> u32 {
    let info = r.derived.deploys.get(me).cloned().unwrap_or_default();
    let mut dropped = 0;
    attributes.insert(attr::PRODUCTION.into(), info.production.into());
    if info.success || g.error() {
        attributes.insert(
            attr::DEPLOYMENT_STATUS.into(),
            (if info.success { "succeeded" } else { "failed" }).into(),
        );
    }
    if g.repo.is_some() {
        // A successful deployment shipped its changes; a failed or cancelled one only
        // attempted to. Past the link limit, the most recently landed changes are linked and
        // the others counted as dropped links.
        let kind = if info.success { "shipped" } else { "attempted" };
        let room = r.link_limit.saturating_sub(links.len());
        let skip = info.shipped.len().saturating_sub(room);
        for c in &info.shipped[skip..] {
            if let Some(cs) = r.span_of_key(&c.key, Some(c.gen)) {
                links.push(link(cs.trace_id, cs.span_id, kind, Some(&c.key)));
            }
        }
        dropped = skip as u32;
        attributes.insert(
            attr::DEPLOYMENT_CHANGES.into(),
            AttrValue::Int(info.changes),
        );
    }
    if info.production {
        attributes.insert(attr::DEPLOYMENT_REWORK.into(), info.rework.is_some().into());
        if let Some(reason) = info.rework {
            attributes.insert(
                attr::DEPLOYMENT_REWORK_REASON.into(),
                reason.as_str().into(),
            );
        }
    }
    if let Some(rec) = info.recovery_s {
        attributes.insert(
            attr::DEPLOYMENT_RECOVERY_TIME_S.into(),
            AttrValue::Float(rec),
        );
    }
    dropped
}

/// Whether the deploy stage of change generation `change` goes out with deployment `dep`'s
/// links: the deployment first shipped it and it is among the changes the deployment links
/// (the most recently landed, up to the link limit), so that a deployment that ships 5,000
/// changes adds at most as many stage spans as links.
pub fn deploy_stage_shown(r: &Resolver<'_>, change: &GenRef, dep: &GenRef) -> bool {
    if r.derived.first_deploy.get(change) != Some(dep) {
        return false;
    }
    let Some(info) = r.derived.deploys.get(dep) else {
        return false;
    };
    let skip = info.shipped.len().saturating_sub(r.link_limit);
    info.shipped[skip..].contains(change)
}

/// The stage child spans of generation `gen` of change `s` (docs/metrics.md "Change stages")
/// that `pick` selects: children of the change's span, in its trace, with the payload's times
/// and IDs that follow from the change's key, the stage and the generation. The deploy stage
/// links the deployment that first shipped the change.
pub fn stage_spans(
    r: &Resolver<'_>,
    s: &Summary,
    gen: u32,
    pick: impl Fn(StageName) -> bool,
) -> Vec<(StageName, FinishedSpan)> {
    let me = GenRef {
        key: s.key.clone(),
        gen,
    };
    let Some(stages) = r.derived.stages.get(&me) else {
        return Vec::new();
    };
    let trace_id = r.trace(s, 0);
    let parent = ids::span_id(&s.key, gen);
    let mut out = Vec::new();
    for stage in stages.iter().filter(|st| pick(st.name)) {
        let mut attributes = Attrs::new();
        if let Some(g) = s.gens.get(gen as usize) {
            for (k, v) in &g.labels {
                attributes.insert(k.to_string(), v.to_string().into());
            }
        }
        attributes.insert(attr::KEY.into(), s.key.clone().into());
        attributes.insert(attr::CHANGE_STAGE.into(), stage.name.as_str().into());
        let mut links = Vec::new();
        if stage.name == StageName::Deploy {
            if let Some(dep) = r.derived.first_deploy.get(&me) {
                if let Some(ds) = r.span_of_key(&dep.key, Some(dep.gen)) {
                    links.push(link(ds.trace_id, ds.span_id, "deployed_by", Some(&dep.key)));
                }
            }
        }
        out.push((
            stage.name,
            FinishedSpan {
                source: s.source.to_string(),
                trace_id: trace_id.clone(),
                span_id: ids::span_id(&format!("{}#stage#{}", s.key, stage.name.as_str()), gen),
                parent_span_id: Some(parent.clone()),
                name: stage.name.as_str().to_string(),
                kind: Kind::Change,
                start: stage.start,
                end: stage.end,
                attributes,
                events: Vec::new(),
                links,
                dropped_links: 0,
                error: false,
                status_message: None,
            },
        ));
    }
    out
}
