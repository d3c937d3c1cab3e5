//! The delivery flow across work items: commits landing on the default branch, the changes a
//! deployment shipped (span links and lead time), deployment failures and recoveries, and the
//! deployment an incident followed. These are the DORA definitions of DESIGN.md, in code.

use super::lifecycle::{self, base_labels, seconds, ItemState, SpanRef};
use super::metrics::{self, Delta};
use super::{keys, tx::Tx, Effects, Engine, EngineError};
use crate::model::refs::merge_commit_ref;
use crate::model::{AttrValue, Attrs, FinishedSpan, Input, Kind, Push, SpanLink, Time, WorkEvent};
use crate::store::{Key, Order};
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// What is known of a commit SHA: the change whose head (or merge) commit it is, and when it
/// landed on the default branch (a time sort key).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShaEntry {
    #[serde(default)]
    pub change: Option<SpanRef>,
    #[serde(default)]
    pub landed: Option<String>,
}

/// A change (merged PR/MR, or a direct commit) on the default branch, waiting to be deployed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Landed {
    /// The change's span, when it is a PR/MR.
    pub change: Option<SpanRef>,
    /// The commit, for direct commits (and a merged change's merge commit).
    pub sha: Option<String>,
    /// When the change started: its first commit, else its creation.
    pub start: Time,
}

/// The state of one repository environment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EnvState {
    /// Landing-order bound of the last successful deployment: what it shipped is behind it.
    pub shipped_bound: Option<String>,
    pub last_success_end: Option<Time>,
    /// The first failed deployment since the last success.
    pub failing_since: Option<Time>,
}

/// A finished deployment, as incidents look for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployEntry {
    pub span: SpanRef,
    pub source: String,
    pub environment: String,
    pub production: bool,
    pub success: bool,
    pub end: Time,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    /// The repository attribute labels (language, deployment type, user keys).
    #[serde(default)]
    pub attributes: metrics::Labels,
}

#[derive(Default, Serialize, Deserialize)]
struct PushRecord {
    /// Landed sort keys of the direct-commit changes this push created.
    landed: Vec<String>,
}

/// The keys an input needs read before it is applied (all in the delivery's first read).
pub fn keys_for(input: &Input, _source: &str) -> Vec<Key> {
    match input {
        Input::Work(ev) => {
            let mut k = lifecycle::keys_for(ev);
            if let Some(repo) = &ev.repo {
                if ev.kind == Kind::Change {
                    if let Some(m) = &ev.merge_sha {
                        k.push(keys::sha(repo, m));
                        k.push(keys::push(repo, m));
                    }
                    if let Some(b) = &ev.head_branch {
                        k.push(keys::branch_first(repo, b));
                    }
                }
                if ev.kind == Kind::Deployment {
                    if let Some(env) = &ev.environment {
                        k.push(keys::env(repo, env));
                    }
                    if let Some(sha) = &ev.head_sha {
                        k.push(keys::sha(repo, sha));
                    }
                }
            }
            k
        }
        Input::Push(p) => {
            let mut k = vec![
                keys::push(&p.repo, &p.after),
                keys::branch_first(&p.repo, &p.branch),
            ];
            k.extend(p.commits.iter().map(|c| keys::sha(&p.repo, &c.sha)));
            k
        }
    }
}

/// A push: the earliest commit of a feature branch (lead time of its future change), or the
/// commits that landed on the default branch. Commits that a merged change brought are that
/// change's; the others are changes of their own (direct commits).
pub async fn push(
    engine: &Engine,
    tx: &mut Tx<'_>,
    _source: &str,
    p: &Push,
) -> Result<(), EngineError> {
    let ttl = engine.config.ttl_index_secs;
    if !p.to_default_branch {
        if let Some(first) = p.commits.iter().map(|c| c.time).min() {
            let k = keys::branch_first(&p.repo, &p.branch);
            let known: Option<Time> = tx.data(&k);
            if known.is_none_or(|t| first < t) {
                tx.put(k, &first, ttl);
            }
        }
        return Ok(());
    }
    let pk = keys::push(&p.repo, &p.after);
    if tx.get(&pk).is_some() {
        return Ok(());
    }
    let landed_at = keys::time_sk(p.time);
    let from_change = p.commits.iter().any(|c| {
        merge_commit_ref(&c.message)
            || tx
                .data::<ShaEntry>(&keys::sha(&p.repo, &c.sha))
                .is_some_and(|e| e.change.is_some())
    });
    let mut record = PushRecord::default();
    for c in &p.commits {
        let k = keys::sha(&p.repo, &c.sha);
        let mut entry: ShaEntry = tx.data(&k).unwrap_or_default();
        if entry.landed.is_none() {
            entry.landed = Some(landed_at.clone());
            tx.put(k, &entry, ttl);
        }
        if !from_change {
            let sk = format!("{landed_at}#commit-{}", c.sha);
            let landed = Landed {
                change: None,
                sha: Some(c.sha.clone()),
                start: c.time,
            };
            tx.put(Key::new(keys::landed_pk(&p.repo), sk.clone()), &landed, ttl);
            record.landed.push(sk);
        }
    }
    tx.put(pk, &record, ttl);
    Ok(())
}

