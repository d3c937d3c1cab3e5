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
//! [`gitlab`] maps GitLab's (the client speaks its headers with [`Api::GitLab`]), [`pagerduty`]
//! PagerDuty's and [`jira`] Jira Cloud's; those three go through a scope's run resource by
//! resource with [`resume`] (cursors, and validators where the vendor answers conditional
//! requests: GitLab only).

pub mod github;
pub mod github_graphql;
pub mod gitlab;
pub mod jira;
pub mod pagerduty;
pub mod resume;

use crate::model::Time;
use crate::replay::Recorded;
use anyhow::{bail, Context};
use chrono::{NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
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
    /// The first wait after a 429 that says neither how long (no `Retry-After`) nor until when
    /// (PagerDuty, Jira); doubled on each one in a row ([`Client::limit_backoff`]).
    pub limit_backoff: Duration,
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
    /// Headers from [`ClientSettings::request_headers`]; `ratelimit-reset` in seconds from now;
    /// a bare 429 backs off ([`Client::limit_backoff`]).
    PagerDuty,
    /// Headers from [`ClientSettings::request_headers`]; a 429 without `Retry-After` (Jira
    /// Cloud's "may be accompanied by Retry-After") backs off ([`Client::limit_backoff`]).
    Jira,
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
            limit_backoff: Duration::from_secs(5),
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
    /// Conditional requests answered `304 Not Modified`.
    pub not_modified: AtomicU64,
    pub retries: AtomicU64,
    pub waited_ms: AtomicU64,
}

/// Waits longer than this are announced on a line of their own.
const LONG_WAIT: Duration = Duration::from_secs(15 * 60);
/// Secondary-limit answers followed in a row for one request before giving up.
pub const MAX_SECONDARY_WAITS: u32 = 10;
/// The longest wait after a bare 429 from PagerDuty or Jira ([`Client::limit_backoff`]).
pub const MAX_LIMIT_BACKOFF: Duration = Duration::from_secs(30);

/// What the headers of an answer say about rate limits, pagination and caching.
struct Answer {
    remaining: Option<i64>,
    /// The epoch second the limit resets.
    reset: Option<i64>,
    retry_after: Option<u64>,
    link: Option<String>,
    etag: Option<String>,
    /// GitHub's `x-ratelimit-resource`: the limit the other figures are of.
    resource: Option<String>,
}

impl Answer {
    fn read(api: Api, headers: &reqwest::header::HeaderMap) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // GitLab's and PagerDuty's names are without the `x-` (`RateLimit-Remaining`, …).
        let number = |name: &str| {
            header(&format!("x-{name}"))
                .or_else(|| header(name))
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        let reset = number("ratelimit-reset").map(|r| match api {
            // PagerDuty's `ratelimit-reset` is the seconds left until the reset (its "REST API
            // Rate Limits" page); GitHub's and GitLab's is an epoch second.
            // Rounded up: at least that long.
            Api::PagerDuty => (Utc::now().timestamp_millis() + r * 1000 + 999) / 1000,
            _ => r,
        });
        Answer {
            remaining: number("ratelimit-remaining"),
            reset,
            retry_after: header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()),
            link: header("link"),
            etag: header("etag"),
            resource: header("x-ratelimit-resource"),
        }
    }

    /// The limit this answer's figures are of: the one it names, else `guess` (the request's).
    fn resource<'a>(&'a self, guess: &'a str) -> &'a str {
        self.resource.as_deref().unwrap_or(guess)
    }
}

/// An HTTP client for one sender's REST API.
pub struct Client {
    http: reqwest::Client,
    pub settings: ClientSettings,
    permits: Semaphore,
    pub stats: ClientStats,
    /// No request of a rate-limit resource before its instant (its primary limit ran out).
    /// GitHub keeps a limit per resource (`x-ratelimit-resource`: `core` for REST, `graphql`,
    /// `search`; "Rate limits for the REST API" and "Rate limits and query limits for the
    /// GraphQL API"): a spent GraphQL limit does not hold the REST requests. The other APIs have
    /// one limit (the key `""`).
    paused_until: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Progress bars on a terminal, lines otherwise, nothing when quiet.
    pub progress: Progress,
}

/// One page of a list: its items and the `rel="next"` URL.
pub struct Page {
    pub body: Value,
    pub next: Option<String>,
}

