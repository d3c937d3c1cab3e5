//! `valuestream backfill <source>`: history read from a sender's REST API, turned into the
//! webhook deliveries the sender would have sent, and fed through the same path `replay` uses
//! (a [`Recorded`] delivery → the router → the source's translation → the engine). The engine
//! never knows a delivery came from an API: an API-derived fact is the same fact a webhook
//! records, so a second backfill, or a webhook after a backfill, adds nothing.
//!
//! This module holds what every sender's backfill shares: the HTTP client (pagination by `Link`
//! headers, rate limits, secondary limits, retries of 5xx with backoff, a timeout per request,
//! a bound on requests at once), `--since`/`--until` parsing, the [`Sink`] deliveries go to, and
//! the progress lines and summary. [`github`] maps GitHub's endpoints onto deliveries.
//! [`gitlab`] maps GitLab's (the client speaks its headers with [`Api::GitLab`]).

pub mod github;
pub mod gitlab;
pub mod jira;
pub mod pagerduty;

use crate::model::Time;
use crate::replay::Recorded;
use anyhow::{bail, Context};
use chrono::{NaiveDate, TimeDelta, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where synthesized deliveries go: the router in process, or a running instance (`--to`).
/// The answer's status code and body (the router's JSON `Answer`).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    async fn deliver(&self, delivery: &Recorded) -> anyhow::Result<(u16, String)>;
}

/// Parses `--since`/`--until`: an RFC 3339 time, a date (`2024-01-31`, midnight UTC), or a
/// duration back from `now` (`90d`, `12w`, `36h`, `30m`).
pub fn parse_time(s: &str, now: Time) -> anyhow::Result<Time> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .with_context(|| {
            format!("{s:?} is neither an RFC 3339 time, a date (YYYY-MM-DD) nor a duration (90d, 12w, 36h)")
        })?;
    let n: i64 = s[..split].parse().context("duration too large")?;
    let delta = match &s[split..] {
        "w" => TimeDelta::try_weeks(n),
        "d" => TimeDelta::try_days(n),
        "h" => TimeDelta::try_hours(n),
        "m" => TimeDelta::try_minutes(n),
        unit => bail!("{s:?}: unknown duration unit {unit:?} (use w, d, h or m)"),
    }
    .context("duration too large")?;
    Ok(now - delta)
}

/// Settings of the API client.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// `https://api.github.com`, or an Enterprise Server's `https://HOST/api/v3`.
    pub api_url: String,
    pub token: String,
    /// The environment variable the token came from: errors name it.
    pub token_var: &'static str,
    /// `per_page` of every list request.
    pub page_size: u32,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Timeout of one request.
    pub timeout: Duration,
    /// 5xx (and connection errors) are retried this many times, with exponential backoff.
    pub retries: u32,
    /// The first backoff; doubled on every retry.
    pub backoff: Duration,
    /// No progress line per page (the scheduled sync logs one summary per run instead).
    pub quiet: bool,
    /// Whose API: how the token is sent and which rate-limit headers are read.
    pub api: Api,
    /// The authentication and `Accept` headers of every request, for an API other than
    /// GitHub's and GitLab's (PagerDuty's `Authorization: Token token=…`, Jira's Basic auth);
    /// `None`: those of [`Api`].
    pub request_headers: Option<Vec<(String, String)>>,
}

/// The API a [`Client`] speaks. GitHub: `Authorization: Bearer`, `x-ratelimit-*`. GitLab:
/// `PRIVATE-TOKEN` and `RateLimit-Remaining`/`RateLimit-Reset` (GitLab docs "GitLab.com rate
/// limits", `doc/security/rate_limits.md`); a 429 waits for its `Retry-After`, else for
/// `RateLimit-Reset`, else a minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    #[default]
    GitHub,
    GitLab,
}