/// Kind-specific effects of a finished span.
pub async fn on_finish(
    engine: &Engine,
    tx: &mut Tx<'_>,
    ev: &WorkEvent,
    st: &ItemState,
    span: &mut FinishedSpan,
    fx: &mut Effects,
) -> Result<(), EngineError> {
    match st.kind {
        Kind::Change
            if span
                .attributes
                .get("valuestream.result")
                .and_then(AttrValue::as_str)
                == Some("merged") =>
        {
            change_merged(engine, tx, ev, st, span);
            Ok(())
        }
        Kind::Deployment => deployment_finished(engine, tx, ev, st, span, fx).await,
        Kind::Incident => {
            let mut labels = base_labels(&span.source, &span.attributes);
            if let Some(c) = &st.cause {
                labels.insert("deployment.environment.name".into(), c.environment.clone());
            }
            fx.deltas.push(Delta {
                name: metrics::TIME_TO_RESTORE,
                labels,
                value: seconds(span.end - span.start),
            });
            Ok(())
        }
        _ => Ok(()),
    }
}

fn change_merged(
    engine: &Engine,
    tx: &mut Tx<'_>,
    ev: &WorkEvent,
    st: &ItemState,
    span: &mut FinishedSpan,
) {
    let Some(repo) = &st.repo else { return };
    let ttl = engine.config.ttl_index_secs;
    let me = st.span_ref(&ev.key);
    // Lead time starts at the first commit when a push to the branch showed it: a squash merge
    // must not shrink it to the merge.
    let first_commit: Option<Time> = st
        .head_branch
        .as_ref()
        .and_then(|b| tx.data(&keys::branch_first(repo, b)));
    let start = first_commit.map_or(span.start, |f| f.min(span.start));
    if start < span.start {
        span.attributes.insert(
            "valuestream.change.first_commit_time".into(),
            start.to_rfc3339().into(),
        );
    }
    let mut landed_at = keys::time_sk(span.end);
    if let Some(m) = &ev.merge_sha {
        let k = keys::sha(repo, m);
        let mut entry: ShaEntry = tx.data(&k).unwrap_or_default();
        if let Some(l) = &entry.landed {
            landed_at = l.clone();
        } else {
            entry.landed = Some(landed_at.clone());
        }
        entry.change = Some(me.clone());
        tx.put(k, &entry, ttl);
        // A rebase merge's push came first and counted its commits as direct changes: they are
        // this change's.
        let pk = keys::push(repo, m);
        if let Some(rec) = tx.data::<PushRecord>(&pk) {
            for sk in &rec.landed {
                tx.delete(Key::new(keys::landed_pk(repo), sk.clone()));
            }
            tx.put(pk, &PushRecord::default(), ttl);
        }
    }
    let landed = Landed {
        change: Some(me),
        sha: ev.merge_sha.clone(),
        start,
    };
    tx.put(
        Key::new(keys::landed_pk(repo), format!("{landed_at}#{}", ev.key)),
        &landed,
        ttl,
    );
}