impl Client {
    pub fn new(settings: ClientSettings) -> anyhow::Result<Arc<Self>> {
        let settings_quiet = settings.quiet;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("valuestream/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Client {
            http,
            permits: Semaphore::new(settings.concurrency.max(1)),
            settings,
            stats: ClientStats::default(),
            paused_until: Mutex::new(HashMap::new()),
            progress: Progress::detect(settings_quiet),
        }))
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    pub fn not_modified(&self) -> u64 {
        self.stats.not_modified.load(Ordering::Relaxed)
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
            self.progress
                .println(&format!("backfill: waiting {}s for {why}", d.as_secs()));
        }
        if count {
            self.stats
                .waited_ms
                .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
        }
        tokio::time::sleep(d).await;
    }

    /// The rate-limit resource a request to `url` counts against, before its answer names it.
    fn resource_of(&self, url: &str) -> &'static str {
        if self.settings.api != Api::GitHub {
            return "";
        }
        let path = url.split('?').next().unwrap_or(url);
        if path.ends_with("/graphql") {
            "graphql"
        } else if path.contains("/search/") {
            "search"
        } else {
            "core"
        }
    }

    async fn respect_pause(&self, resource: &str) {
        let until = self
            .paused_until
            .lock()
            .expect("not poisoned")
            .get(resource)
            .copied();
        if let Some(until) = until {
            let now = tokio::time::Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
    }

    /// Pauses every request of `resource` until the epoch second `reset` (plus a second of
    /// slack is not added: GitHub's reset is when the window opens). Counts the wait once.
    async fn pause_until_reset(&self, resource: &str, reset: Option<i64>, why: &str) {
        let now_ms = Utc::now().timestamp_millis();
        let wait_ms = reset.map_or(60_000, |r| (r * 1000 - now_ms).max(0)) as u64;
        let d = Duration::from_millis(wait_ms);
        let until = tokio::time::Instant::now() + d;
        let first = {
            let mut paused = self.paused_until.lock().expect("not poisoned");
            let p = paused.get(resource);
            let first = p.is_none_or(|p| *p < until);
            if first {
                paused.insert(resource.to_string(), until);
            }
            first
        };
        self.wait(d, why, first).await;
    }

    /// GET one URL: JSON and the next page's URL. Waits out rate limits, retries 5xx.
    pub async fn get(&self, url: &str) -> anyhow::Result<Page> {
        match self.get_if(url, None).await? {
            Fetched::Modified(page, _) => Ok(page),
            Fetched::NotModified => bail!("GET {url} answered 304 to an unconditional request"),
        }
    }

    /// GET one URL with `If-None-Match: etag` when one is given: `304 Not Modified` (which
    /// GitHub does not count against the rate limit) or the page and its `ETag`.
    pub async fn get_if(&self, url: &str, etag: Option<&str>) -> anyhow::Result<Fetched> {
        self.fetch(url, etag, None).await
    }

    /// POST a JSON body to one URL (GitHub's GraphQL endpoint): the JSON answer. Rate limits,
    /// secondary limits, retries and errors as [`Client::get_if`].
    pub async fn post_json(&self, url: &str, body: &Value) -> anyhow::Result<Value> {
        match self.fetch(url, None, Some(body)).await? {
            Fetched::Modified(page, _) => Ok(page.body),
            Fetched::NotModified => bail!("POST {url} answered 304"),
        }
    }

    async fn fetch(
        &self,
        url: &str,
        etag: Option<&str>,
        post: Option<&Value>,
    ) -> anyhow::Result<Fetched> {
        let mut attempt = 0u32;
        let mut limited = 0u32;
        let method = if post.is_some() { "POST" } else { "GET" };
        loop {
            let (status, headers, body) = match self.send(url, etag, post).await {
                Ok(x) => x,
                Err(_) if attempt < self.settings.retries => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.wait(self.backoff(attempt), "a retry", false).await;
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("{method} {url}: {e}")),
            };
            let answer = Answer::read(self.settings.api, &headers);
            match status {
                304 if etag.is_some() => {
                    self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                    return Ok(Fetched::NotModified);
                }
                200..=299 => {
                    let body: Value = serde_json::from_slice(&body).map_err(|e| {
                        anyhow::anyhow!("{method} {url}: the answer is not JSON ({e})")
                    })?;
                    if answer.remaining == Some(0) {
                        let resource = answer.resource(self.resource_of(url));
                        self.pause_until_reset(resource, answer.reset, "the rate limit to reset")
                            .await;
                    }
                    let next = answer.link.as_deref().and_then(next_link);
                    return Ok(Fetched::Modified(Page { body, next }, answer.etag));
                }
                401 => bail!(
                    "{method} {url} answered 401: the token in {} was refused (expired, revoked or mistyped)",
                    self.settings.token_var
                ),
                403 | 429 => {
                    self.wait_out_limit(url, status, &answer, &body, &mut limited)
                        .await?
                }
                500..=599 if attempt < self.settings.retries => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.wait(self.backoff(attempt), "a retry", false).await;
                }
                _ => bail!(
                    "{method} {url} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
    }

    /// One request, with the API's authentication and `Accept` headers (and `If-None-Match`),
    /// within a permit and after any pause for a rate limit.
    async fn send(
        &self,
        url: &str,
        etag: Option<&str>,
        post: Option<&Value>,
    ) -> Result<(u16, reqwest::header::HeaderMap, bytes::Bytes), reqwest::Error> {
        let _permit = self.permits.acquire().await.expect("never closed");
        // After the permit: a request queued behind one that saw its limit run out waits.
        self.respect_pause(self.resource_of(url)).await;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let method = match post {
            Some(_) => reqwest::Method::POST,
            None => reqwest::Method::GET,
        };
        let mut req = match (&self.settings.request_headers, self.settings.api) {
            (Some(headers), _) => headers
                .iter()
                .fold(self.http.request(method, url), |r, (k, v)| r.header(k, v)),
            (None, Api::GitLab) => self
                .http
                .request(method, url)
                .header("private-token", &self.settings.token),
            (None, _) => self
                .http
                .request(method, url)
                .header("authorization", format!("Bearer {}", self.settings.token))
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28"),
        };
        if let Some(etag) = etag {
            req = req.header("if-none-match", etag);
        }
        if let Some(body) = post {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("JSON values serialize"));
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await?;
        Ok((status, headers, body))
    }

    /// A 403 or 429: waits as the answer asks and returns (the caller asks again), or fails
    /// when it is no rate limit or the limit held for [`MAX_SECONDARY_WAITS`] waits in a row.
    /// In order: `Retry-After`; a spent primary limit (`remaining` 0) until its reset; GitHub's
    /// secondary limit without `Retry-After`, a minute; GitLab's bare 429, a minute; PagerDuty's
    /// and Jira's bare 429 by [`Client::limit_backoff`].
    async fn wait_out_limit(
        &self,
        url: &str,
        status: u16,
        answer: &Answer,
        body: &[u8],
        limited: &mut u32,
    ) -> anyhow::Result<()> {
        let secondary = String::from_utf8_lossy(body)
            .to_ascii_lowercase()
            .contains("secondary rate limit");
        let api = self.settings.api;
        let wait = match answer.retry_after {
            Some(secs) => Some((Duration::from_secs(secs), "a secondary rate limit")),
            None if answer.remaining == Some(0) => {
                let resource = answer.resource(self.resource_of(url));
                self.pause_until_reset(resource, answer.reset, "the rate limit to reset")
                    .await;
                return Ok(());
            }
            None if secondary => Some((Duration::from_secs(60), "a secondary rate limit")),
            None if status == 429 && api == Api::GitLab => {
                Some((Duration::from_secs(60), "a rate limit"))
            }
            None if status == 429 && matches!(api, Api::PagerDuty | Api::Jira) => {
                Some((self.limit_backoff(*limited + 1), "a rate limit"))
            }
            None => None,
        };
        let Some((d, why)) = wait else {
            bail!(
                "GET {url} answered {status}: {} (does the token in {} have read access?)",
                String::from_utf8_lossy(body),
                self.settings.token_var
            )
        };
        *limited += 1;
        if *limited > MAX_SECONDARY_WAITS {
            bail!("GET {url}: still limited after {MAX_SECONDARY_WAITS} waits");
        }
        self.wait(d, why, true).await;
        Ok(())
    }

    /// The wait after the `n`th bare 429 in a row (no `Retry-After`, no reset) from PagerDuty
    /// or Jira: [`ClientSettings::limit_backoff`] doubled each time, at most
    /// [`MAX_LIMIT_BACKOFF`] (defaults: 5 s, 10 s, 20 s, then 30 s; at most
    /// [`MAX_SECONDARY_WAITS`] waits, under 5 minutes in all, then the request fails). Atlassian's
    /// "Rate limiting" guide for Jira Cloud gives this schedule (5 s first, doubled, 30 s cap);
    /// PagerDuty asks clients to back off and retry without saying how long.
    pub fn limit_backoff(&self, n: u32) -> Duration {
        let first = self.settings.limit_backoff;
        first
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
            .min(MAX_LIMIT_BACKOFF.max(first))
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
        let bar = self.progress.lines_only(what);
        match self.read_list(&bar, path, more, cap, None).await? {
            Listed::Over(total) => Ok(Capped::Over(total)),
            Listed::Read(list) => Ok(Capped::All(list.items)),
            Listed::NotModified => unreachable!("an unconditional request"),
        }
    }

    /// As [`Client::get_list_capped`], counting pages on `bar`.
    pub async fn get_list_capped_on(
        &self,
        bar: &Bar,
        path: &str,
        more: impl Fn(&[Value]) -> bool,
        cap: u64,
    ) -> anyhow::Result<Capped> {
        match self.read_list(bar, path, more, cap, None).await? {
            Listed::Over(total) => Ok(Capped::Over(total)),
            Listed::Read(list) => Ok(Capped::All(list.items)),
            Listed::NotModified => unreachable!("an unconditional request"),
        }
    }

    /// A list whose first page is asked for with `If-None-Match: etag` (when given): `None`
    /// when it answered 304, or every page (as [`Client::get_list`]) and the first page's
    /// `ETag`. Pages and items are counted on `bar`.
    pub async fn get_list_if(
        &self,
        bar: &Bar,
        path: &str,
        more: impl Fn(&[Value]) -> bool,
        etag: Option<&str>,
    ) -> anyhow::Result<Option<List>> {
        match self.read_list(bar, path, more, u64::MAX, etag).await? {
            Listed::Read(list) => Ok(Some(list)),
            Listed::NotModified => Ok(None),
            Listed::Over(_) => unreachable!("no cap"),
        }
    }

    /// As [`Client::get_list_if`] for one of many lists of a resource (a run's jobs, a
    /// deployment's statuses): counted on `bar`, no line of its own per page.
    pub async fn get_sublist_if(
        &self,
        bar: &Bar,
        path: &str,
        etag: Option<&str>,
    ) -> anyhow::Result<Option<List>> {
        let quiet = Bar {
            lines: false,
            ..bar.shadow()
        };
        let got = self.read_list(&quiet, path, |_| true, u64::MAX, etag).await;
        bar.pages
            .fetch_add(quiet.pages.load(Ordering::Relaxed), Ordering::Relaxed);
        bar.redraw(self);
        match got? {
            Listed::Read(list) => Ok(Some(list)),
            Listed::NotModified => Ok(None),
            Listed::Over(_) => unreachable!("no cap"),
        }
    }

    async fn read_list(
        &self,
        bar: &Bar,
        path: &str,
        more: impl Fn(&[Value]) -> bool,
        cap: u64,
        etag: Option<&str>,
    ) -> anyhow::Result<Listed> {
        let first = self.list_url(path);
        let mut url = Some(first.clone());
        let mut out = Vec::new();
        let mut pages = 0;
        let mut first_etag = None;
        while let Some(u) = url {
            // Only the first page is conditional: the others shift whenever it changes.
            let (page, tag) = match self
                .get_if(&u, if pages == 0 { etag } else { None })
                .await?
            {
                Fetched::NotModified => {
                    bar.not_modified(self);
                    return Ok(Listed::NotModified);
                }
                Fetched::Modified(page, tag) => (page, tag),
            };
            if pages == 0 {
                first_etag = tag;
                if let Some(total) = page.body.get("total_count").and_then(Value::as_u64) {
                    if total > cap {
                        self.progress.println(&format!(
                            "backfill: {}: {total} items, over the {cap} the API lists: splitting",
                            bar.what
                        ));
                        return Ok(Listed::Over(total));
                    }
                }
            }
            let items = list_items(page.body, &u)?;
            pages += 1;
            bar.page(self, pages, items.len());
            let go_on = more(&items);
            out.extend(items);
            url = if go_on { page.next } else { None };
        }
        Ok(Listed::Read(List {
            items: out,
            pages,
            url: first,
            etag: first_etag,
        }))
    }
}

/// The items of one page: a JSON array, or the array inside an object
/// (`{"total_count": n, "workflow_runs": [...]}`).
fn list_items(body: Value, url: &str) -> anyhow::Result<Vec<Value>> {
    Ok(match body {
        Value::Array(items) => items,
        Value::Object(mut m) => {
            match m.iter().find(|(_, v)| v.is_array()).map(|(k, _)| k.clone()) {
                Some(k) => match m.remove(&k) {
                    Some(Value::Array(items)) => items,
                    _ => unreachable!("checked to be an array"),
                },
                None => bail!("GET {url}: the answer holds no list"),
            }
        }
        _ => bail!("GET {url}: the answer is not a list"),
    })
}

/// One GET: the page and its `ETag`, or `304 Not Modified`.
pub enum Fetched {
    Modified(Page, Option<String>),
    NotModified,
}

/// A list read whole: its items, its pages, the URL of its first page and that page's `ETag`.
pub struct List {
    pub items: Vec<Value>,
    pub pages: u32,
    pub url: String,
    pub etag: Option<String>,
}

enum Listed {
    Read(List),
    NotModified,
    Over(u64),
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
    /// Conditional requests answered `304 Not Modified` (not counted against GitHub's rate
    /// limit): a list or object unchanged since a run that delivered it.
    pub not_modified: u64,
    /// Resources left alone: unchanged since the last run (a 304), or done by the interrupted
    /// run this one resumed.
    pub skipped_resources: Vec<String>,
    /// Scopes whose interrupted run this one resumed, and the items that run had delivered
    /// (not read or sent again).
    pub resumed: Vec<String>,
    pub resumed_items: u64,
}

impl Summary {
    /// Adds the answers `other` counted ([`deliver_all`]'s counts) to these.
    pub fn add_answers(&mut self, other: &Summary) {
        self.processed += other.processed;
        self.unchanged += other.unchanged;
        self.new_facts += other.new_facts;
        self.duplicate += other.duplicate;
        self.ignored += other.ignored;
        self.refused += other.refused;
    }

    pub fn deliveries(&self) -> u64 {
        self.processed + self.duplicate + self.ignored + self.refused
    }

    /// Deliveries whose facts the store held already: under the same delivery ID (duplicate)
    /// or another (a webhook brought them).
    pub fn known(&self) -> u64 {
        self.duplicate + self.processed - self.new_facts
    }

    /// Adds what the client did (requests, retries, 304s, waits) to the summary.
    pub fn add_client(&mut self, client: &Client) {
        self.requests = client.requests();
        self.retries = client.stats.retries.load(Ordering::Relaxed);
        self.not_modified = client.not_modified();
        self.waited_secs = client.waited_secs();
    }

    /// The summary lines printed at the end.
    pub fn lines(&self) -> String {
        let items: Vec<String> = self.items.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut out = format!(
            "backfill: items read: {}\nbackfill: deliveries {}: {} new ({} of them changed no span, {} brought facts the store did not hold), {} duplicate, {} ignored, {} refused\nbackfill: facts: {} deliveries brought new facts, {} only facts already known\nbackfill: API requests {} ({} retried, {} answered 304 Not Modified), {:.1} s waited for rate limits",
            items.join(", "),
            self.deliveries(),
            self.processed,
            self.unchanged,
            self.new_facts,
            self.duplicate,
            self.ignored,
            self.refused,
            self.new_facts,
            self.known(),
            self.requests,
            self.retries,
            self.not_modified,
            self.waited_secs
        );
        if !self.skipped_resources.is_empty() {
            out.push_str(&format!(
                "\nbackfill: unchanged since the last run: {}",
                self.skipped_resources.join(", ")
            ));
        }
        if !self.resumed.is_empty() {
            out.push_str(&format!(
                "\nbackfill: resumed the interrupted run of {} ({} items it had delivered skipped)",
                self.resumed.join(", "),
                self.resumed_items
            ));
        }
        out
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
                // A log line, not a print: the scheduled sync is quiet on stderr, and its
                // logs (CloudWatch in Lambda) are where an operator looks.
                tracing::warn!(
                    delivery = %d.file.display(),
                    status = %status,
                    answer = %text,
                    "backfill: a delivery was refused"
                );
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

// ---------------------------------------------------------------- progress

/// Where progress goes: a bar per resource on a terminal ([`indicatif`]), one line per page
/// and per resource when stderr is not a terminal (a log, CI), nothing when quiet (the scheduled
/// sync logs one summary per run instead).
pub struct Progress {
    mode: Mode,
}

enum Mode {
    Quiet,
    Lines,
    Bars(indicatif::MultiProgress),
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise; nothing when `quiet`.
    pub fn detect(quiet: bool) -> Self {
        use std::io::IsTerminal;
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr_with_hz(8),
            ))
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    pub fn quiet() -> Self {
        Progress { mode: Mode::Quiet }
    }

    /// A line of its own (above the bars on a terminal).
    pub fn println(&self, line: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{line}"),
            Mode::Bars(m) => {
                let _ = m.println(line);
            }
        }
    }

    /// The progress of one resource (`owner/name pull requests`): a bar of its own on a
    /// terminal. Requests, 304s and rate-limit waits are counted from now on.
    pub fn resource(&self, what: &str, client: &Client) -> Bar {
        let pb = match &self.mode {
            Mode::Bars(m) => {
                let pb = m.add(indicatif::ProgressBar::new_spinner());
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix:.bold} {wide_msg} [{elapsed}]",
                    )
                    .expect("a valid template"),
                );
                pb.set_prefix(what.to_string());
                pb.enable_steady_tick(Duration::from_millis(250));
                Some(pb)
            }
            _ => None,
        };
        Bar {
            what: what.to_string(),
            lines: matches!(self.mode, Mode::Lines),
            pb,
            items: AtomicU64::new(0),
            total: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            requests0: client.requests(),
            not_modified0: client.not_modified(),
            waited0: client.stats.waited_ms.load(Ordering::Relaxed),
        }
    }

    /// A bar that only prints page lines (a list read on its own, e.g. an organization's
    /// repositories).
    pub fn lines_only(&self, what: &str) -> Bar {
        Bar {
            what: what.to_string(),
            lines: !matches!(self.mode, Mode::Quiet),
            pb: None,
            items: AtomicU64::new(0),
            total: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            requests0: 0,
            not_modified0: 0,
            waited0: 0,
        }
    }
}