impl ClientSettings {
    pub fn new(api_url: &str, token: String, token_var: &'static str) -> Self {
        ClientSettings {
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            token_var,
            page_size: 100,
            concurrency: 4,
            timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(500),
            quiet: false,
            api: Api::GitHub,
            request_headers: None,
        }
    }
}

/// What the client did: requests made, retries, time spent waiting for rate limits.
#[derive(Default, Debug)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub waited_ms: AtomicU64,
}

/// Waits longer than this are announced on a line of their own.
const LONG_WAIT: Duration = Duration::from_secs(15 * 60);
/// Secondary-limit answers followed in a row for one request before giving up.
const MAX_SECONDARY_WAITS: u32 = 10;

/// An HTTP client for one sender's REST API.
pub struct Client {
    http: reqwest::Client,
    pub settings: ClientSettings,
    permits: Semaphore,
    pub stats: ClientStats,
    /// No request before this instant (a primary rate limit ran out).
    paused_until: Mutex<Option<tokio::time::Instant>>,
}

/// One page of a list: its items and the `rel="next"` URL.
pub struct Page {
    pub body: Value,
    pub next: Option<String>,
}

impl Client {
    pub fn new(settings: ClientSettings) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("valuestream/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Client {
            http,
            permits: Semaphore::new(settings.concurrency.max(1)),
            settings,
            stats: ClientStats::default(),
            paused_until: Mutex::new(None),
        }))
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    pub fn waited_secs(&self) -> f64 {
        self.stats.waited_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// The absolute URL of an API path (`/repos/o/r/pulls?state=all`); absolute URLs (a `Link`
    /// header's) are kept.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.settings.api_url)
        }
    }

    /// A list path with `per_page` added.
    pub fn list_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.url(&format!("{path}{sep}per_page={}", self.settings.page_size))
    }

    async fn wait(&self, d: Duration, why: &str, count: bool) {
        if d.is_zero() {
            return;
        }
        if d > LONG_WAIT {
            eprintln!("backfill: waiting {}s for {why}", d.as_secs());
        }
        if count {
            self.stats
                .waited_ms
                .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
        }
        tokio::time::sleep(d).await;
    }

    async fn respect_pause(&self) {
        let until = *self.paused_until.lock().expect("not poisoned");
        if let Some(until) = until {
            let now = tokio::time::Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
    }

    /// Pauses every request until the epoch second `reset` (plus a second of slack is not
    /// added: GitHub's reset is when the window opens). Counts the wait once.
    async fn pause_until_reset(&self, reset: Option<i64>, why: &str) {
        let now_ms = Utc::now().timestamp_millis();
        let wait_ms = reset.map_or(60_000, |r| (r * 1000 - now_ms).max(0)) as u64;
        let d = Duration::from_millis(wait_ms);
        let until = tokio::time::Instant::now() + d;
        let first = {
            let mut p = self.paused_until.lock().expect("not poisoned");
            let first = p.is_none_or(|p| p < until);
            if first {
                *p = Some(until);
            }
            first
        };
        self.wait(d, why, first).await;
    }

    /// GET one URL: JSON and the next page's URL. Waits out rate limits, retries 5xx.
    pub async fn get(&self, url: &str) -> anyhow::Result<Page> {
        let mut attempt = 0u32;
        let mut secondary = 0u32;
        loop {
            let sent = {
                let _permit = self.permits.acquire().await.expect("never closed");
                // After the permit: a request queued behind one that saw the limit run out waits.
                self.respect_pause().await;
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let req = match (&self.settings.request_headers, self.settings.api) {
                    (Some(headers), _) => headers
                        .iter()
                        .fold(self.http.get(url), |r, (k, v)| r.header(k, v)),
                    (None, Api::GitHub) => self
                        .http
                        .get(url)
                        .header("authorization", format!("Bearer {}", self.settings.token))
                        .header("accept", "application/vnd.github+json")
                        .header("x-github-api-version", "2022-11-28"),
                    (None, Api::GitLab) => self
                        .http
                        .get(url)
                        .header("private-token", &self.settings.token),
                };
                let resp = req.send().await;
                match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let headers = r.headers().clone();
                        match r.bytes().await {
                            Ok(b) => Ok((status, headers, b)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            };
            let (status, headers, body) = match sent {
                Ok(x) => x,
                Err(e) => {
                    if attempt < self.settings.retries {
                        attempt += 1;
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        self.wait(self.backoff(attempt), "a retry", false).await;
                        continue;
                    }
                    return Err(anyhow::anyhow!("GET {url}: {e}"));
                }
            };
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            // GitLab's names without the `x-` (`RateLimit-Remaining`, `RateLimit-Reset`).
            let remaining = header("x-ratelimit-remaining")
                .or_else(|| header("ratelimit-remaining"))
                .and_then(|v| v.parse::<i64>().ok());
            let reset = header("x-ratelimit-reset")
                .or_else(|| header("ratelimit-reset"))
                .and_then(|v| v.parse::<i64>().ok());
            let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
            match status {
                200..=299 => {
                    let body: Value = serde_json::from_slice(&body).map_err(|e| {
                        anyhow::anyhow!("GET {url}: the answer is not JSON ({e})")
                    })?;
                    let next = header("link").and_then(|l| next_link(&l));
                    if remaining == Some(0) {
                        self.pause_until_reset(reset, "the rate limit to reset").await;
                    }
                    return Ok(Page { body, next });
                }
                401 => bail!(
                    "GET {url} answered 401: the token in {} was refused (expired, revoked or mistyped)",
                    self.settings.token_var
                ),
                403 | 429 => {
                    if let Some(secs) = retry_after {
                        secondary += 1;
                        if secondary > MAX_SECONDARY_WAITS {
                            bail!("GET {url}: still limited after {MAX_SECONDARY_WAITS} waits");
                        }
                        self.wait(Duration::from_secs(secs), "a secondary rate limit", true)
                            .await;
                        continue;
                    }
                    if remaining == Some(0) {
                        self.pause_until_reset(reset, "the rate limit to reset").await;
                        continue;
                    }
                    // A secondary limit without retry-after: GitHub asks for at least a minute.
                    if String::from_utf8_lossy(&body)
                        .to_ascii_lowercase()
                        .contains("secondary rate limit")
                    {
                        secondary += 1;
                        if secondary > MAX_SECONDARY_WAITS {
                            bail!("GET {url}: still limited after {MAX_SECONDARY_WAITS} waits");
                        }
                        self.wait(Duration::from_secs(60), "a secondary rate limit", true)
                            .await;
                        continue;
                    }
                    // GitLab: a 429 that says no more (no Retry-After, no reset) waits a minute.
                    if status == 429 && self.settings.api == Api::GitLab {
                        secondary += 1;
                        if secondary > MAX_SECONDARY_WAITS {
                            bail!("GET {url}: still limited after {MAX_SECONDARY_WAITS} waits");
                        }
                        self.wait(Duration::from_secs(60), "a rate limit", true).await;
                        continue;
                    }
                    bail!(
                        "GET {url} answered {status}: {} (does the token in {} have read access?)",
                        String::from_utf8_lossy(&body),
                        self.settings.token_var
                    )
                }
                500..=599 if attempt < self.settings.retries => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.wait(self.backoff(attempt), "a retry", false).await;
                }
                _ => bail!(
                    "GET {url} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.settings.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))
    }

    /// Every page of a list, following `Link: <…>; rel="next"`, while `more` says the last
    /// page's items may still be in the window. Items of every page, in order; one progress
    /// line per page.
    pub async fn get_list(
        &self,
        what: &str,
        path: &str,
        more: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        match self.get_list_capped(what, path, more, u64::MAX).await? {
            Capped::All(items) => Ok(items),
            Capped::Over(_) => unreachable!("no cap"),
        }
    }

    /// As [`Client::get_list`], but a list whose first page says it holds more than `cap`
    /// items (`total_count`: a search-backed list GitHub cuts at 1,000) is not read further.
    pub async fn get_list_capped(
        &self,
        what: &str,
        path: &str,
        more: impl Fn(&[Value]) -> bool,
        cap: u64,
    ) -> anyhow::Result<Capped> {
        let mut url = Some(self.list_url(path));
        let mut out = Vec::new();
        let mut pages = 0;
        while let Some(u) = url {
            let page = self.get(&u).await?;
            if pages == 0 {
                if let Some(total) = page.body.get("total_count").and_then(Value::as_u64) {
                    if total > cap {
                        eprintln!("backfill: {what}: {total} items, over the {cap} the API lists: splitting");
                        return Ok(Capped::Over(total));
                    }
                }
            }
            let items = match page.body {
                Value::Array(items) => items,
                // Lists wrapped in an object: {"total_count": n, "workflow_runs": [...]}.
                Value::Object(mut m) => {
                    match m.iter().find(|(_, v)| v.is_array()).map(|(k, _)| k.clone()) {
                        Some(k) => match m.remove(&k) {
                            Some(Value::Array(items)) => items,
                            _ => unreachable!("checked to be an array"),
                        },
                        None => bail!("GET {u}: the answer holds no list"),
                    }
                }
                _ => bail!("GET {u}: the answer is not a list"),
            };
            pages += 1;
            if !self.settings.quiet {
                eprintln!("backfill: {what}: page {pages}, {} item(s)", items.len());
            }
            let go_on = more(&items);
            out.extend(items);
            url = if go_on { page.next } else { None };
        }
        Ok(Capped::All(out))
    }
}

/// A list read whole, or the `total_count` of one over its cap.
pub enum Capped {
    All(Vec<Value>),
    Over(u64),
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// A field of an API object, or an error naming the endpoint and the field.
pub fn field<'a>(v: &'a Value, name: &str, endpoint: &str) -> anyhow::Result<&'a Value> {
    match v.pointer(&format!("/{}", name.replace('.', "/"))) {
        Some(x) if !x.is_null() => Ok(x),
        _ => bail!("{endpoint}: an item has no field {name:?}: {}", brief(v)),
    }
}

pub fn field_str<'a>(v: &'a Value, name: &str, endpoint: &str) -> anyhow::Result<&'a str> {
    field(v, name, endpoint)?
        .as_str()
        .with_context(|| format!("{endpoint}: field {name:?} is not a string: {}", brief(v)))
}

pub fn field_u64(v: &Value, name: &str, endpoint: &str) -> anyhow::Result<u64> {
    field(v, name, endpoint)?
        .as_u64()
        .with_context(|| format!("{endpoint}: field {name:?} is not a number: {}", brief(v)))
}

pub fn field_time(v: &Value, name: &str, endpoint: &str) -> anyhow::Result<Time> {
    let s = field_str(v, name, endpoint)?;
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{endpoint}: field {name:?} is not an RFC 3339 time: {s:?}"))
}

/// An optional time field: absent or null is `None`, anything else must parse.
pub fn opt_time(v: &Value, name: &str, endpoint: &str) -> anyhow::Result<Option<Time>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => field_time(v, name, endpoint).map(Some),
    }
}

fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}

/// A stable delivery ID for a synthesized delivery: the same item, event, action and time give
/// the same ID, so a second backfill is answered `duplicate`.
pub fn delivery_id(source: &str, event: &str, action: &str, object: &str, at: &str) -> String {
    let h = crate::model::ids::short_hash(
        format!("{source}\n{event}\n{action}\n{object}\n{at}").as_bytes(),
    );
    format!("backfill-{h}")
}

/// A synthesized delivery, as `replay` reads one from a file.
pub fn recorded(source: &str, headers: &[(&str, String)], body: &Value, label: String) -> Recorded {
    Recorded {
        file: label.into(),
        source: source.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        query: None,
        body: serde_json::to_vec(body).expect("JSON values serialize"),
    }
}

/// What a backfill read and delivered.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// API items read, by kind (`issues`, `pull_requests`, `commits`, …).
    pub items: BTreeMap<String, u64>,
    /// Deliveries answered `processed`: facts the store did not hold under this delivery ID.
    pub processed: u64,
    /// Of those, the ones that opened, updated or closed no span (their facts were known, e.g.
    /// a webhook brought them, or they only add a status event).
    pub unchanged: u64,
    /// Of the processed ones, the deliveries that brought at least one fact the store did not
    /// hold: what no webhook (and no earlier backfill) had brought. A scheduled sync counts
    /// these as healed.
    pub new_facts: u64,
    /// Deliveries answered `duplicate` (an earlier backfill brought them).
    pub duplicate: u64,
    pub ignored: u64,
    pub refused: u64,
    pub requests: u64,
    pub retries: u64,
    pub waited_secs: f64,
}

