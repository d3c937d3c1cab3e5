//! The scheduled sync: self-healing of lost webhook deliveries. Every configured GitHub
//! repository (`VALUESTREAM_SYNC_GITHUB_REPOS`) is re-read from the API at an interval (a timer in
//! `serve`, the `SyncSchedule` EventBridge rule in Lambda) with the backfill's reader
//! ([`crate::backfill::github::read_repo`]), from the repository's cursor: the start of its
//! previous successful sync minus [`OVERLAP`] (the first time, `VALUESTREAM_SYNC_LOOKBACK_SECS`
//! back). The synthesized deliveries go through the router like any delivery ([`Sink`]), so a
//! fact a webhook brought is recognised and nothing is counted twice.
//!
//! A delivery the router answers `processed` with facts the store did not hold (`"facts" > 0`)
//! is one no webhook brought: it is counted as healed, per source and repository, in the
//! repository's record next to its cursor ([`crate::engine::keys::sync_cursor`]), and shown as
//! `valuestream_sync_healed_total` on `GET /metrics` ([`render_healed`]).
//!
//! A run is bounded in time ([`Limits`]): no repository is started after the budget, and a
//! repository still being read at the hard limit is cut short; either way its cursor stays where
//! it was and the next run starts with the repositories synced longest ago.

mod settings;

pub use settings::{Limits, SyncSettings, Target, BUDGET_SHARE, LOOKBACK_SECS, SOURCES, SYNC_SECS};

use crate::backfill::{self, deliver_all, github, gitlab, jira, pagerduty, Client, Sink, Summary};
use crate::config::Config;
use crate::engine::keys;
use crate::export::prometheus::{HealthFamily, HealthKind, HealthSample, HealthValue};
use crate::model::Time;
use crate::store::{
    Cond, Data, Key, KeyRange, Order, Record, Store, StoreError, StoreResult, Write,
};
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A sync reads from the previous successful sync's start minus this much, so that an item
/// updated while that sync ran (or stamped by a clock a little behind ours) is read again.
pub const OVERLAP: TimeDelta = TimeDelta::minutes(10);

/// A repository's record: its cursor and what its syncs healed so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub source: String,
    /// As configured (the label of the healed counter).
    pub repository: String,
    /// The start of the last successful sync; the next reads from here minus [`OVERLAP`].
    #[serde(default)]
    pub started: Option<Time>,
    /// Where the last successful sync started reading.
    #[serde(default)]
    pub since: Option<Time>,
    /// Deliveries syncs found that no webhook had brought, since the record was created.
    #[serde(default)]
    pub healed: u64,
    /// Successful syncs.
    #[serde(default)]
    pub syncs: u64,
    /// When the record was created: where `healed` started counting (the start time of the
    /// healed counter over OTLP). Absent in records written before it was kept.
    #[serde(default)]
    pub created: Option<Time>,
}

/// Every repository's record, in key order.
pub async fn cursors(store: &dyn Store) -> StoreResult<Vec<Cursor>> {
    let records = store
        .query(keys::SYNC, KeyRange::all(), 10_000, Order::Ascending)
        .await?;
    Ok(records
        .iter()
        .filter_map(|r| r.data.decode::<Cursor>().ok())
        .collect())
}

async fn read(store: &dyn Store, key: &Key) -> StoreResult<Option<(Cursor, u64)>> {
    let got = store.get_many(std::slice::from_ref(key)).await?;
    Ok(got
        .into_iter()
        .next()
        .flatten()
        .and_then(|r| r.data.decode::<Cursor>().ok().map(|c| (c, r.version))))
}