/// One resource's progress: items delivered (of how many), pages read, requests made (and how
/// many answered 304), time waited for rate limits.
pub struct Bar {
    pub what: String,
    lines: bool,
    pb: Option<indicatif::ProgressBar>,
    items: AtomicU64,
    total: AtomicU64,
    pages: AtomicU64,
    requests0: u64,
    not_modified0: u64,
    waited0: u64,
}

/// A resource's counts, as [`Bar::counts`] gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub items: u64,
    pub pages: u64,
    pub requests: u64,
    pub not_modified: u64,
    pub waited_secs: f64,
}

impl Bar {
    /// A bar counting apart (pages only), drawing nothing.
    fn shadow(&self) -> Bar {
        Bar {
            what: self.what.clone(),
            lines: self.lines,
            pb: None,
            items: AtomicU64::new(0),
            total: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            requests0: self.requests0,
            not_modified0: self.not_modified0,
            waited0: self.waited0,
        }
    }

    pub fn counts(&self, client: &Client) -> Counts {
        Counts {
            items: self.items.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            requests: client.requests().saturating_sub(self.requests0),
            not_modified: client.not_modified().saturating_sub(self.not_modified0),
            waited_secs: client
                .stats
                .waited_ms
                .load(Ordering::Relaxed)
                .saturating_sub(self.waited0) as f64
                / 1000.0,
        }
    }