impl Summary {
    pub fn deliveries(&self) -> u64 {
        self.processed + self.duplicate + self.ignored + self.refused
    }

    /// The summary lines printed at the end.
    pub fn lines(&self) -> String {
        let items: Vec<String> = self.items.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "backfill: items read: {}\nbackfill: deliveries {}: {} new ({} of them changed no span, {} brought facts the store did not hold), {} duplicate, {} ignored, {} refused\nbackfill: API requests {} ({} retried), {:.1} s waited for rate limits",
            items.join(", "),
            self.deliveries(),
            self.processed,
            self.unchanged,
            self.new_facts,
            self.duplicate,
            self.ignored,
            self.refused,
            self.requests,
            self.retries,
            self.waited_secs
        )
    }
}

/// Sends deliveries to `sink`, counting the answers into `summary`.
pub async fn deliver_all(
    sink: &dyn Sink,
    deliveries: &[Recorded],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    for d in deliveries {
        let (status, text) = sink.deliver(d).await?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let s = answer["status"].as_str().unwrap_or_default();
        let changed = ["opened", "updated", "closed"]
            .iter()
            .any(|k| answer[*k].as_u64().unwrap_or(0) > 0);
        match (status, s) {
            (400.., _) | (_, "error") => {
                summary.refused += 1;
                eprintln!("backfill: {} refused: {status} {text}", d.file.display());
            }
            (_, "duplicate") => summary.duplicate += 1,
            (_, "ignored") => summary.ignored += 1,
            _ => {
                summary.processed += 1;
                if !changed {
                    summary.unchanged += 1;
                }
                if answer["facts"].as_u64().unwrap_or(0) > 0 {
                    summary.new_facts += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_dates_and_durations() {
        let now: Time = "2024-05-01T12:00:00Z".parse().unwrap();
        let t = |s| parse_time(s, now).unwrap().to_rfc3339();
        assert_eq!(t("90d"), "2024-02-01T12:00:00+00:00");
        assert_eq!(t("2w"), "2024-04-17T12:00:00+00:00");
        assert_eq!(t("36h"), "2024-04-30T00:00:00+00:00");
        assert_eq!(t("2024-01-31"), "2024-01-31T00:00:00+00:00");
        assert_eq!(t("2024-01-31T10:00:00+02:00"), "2024-01-31T08:00:00+00:00");
        assert!(parse_time("12y", now).is_err());
        assert!(parse_time("d", now).is_err());
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn the_next_link_is_found() {
        let l = r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        assert_eq!(next_link(r#"<https://a/x?page=1>; rel="prev""#), None);
    }

    #[test]
    fn delivery_ids_are_stable() {
        let a = delivery_id("github", "issues", "opened", "1", "t");
        assert_eq!(a, delivery_id("github", "issues", "opened", "1", "t"));
        assert_ne!(a, delivery_id("github", "issues", "closed", "1", "t"));
    }
}