/// Adds `healed` to a repository's record and, after a successful sync, moves its cursor to
/// `done` (`(started, since)`); a conflicting writer (another process syncing too) is re-read.
async fn save(
    store: &dyn Store,
    target: &Target,
    done: Option<(Time, Time)>,
    healed: u64,
    ttl_secs: i64,
) -> StoreResult<()> {
    let key = keys::sync_cursor(target.source, &target.scope);
    for _ in 0..5 {
        let found = read(store, &key).await?;
        let (mut c, cond, version) = match found {
            Some((c, v)) => (c, Cond::Version(v), v + 1),
            None => (
                Cursor {
                    created: Some(chrono::Utc::now()),
                    ..Cursor::default()
                },
                Cond::Absent,
                1,
            ),
        };
        c.source = target.source.to_string();
        c.repository = target.scope.clone();
        c.healed += healed;
        if let Some((started, since)) = done {
            if c.started.is_none_or(|s| s < started) {
                c.started = Some(started);
                c.since = Some(since);
            }
            c.syncs += 1;
        }
        let data = Data::encode(&c).map_err(|e| StoreError::Backend(e.to_string()))?;
        let record = Record {
            key: key.clone(),
            version,
            // Real time, whatever clock the run was given.
            expires_at: chrono::Utc::now().timestamp() + ttl_secs,
            data,
        };
        match store.commit(vec![Write::Put { record, cond }]).await {
            Err(StoreError::Conflict) => continue,
            other => return other,
        }
    }
    Err(StoreError::Conflict)
}

/// One target's part of a run (a GitHub repository, a GitLab project, a PagerDuty service or
/// a Jira project).
#[derive(Clone, Debug, Default)]
pub struct RepoRun {
    pub source: &'static str,
    /// The target as configured.
    pub repository: String,
    /// Where this run read from (`None`: not started, the budget was spent).
    pub since: Option<Time>,
    pub summary: Summary,
    /// Why the repository's sync failed (its cursor did not move).
    pub error: Option<String>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub repos: Vec<RepoRun>,
    pub elapsed: Duration,
}

impl Report {
    pub fn synced(&self) -> usize {
        self.repos
            .iter()
            .filter(|r| r.since.is_some() && r.error.is_none())
            .count()
    }
    pub fn failed(&self) -> usize {
        self.repos.iter().filter(|r| r.error.is_some()).count()
    }
    /// Repositories left for the next run (the budget was spent before they started).
    pub fn skipped(&self) -> usize {
        self.repos.iter().filter(|r| r.since.is_none()).count()
    }
    fn sum(&self, f: impl Fn(&Summary) -> u64) -> u64 {
        self.repos.iter().map(|r| f(&r.summary)).sum()
    }
    pub fn healed(&self) -> u64 {
        self.sum(|s| s.new_facts)
    }
    pub fn deliveries(&self) -> u64 {
        self.sum(Summary::deliveries)
    }
    pub fn processed(&self) -> u64 {
        self.sum(|s| s.processed)
    }
    pub fn duplicate(&self) -> u64 {
        self.sum(|s| s.duplicate)
    }
    pub fn refused(&self) -> u64 {
        self.sum(|s| s.refused)
    }
    pub fn requests(&self) -> u64 {
        self.sum(|s| s.requests)
    }

    /// The run's summary as one log line (and each failed repository as a warning).
    pub fn log(&self) {
        for r in self.repos.iter().filter(|r| r.error.is_some()) {
            tracing::warn!(
                source = r.source,
                repository = %r.repository,
                error = r.error.as_deref().unwrap_or_default(),
                "sync of a repository, project or service failed; its cursor stays, the next run retries"
            );
        }
        tracing::info!(
            repositories = self.repos.len(),
            synced = self.synced(),
            failed = self.failed(),
            skipped = self.skipped(),
            deliveries = self.deliveries(),
            new = self.processed(),
            healed = self.healed(),
            duplicate = self.duplicate(),
            refused = self.refused(),
            requests = self.requests(),
            elapsed_ms = self.elapsed.as_millis() as u64,
            "sync"
        );
    }

    /// The summary as JSON (the Lambda invocation's answer).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "synced",
            "repositories": self.repos.len(),
            "synced": self.synced(),
            "failed": self.failed(),
            "skipped": self.skipped(),
            "deliveries": self.deliveries(),
            "new": self.processed(),
            "healed": self.healed(),
            "duplicate": self.duplicate(),
            "requests": self.requests(),
            "errors": self.repos.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{} {}: {e}", r.source, r.repository))).collect::<Vec<_>>(),
        })
    }
}