    fn message(&self, client: &Client) -> String {
        let c = self.counts(client);
        let total = self.total.load(Ordering::Relaxed);
        let items = if total > 0 {
            format!("{}/{total} items", c.items)
        } else {
            format!("{} items", c.items)
        };
        format!(
            "{items}, {} pages, {} requests ({} not modified), {:.0} s waiting for rate limits",
            c.pages, c.requests, c.not_modified, c.waited_secs
        )
    }

    fn redraw(&self, client: &Client) {
        if let Some(pb) = &self.pb {
            pb.set_message(self.message(client));
        }
    }

    /// A page of `n` items read (the `page`-th of its list).
    pub fn page(&self, client: &Client, page: u32, n: usize) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        if self.lines {
            eprintln!("backfill: {}: page {page}, {n} item(s)", self.what);
        }
        self.redraw(client);
    }

    /// A conditional request answered 304.
    pub fn not_modified(&self, client: &Client) {
        self.redraw(client);
    }

    /// How many items the resource has to deliver in all.
    pub fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
        if let Some(pb) = &self.pb {
            pb.set_length(n);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix:.bold} [{bar:24}] {wide_msg} [{elapsed}]",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
    }

    /// `n` more items delivered.
    pub fn items(&self, client: &Client, n: u64) {
        self.items.fetch_add(n, Ordering::Relaxed);
        if let Some(pb) = &self.pb {
            pb.inc(n);
        }
        self.redraw(client);
    }

    /// The resource is done: the bar stays with its final counts; one line when not a terminal.
    pub fn finish(&self, client: &Client, note: &str) {
        let msg = self.message(client);
        if let Some(pb) = &self.pb {
            pb.finish_with_message(format!("{msg}{note}"));
        } else if self.lines {
            eprintln!("backfill: {}: {msg}{note}", self.what);
        }
    }
}