async fn deployment_finished(
    engine: &Engine,
    tx: &mut Tx<'_>,
    ev: &WorkEvent,
    st: &ItemState,
    span: &mut FinishedSpan,
    fx: &mut Effects,
) -> Result<(), EngineError> {
    let environment = st.environment.clone().unwrap_or_else(|| "unknown".into());
    let production = engine.config.is_production(&environment);
    // Only a successful deployment shipped; a cancelled or skipped one (no error, another
    // result) neither shipped its changes nor failed.
    let success = !span.error
        && span
            .attributes
            .get("valuestream.result")
            .and_then(AttrValue::as_str)
            .is_none_or(|r| r == "success");
    span.attributes
        .insert("valuestream.production".into(), production.into());
    if success || span.error {
        span.attributes.insert(
            "deployment.status".into(),
            (if success { "succeeded" } else { "failed" }).into(),
        );
    }
    let mut labels = base_labels(&span.source, &span.attributes);
    labels.insert("deployment.environment.name".into(), environment.clone());
    labels.insert("valuestream.production".into(), production.to_string());
    let result = span
        .attributes
        .get("valuestream.result")
        .and_then(AttrValue::as_str)
        .unwrap_or("unknown")
        .to_string();
    let mut counted = labels.clone();
    counted.insert("valuestream.result".into(), result);
    fx.deltas.push(Delta {
        name: metrics::DEPLOYMENTS,
        labels: counted,
        value: 1.0,
    });

    let Some(repo) = &st.repo else { return Ok(()) };
    let ek = keys::env(repo, &environment);
    let mut env: EnvState = tx.data(&ek).unwrap_or_default();
    // What this deployment shipped: changes that landed after the last successful deployment of
    // this environment, up to the deployed commit (or, when the commit was never seen landing,
    // up to the deployment's start).
    let upper = st
        .head_sha
        .as_ref()
        .and_then(|s| tx.data::<ShaEntry>(&keys::sha(repo, s)))
        .and_then(|e| e.landed)
        .unwrap_or_else(|| keys::time_sk(span.start));
    let from = env
        .shipped_bound
        .as_ref()
        .map(|b| format!("{b}#\u{10ffff}"))
        .unwrap_or_default();
    let to = format!("{upper}#\u{10ffff}");
    let shipped = if from.as_str() < to.as_str() {
        tx.query(&keys::landed_pk(repo), &from, &to, 500, Order::Ascending)
            .await?
    } else {
        Vec::new()
    };
    let mut changes = 0i64;
    for rec in &shipped {
        let Ok(l) = serde_json::from_value::<Landed>(rec.data.clone()) else {
            continue;
        };
        changes += 1;
        if let Some(c) = &l.change {
            let mut a = Attrs::new();
            a.insert("valuestream.link".into(), "shipped".into());
            a.insert("valuestream.key".into(), c.key.clone().into());
            span.links.push(SpanLink {
                trace_id: c.trace_id.clone(),
                span_id: c.span_id.clone(),
                attributes: a,
            });
        }
        if success && production {
            fx.deltas.push(Delta {
                name: metrics::LEAD_TIME,
                labels: labels.clone(),
                value: seconds(span.end - l.start).max(0.0),
            });
        }
    }
    span.attributes.insert(
        "valuestream.deployment.changes".into(),
        AttrValue::Int(changes),
    );
    let entry = DeployEntry {
        span: st.span_ref(&ev.key),
        source: span.source.clone(),
        environment: environment.clone(),
        production,
        success,
        end: span.end,
        team: labels.get("valuestream.team").cloned(),
        repository: labels.get("valuestream.repository").cloned(),
        attributes: {
            let mut l = metrics::Labels::new();
            crate::model::attributes::metric_labels(&span.attributes, &mut l);
            l
        },
    };
    if success {
        if let Some(failed) = env.failing_since.take() {
            let recovery = seconds(span.end - failed);
            span.attributes.insert(
                "valuestream.deployment.recovery_time_s".into(),
                AttrValue::Float(recovery),
            );
            fx.deltas.push(Delta {
                name: metrics::RECOVERY_TIME,
                labels: labels.clone(),
                value: recovery.max(0.0),
            });
        }
        env.shipped_bound = Some(upper);
        env.last_success_end = Some(span.end);
    } else if span.error {
        env.failing_since = env.failing_since.or(Some(span.end));
        if production {
            count_change_failure(engine, tx, &entry, fx).await?;
        }
    }
    tx.put(ek, &env, engine.config.ttl_index_secs);
    tx.put(
        Key::new(
            keys::deploys_pk(repo),
            format!("{}#{}", keys::time_sk(span.end), ev.key),
        ),
        &entry,
        engine.config.ttl_index_secs,
    );
    Ok(())
}

/// The deployment an incident most likely followed: the latest successful production
/// deployment of its repository that finished before the incident started, within the window.
pub async fn incident_cause(
    engine: &Engine,
    tx: &mut Tx<'_>,
    ev: &WorkEvent,
) -> Result<Option<DeployEntry>, EngineError> {
    let (Some(repo), Some(start)) = (&ev.repo, ev.start) else {
        return Ok(None);
    };
    let from = keys::time_sk(start - TimeDelta::seconds(engine.config.incident_window_secs));
    let to = format!("{}#\u{10ffff}", keys::time_sk(start));
    let found = tx
        .query(&keys::deploys_pk(repo), &from, &to, 50, Order::Descending)
        .await?;
    Ok(found
        .into_iter()
        .filter_map(|r| serde_json::from_value::<DeployEntry>(r.data).ok())
        .find(|d| d.production && d.success))
}

/// Counts a production deployment as a change failure, once however many failures follow it.
pub async fn count_change_failure(
    engine: &Engine,
    tx: &mut Tx<'_>,
    d: &DeployEntry,
    fx: &mut Effects,
) -> Result<(), EngineError> {
    if !d.production {
        return Ok(());
    }
    let k = keys::change_failure(&d.span.key);
    tx.load([k.clone()]).await?;
    if tx.get(&k).is_some() {
        return Ok(());
    }
    tx.put(k, &Utc::now(), engine.config.ttl_index_secs);
    let mut labels = metrics::Labels::new();
    labels.insert("valuestream.source".into(), d.source.clone());
    labels.insert("deployment.environment.name".into(), d.environment.clone());
    if let Some(r) = &d.repository {
        labels.insert("valuestream.repository".into(), r.clone());
    }
    if let Some(t) = &d.team {
        labels.insert("valuestream.team".into(), t.clone());
    }
    labels.extend(d.attributes.clone());
    fx.deltas.push(Delta {
        name: metrics::CHANGE_FAILURES,
        labels,
        value: 1.0,
    });
    Ok(())
}