/// One sync run at `now`: each configured target (the longest unsynced first) read from its
/// cursor and delivered to `sink`, within `limits`. The API client of each target is made from
/// `settings` and the credentials of `config` in force now; a missing one fails that target's
/// sources only. Fails only when the store cannot be read or written.
pub async fn run(
    store: &dyn Store,
    sink: &dyn Sink,
    settings: &SyncSettings,
    config: &Config,
    now: Time,
    limits: Limits,
    ttl_secs: i64,
) -> StoreResult<Report> {
    let started = std::time::Instant::now();
    let known = cursors(store).await?;
    let cursor_of = |t: &Target| {
        known
            .iter()
            .find(|c| c.source == t.source && c.repository.eq_ignore_ascii_case(&t.scope))
    };
    let mut order = settings.targets();
    order.sort_by_key(|t| cursor_of(t).and_then(|c| c.started));
    let lookback = TimeDelta::from_std(settings.lookback).unwrap_or(TimeDelta::days(3));
    let floor = now - lookback;
    let mut report = Report::default();
    for target in order {
        let mut one = RepoRun {
            source: target.source,
            repository: target.scope.clone(),
            ..RepoRun::default()
        };
        if tokio::time::Instant::now() >= limits.start_until {
            report.repos.push(one);
            continue;
        }
        let since = cursor_of(&target)
            .and_then(|c| c.started)
            .map_or(floor, |s| (s - OVERLAP).max(floor));
        one.since = Some(since);
        let read_from = match target.source {
            // PagerDuty lists incidents by creation: an incident created before the cursor may
            // have been acknowledged or resolved since, so every run reads the whole lookback.
            pagerduty::SOURCE => floor,
            _ => since,
        };
        let result = sync_target(
            store,
            sink,
            settings,
            config,
            &target,
            read_from,
            limits,
            &mut one.summary,
        )
        .await;
        let result = result.and_then(|()| match one.summary.refused {
            0 => Ok(()),
            n => Err(anyhow::anyhow!("{n} deliveries were refused by the router")),
        });
        let done = match &result {
            Ok(()) => Some((now, since)),
            Err(e) => {
                one.error = Some(format!("{e:#}"));
                None
            }
        };
        if done.is_some() || one.summary.new_facts > 0 {
            save(store, &target, done, one.summary.new_facts, ttl_secs).await?;
        }
        report.repos.push(one);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One target read from `since` and delivered to `sink`, cut short at the run's hard limit.
#[allow(clippy::too_many_arguments)]
async fn sync_target(
    store: &dyn Store,
    sink: &dyn Sink,
    settings: &SyncSettings,
    config: &Config,
    target: &Target,
    since: Time,
    limits: Limits,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let api = Client::new(settings.client(target.source, config)?)?;
    let left = limits
        .stop_at
        .saturating_duration_since(tokio::time::Instant::now());
    let work = read_and_deliver(store, sink, &api, target, since, summary);
    let r = match tokio::time::timeout(left, work).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "cut short at the run's time limit; the next run reads it again"
        )),
    };
    summary.add_client(&api);
    r
}

/// The backfill's reader of `target`'s source, from `since` to now.
async fn read_and_deliver(
    store: &dyn Store,
    sink: &dyn Sink,
    api: &std::sync::Arc<Client>,
    target: &Target,
    since: Time,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let scope = target.scope.clone();
    let deliveries = match target.source {
        gitlab::SOURCE => {
            let opts = gitlab::Options::new(vec![scope.clone()], since, None);
            gitlab::read_project(api, &opts, &scope, &mut summary.items).await?
        }
        pagerduty::SOURCE => {
            let opts = pagerduty::Options::new(vec![scope], since, None);
            pagerduty::read(api, &opts, &mut summary.items).await?
        }
        jira::SOURCE => {
            let opts = jira::Options {
                projects: vec![scope],
                since,
                until: None,
            };
            jira::read(api, &opts, &mut summary.items).await?
        }
        _ => {
            let opts = github::Options::new(vec![scope.clone()], since, None);
            // Validators (ETags) kept next to the backfill's; no backfill cursor: the sync's
            // own cursor says where the next run starts.
            let records = StoreRecords(store);
            let mut state = backfill::State::new(&records, github::SOURCE);
            state.resume = false;
            return github::repo(api, &opts, &scope, sink, &state, summary).await;
        }
    };
    deliver_all(sink, &deliveries, summary).await
}