// ---------------------------------------------------------------- the window

/// The window an item's events must fall in: `--since`, and `--until` (none: now).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub since: Time,
    pub until: Option<Time>,
}

impl Window {
    pub fn contains(&self, t: Time) -> bool {
        t >= self.since && self.until.is_none_or(|u| t <= u)
    }

    pub fn not_after(&self, t: Time) -> bool {
        self.until.is_none_or(|u| t <= u)
    }

    /// Whether everything this window delivers, `other` delivered too: it starts no earlier and
    /// ends no later (an open end, `now`, covers every end: what changed since shows up as a
    /// change of the list).
    pub fn within(&self, other: &Window) -> bool {
        other.since <= self.since
            && match (other.until, self.until) {
                (None, _) => true,
                (Some(o), Some(u)) => u <= o,
                (Some(_), None) => false,
            }
    }
}

// ---------------------------------------------------------------- state in the store

/// A validator: the `ETag` of a list's first page (or of a single object) whose items were all
/// delivered for `window`. Sent back as `If-None-Match` by a later run over a window within it;
/// a `304` then means nothing of the list changed: nothing to read, nothing to deliver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validator {
    /// The URL it was answered for: it is sent for this very URL only.
    pub url: String,
    pub etag: String,
    pub since: Time,
    #[serde(default)]
    pub until: Option<Time>,
    /// A small answer kept whole (a repository object), used in place of a 304's empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The largest answer a validator keeps whole ([`Validator::body`]).
pub const VALIDATOR_BODY_MAX: usize = 16 * 1024;
/// How long validators and cursors stay in the store unless `ClientSettings`' caller says
/// otherwise: 30 days.
pub const STATE_TTL_SECS: i64 = 30 * 86_400;
/// Items updated less than this before an interrupted run started are read again by the run
/// that resumes it (the API's clock and ours may differ).
pub const RESUME_MARGIN: TimeDelta = TimeDelta::minutes(10);

impl Validator {
    pub fn new(url: &str, etag: String, window: &Window) -> Self {
        Validator {
            url: url.to_string(),
            etag,
            since: window.since,
            until: window.until,
            body: None,
        }
    }

    /// The validator to send for `url` in a run over `window`, if this one applies.
    pub fn applies(&self, url: &str, window: &Window) -> bool {
        self.url == url
            && window.within(&Window {
                since: self.since,
                until: self.until,
            })
    }
}

/// A backfill's run over one scope (a repository, a project, a service): its window, when it
/// started and whether it finished. Written when it starts, marked finished at its end; a run
/// that finds an unfinished one over a window covering its own resumes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub since: Time,
    #[serde(default)]
    pub until: Option<Time>,
    pub started: Time,
    pub finished: bool,
}

/// Where a run stands in one resource: everything done, or the key of the last item delivered
/// (items are delivered in ascending key order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceCursor {
    /// The run it belongs to ([`RunRecord::started`]).
    pub run: Time,
    pub done: bool,
    #[serde(default)]
    pub last: Option<String>,
}

/// Where a backfill keeps its own small records (validators and cursors), each under a
/// partition and sort key, with a time to live. The backfill writes no fact itself: hosts hand
/// it their store through this ([`crate::sync::StoreRecords`]).
#[async_trait::async_trait]
pub trait Records: Send + Sync {
    /// The record at (pk, sk), if live.
    async fn get(&self, pk: &str, sk: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Several records of one partition in one request, one slot per sort key, in order.
    async fn get_many(&self, pk: &str, sks: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::new();
        for sk in sks {
            out.push(self.get(pk, sk).await?);
        }
        Ok(out)
    }
    /// The live records of partition `pk` whose sort key starts with `prefix`: (sk, data).
    async fn query(&self, pk: &str, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>>;
    /// Writes (pk, sk, data) records, each living `ttl_secs`.
    async fn put(
        &self,
        records: Vec<(String, String, Vec<u8>)>,
        ttl_secs: i64,
    ) -> anyhow::Result<()>;
}

/// The partition of a backfill's run and cursors over one scope (lower-case) of a source:
/// `backfill#<source>#<scope>`, sort keys `run` and `r#<resource>`.
pub fn run_pk(source: &str, scope: &str) -> String {
    format!("backfill#{source}#{}", scope.to_ascii_lowercase())
}

/// The partition of a scope's validators: `etag#<source>#<scope>`, sort key the resource.
pub fn validator_pk(source: &str, scope: &str) -> String {
    format!("etag#{source}#{}", scope.to_ascii_lowercase())
}

/// What a backfill keeps, per source: validators for conditional requests and the cursors of
/// resumable runs (keys listed in [`crate::engine::keys`]' table). Without records (`--to`
/// without `--state-dir`) nothing is kept: every run reads everything.
#[derive(Clone)]
pub struct State<'a> {
    records: Option<&'a dyn Records>,
    pub source: &'static str,
    pub ttl_secs: i64,
    /// Runs write cursors and resume interrupted ones (`backfill`); the scheduled sync has a
    /// cursor of its own and only uses validators.
    pub resume: bool,
    /// `--fresh`: validators and cursors are written but not used (everything is read again).
    pub fresh: bool,
}

impl<'a> State<'a> {
    pub fn new(records: &'a dyn Records, source: &'static str) -> Self {
        State {
            records: Some(records),
            source,
            ttl_secs: STATE_TTL_SECS,
            resume: true,
            fresh: false,
        }
    }