/// A store as the records a backfill keeps (validators, cursors): what `backfill` and the
/// sync hand [`backfill::State`].
pub struct StoreRecords<'a>(pub &'a dyn Store);

#[async_trait::async_trait]
impl backfill::Records for StoreRecords<'_> {
    async fn get(&self, pk: &str, sk: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let got = self.0.get_many(&[Key::new(pk, sk)]).await?;
        Ok(got
            .into_iter()
            .next()
            .flatten()
            .map(|r| r.data.as_bytes().to_vec()))
    }

    async fn get_many(&self, pk: &str, sks: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Key> = sks.iter().map(|sk| Key::new(pk, sk.as_str())).collect();
        let got = self.0.get_many(&keys).await?;
        Ok(got
            .into_iter()
            .map(|r| r.map(|r| r.data.as_bytes().to_vec()))
            .collect())
    }

    async fn query(&self, pk: &str, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let found = self
            .0
            .query(pk, KeyRange::prefix(prefix), 10_000, Order::Ascending)
            .await?;
        Ok(found
            .into_iter()
            .filter(|r| r.key.sk.starts_with(prefix))
            .map(|r| (r.key.sk, r.data.as_bytes().to_vec()))
            .collect())
    }

    async fn put(
        &self,
        records: Vec<(String, String, Vec<u8>)>,
        ttl_secs: i64,
    ) -> anyhow::Result<()> {
        let expires_at = chrono::Utc::now().timestamp() + ttl_secs;
        let mut writes = Vec::new();
        for (pk, sk, data) in records {
            writes.push(Write::Put {
                record: Record {
                    key: Key::new(pk, sk),
                    version: 1,
                    expires_at,
                    data: Data::from_json(data)?,
                },
                cond: Cond::Any,
            });
        }
        Ok(self.0.commit(writes).await?)
    }
}

/// The healed counter in the Prometheus text format, one series per repository a sync has a
/// record of; empty when none has.
pub fn render_healed(cursors: &[Cursor]) -> String {
    if cursors.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "# HELP valuestream_sync_healed_total {HEALED_HELP}\n# TYPE valuestream_sync_healed_total counter\n"
    );
    for c in cursors {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "valuestream_sync_healed_total{{source=\"{}\",repository=\"{}\"}} {}\n",
            esc(&c.source),
            esc(&c.repository),
            c.healed
        ));
    }
    out
}

/// The healed counter as valuestream's own health sends it over OTLP
/// ([`crate::export::HealthSnapshot::shared`]): `valuestream.sync.healed` (unit `{delivery}`,
/// which the collector names `valuestream_sync_healed_total`), one series per repository a sync
/// has a record of, each starting when its record was created; `None` when there is none.
pub fn healed_family(cursors: &[Cursor]) -> Option<HealthFamily> {
    if cursors.is_empty() {
        return None;
    }
    Some(HealthFamily {
        name: "valuestream_sync_healed_total",
        otel_name: "valuestream.sync.healed",
        unit: "{delivery}",
        help: HEALED_HELP,
        kind: HealthKind::Counter,
        samples: cursors
            .iter()
            .map(|c| HealthSample {
                labels: vec![
                    ("source", c.source.clone()),
                    ("repository", c.repository.clone()),
                ],
                value: HealthValue::Number(c.healed as f64),
                start_ns: c
                    .created
                    .and_then(|t| t.timestamp_nanos_opt())
                    .map(|n| n.max(0) as u64),
            })
            .collect(),
    })
}

const HEALED_HELP: &str = "Deliveries the scheduled sync found that no webhook had brought (facts the store did not hold): the webhooks you are missing.";

/// The healed counter as `GET /metrics` shows it, read from the store.
pub async fn exposition(store: &dyn Store) -> StoreResult<String> {
    Ok(render_healed(&cursors(store).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healed_counter_renders_one_series_per_repository() {
        assert_eq!(render_healed(&[]), "");
        let text = render_healed(&[Cursor {
            source: "github".into(),
            repository: "o/r".into(),
            healed: 3,
            ..Cursor::default()
        }]);
        assert!(text.contains("# TYPE valuestream_sync_healed_total counter\n"));
        assert!(text
            .ends_with("valuestream_sync_healed_total{source=\"github\",repository=\"o/r\"} 3\n"));
    }
}