    /// No records: no validators, no cursors.
    pub fn none(source: &'static str) -> Self {
        State {
            records: None,
            source,
            ttl_secs: STATE_TTL_SECS,
            resume: false,
            fresh: false,
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
    ) -> anyhow::Result<Option<T>> {
        let Some(records) = self.records else {
            return Ok(None);
        };
        Ok(records
            .get(pk, sk)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn put_all(&self, writes: Vec<(String, String, Vec<u8>)>) -> anyhow::Result<()> {
        let Some(records) = self.records else {
            return Ok(());
        };
        let mut writes = writes;
        while !writes.is_empty() {
            let rest = writes.split_off(writes.len().min(STATE_WRITES_PER_COMMIT));
            records.put(writes, self.ttl_secs).await?;
            writes = rest;
        }
        Ok(())
    }

    /// The validator kept for `resource` of `scope`, if it applies to `url` over `window`.
    pub async fn validator(
        &self,
        scope: &str,
        resource: &str,
        url: &str,
        window: &Window,
    ) -> anyhow::Result<Option<Validator>> {
        if self.fresh {
            return Ok(None);
        }
        let v: Option<Validator> = self
            .get(&validator_pk(self.source, scope), resource)
            .await?;
        Ok(v.filter(|v| v.applies(url, window)))
    }

    /// The validators kept for several resources of `scope` (one request), each if it applies
    /// to its URL over `window`: (resource, url) in, one slot each out.
    pub async fn validators(
        &self,
        scope: &str,
        wanted: &[(String, String)],
        window: &Window,
    ) -> anyhow::Result<Vec<Option<Validator>>> {
        let Some(records) = self.records.filter(|_| !self.fresh) else {
            return Ok(vec![None; wanted.len()]);
        };
        let sks: Vec<String> = wanted.iter().map(|(r, _)| r.clone()).collect();
        let got = records
            .get_many(&validator_pk(self.source, scope), &sks)
            .await?;
        Ok(got
            .into_iter()
            .zip(wanted)
            .map(|(data, (_, url))| {
                data.and_then(|b| serde_json::from_slice::<Validator>(&b).ok())
                    .filter(|v| v.applies(url, window))
            })
            .collect())
    }

    /// Keeps validators (resource, validator) of `scope`, once what they validate is delivered.
    pub async fn save_validators(
        &self,
        scope: &str,
        validators: Vec<(String, Validator)>,
    ) -> anyhow::Result<()> {
        let pk = validator_pk(self.source, scope);
        let mut writes = Vec::new();
        for (resource, v) in validators {
            writes.push((pk.clone(), resource, serde_json::to_vec(&v)?));
        }
        self.put_all(writes).await
    }

    /// Starts the run of `scope` over `window` at `now`, or resumes the unfinished one whose
    /// window covers it (with that run's window, so the result is the one it would have given).
    pub async fn begin(&self, scope: &str, window: Window, now: Time) -> anyhow::Result<Run> {
        let fresh = Run {
            scope: scope.to_string(),
            started: now,
            window,
            resumed: false,
            cursors: BTreeMap::new(),
        };
        let Some(records) = self.records.filter(|_| self.resume) else {
            return Ok(fresh);
        };
        let pk = run_pk(self.source, scope);
        if let Some(r) = self.get::<RunRecord>(&pk, "run").await? {
            let was = Window {
                since: r.since,
                until: r.until,
            };
            if !r.finished && !self.fresh && window.within(&was) {
                let mut cursors = BTreeMap::new();
                for (sk, data) in records.query(&pk, "r#").await? {
                    if let Ok(c) = serde_json::from_slice::<ResourceCursor>(&data) {
                        if c.run == r.started {
                            cursors.insert(sk["r#".len()..].to_string(), c);
                        }
                    }
                }
                return Ok(Run {
                    scope: scope.to_string(),
                    started: r.started,
                    window: was,
                    resumed: true,
                    cursors,
                });
            }
        }
        let record = RunRecord {
            since: window.since,
            until: window.until,
            started: now,
            finished: false,
        };
        self.put_all(vec![(pk, "run".into(), serde_json::to_vec(&record)?)])
            .await?;
        Ok(fresh)
    }

    /// Where `run` stands in `resource` now.
    pub async fn save_cursor(
        &self,
        run: &mut Run,
        resource: &str,
        done: bool,
        last: Option<String>,
    ) -> anyhow::Result<()> {
        let c = ResourceCursor {
            run: run.started,
            done,
            last,
        };
        if self.resume {
            let pk = run_pk(self.source, &run.scope);
            self.put_all(vec![(pk, format!("r#{resource}"), serde_json::to_vec(&c)?)])
                .await?;
        }
        run.cursors.insert(resource.to_string(), c);
        Ok(())
    }

    /// The run went through every resource: the next one starts afresh.
    pub async fn finish(&self, run: &Run) -> anyhow::Result<()> {
        if !self.resume {
            return Ok(());
        }
        let record = RunRecord {
            since: run.window.since,
            until: run.window.until,
            started: run.started,
            finished: true,
        };
        let pk = run_pk(self.source, &run.scope);
        self.put_all(vec![(pk, "run".into(), serde_json::to_vec(&record)?)])
            .await
    }
}

/// Writes of one commit of backfill state (a page's validators: DynamoDB takes 100 in one
/// transaction).
const STATE_WRITES_PER_COMMIT: usize = 100;

/// One run over a scope: its window, its start (its identity) and where each resource stands.
#[derive(Clone, Debug)]
pub struct Run {
    pub scope: String,
    pub started: Time,
    pub window: Window,
    /// It continues an interrupted run.
    pub resumed: bool,
    pub cursors: BTreeMap<String, ResourceCursor>,
}

impl Run {
    /// Whether `resource` was done by the run this one resumes.
    pub fn done(&self, resource: &str) -> bool {
        self.cursors.get(resource).is_some_and(|c| c.done)
    }

    /// Whether the item of `key` (last changed at `changed`, when the API says) was delivered
    /// by the run this one resumes: at or before the resource's cursor, and unchanged since
    /// that run started.
    pub fn delivered(&self, resource: &str, key: &str, changed: Option<Time>) -> bool {
        let Some(c) = self.cursors.get(resource) else {
            return false;
        };
        let before = c.done || c.last.as_deref().is_some_and(|l| key <= l);
        before && changed.is_none_or(|t| t <= self.started - RESUME_MARGIN)
    }
}

/// An item's key for cursors: its time (fixed-width RFC 3339) then its ID, zero-padded, so that
/// string order is (time, ID) order.
pub fn item_key(at: Time, id: u64) -> String {
    format!("{}#{id:020}", time_key(at))
}

/// A time as a key: fixed width, so that string order is time order.
pub fn time_key(at: Time) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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

    fn t(s: &str) -> Time {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_within_another() {
        let w = |since: &str, until: Option<&str>| Window {
            since: t(since),
            until: until.map(t),
        };
        let open = w("2024-01-01T00:00:00Z", None);
        assert!(open.within(&open));
        assert!(
            w("2024-02-01T00:00:00Z", None).within(&open),
            "a later start"
        );
        assert!(
            w("2024-02-01T00:00:00Z", Some("2024-03-01T00:00:00Z")).within(&open),
            "an end before now"
        );
        assert!(
            !w("2023-12-01T00:00:00Z", None).within(&open),
            "an earlier start"
        );
        let closed = w("2024-01-01T00:00:00Z", Some("2024-03-01T00:00:00Z"));
        assert!(!open.within(&closed), "now is after its end");
        assert!(!w("2024-01-01T00:00:00Z", Some("2024-04-01T00:00:00Z")).within(&closed));
    }

    #[test]
    fn a_validator_applies_to_its_url_over_a_window_within_its_own() {
        let w = Window {
            since: t("2024-01-01T00:00:00Z"),
            until: None,
        };
        let v = Validator::new("https://api/x?per_page=100", "W/\"1\"".into(), &w);
        assert!(v.applies("https://api/x?per_page=100", &w));
        assert!(!v.applies("https://api/x?per_page=50", &w), "another URL");
        let earlier = Window {
            since: t("2023-01-01T00:00:00Z"),
            until: None,
        };
        assert!(!v.applies("https://api/x?per_page=100", &earlier));
    }

    #[test]
    fn a_resumed_run_skips_what_it_delivered_unless_it_changed_since() {
        let started = t("2024-05-01T12:00:00Z");
        let mut run = Run {
            scope: "o/r".into(),
            started,
            window: Window {
                since: t("2024-01-01T00:00:00Z"),
                until: None,
            },
            resumed: true,
            cursors: BTreeMap::new(),
        };
        let k1 = item_key(t("2024-02-01T00:00:00Z"), 7);
        let k2 = item_key(t("2024-02-01T00:00:00Z"), 12);
        let k3 = item_key(t("2024-03-01T00:00:00Z"), 1);
        assert!(k1 < k2 && k2 < k3, "time first, then ID, numerically");
        run.cursors.insert(
            "pull_requests".into(),
            ResourceCursor {
                run: started,
                done: false,
                last: Some(k2.clone()),
            },
        );
        let old = Some(t("2024-04-01T00:00:00Z"));
        assert!(run.delivered("pull_requests", &k1, old));
        assert!(run.delivered("pull_requests", &k2, old));
        assert!(run.delivered("pull_requests", &k2, None));
        assert!(
            !run.delivered("pull_requests", &k3, old),
            "after the cursor"
        );
        assert!(
            !run.delivered("pull_requests", &k1, Some(t("2024-05-01T11:55:00Z"))),
            "changed since the run started (within the margin)"
        );
        assert!(!run.delivered("issues", &k1, old), "no cursor");
        assert!(!run.done("pull_requests"));
    }

    #[test]
    fn progress_bars_draw_without_a_terminal_too() {
        let client =
            Client::new(ClientSettings::new("http://127.0.0.1:9", "t".into(), "T")).unwrap();
        let progress = Progress {
            mode: Mode::Bars(indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::hidden(),
            )),
        };
        let bar = progress.resource("o/r pull requests", &client);
        bar.page(&client, 1, 100);
        bar.set_total(100);
        bar.items(&client, 40);
        progress.println("a line");
        bar.finish(&client, " (done)");
        let c = bar.counts(&client);
        assert_eq!((c.items, c.pages, c.requests), (40, 1, 0));
        assert!(bar
            .message(&client)
            .starts_with("40/100 items, 1 pages, 0 requests"));
    }
}
