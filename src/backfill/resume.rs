//! One backfill run over one scope (a GitLab project, a PagerDuty service, a Jira project),
//! resource by resource, resumable as GitHub's is ([`super::github`] keeps its own, older copy
//! of these steps): the run is begun (or the interrupted one over a window covering it
//! resumed, [`State::begin`]), each resource's items are delivered in key order a chunk at a
//! time, and after each accepted chunk its cursor moves; once a delivery is refused no cursor
//! or validator moves past it. Where the vendor answers conditional requests, the validator of
//! a list read whole in one page is kept once its items are delivered ([`Scoped::done`]).
//! [`Collect`] is the sink of the scheduled sync's readers, which deliver what they read
//! themselves.

use super::{deliver_all, Bar, Client, List, Run, Sink, State, Summary, Validator, Window};
use crate::model::Time;
use crate::replay::Recorded;
use std::sync::{Arc, Mutex};

/// One scope's run: the client, where validators and cursors are kept, where deliveries go.
pub struct Scoped<'a> {
    pub client: &'a Arc<Client>,
    pub state: &'a State<'a>,
    pub sink: &'a dyn Sink,
    pub scope: String,
    pub run: Run,
    /// Refused deliveries counted before this run: one more and nothing moves.
    refused_before: u64,
}

impl<'a> Scoped<'a> {
    /// Begins the run of `scope` over `window`, or resumes the interrupted one (said on a line
    /// of its own and in the summary).
    pub async fn begin(
        client: &'a Arc<Client>,
        state: &'a State<'a>,
        sink: &'a dyn Sink,
        scope: &str,
        window: Window,
        summary: &mut Summary,
    ) -> anyhow::Result<Scoped<'a>> {
        let run = state.begin(scope, window, chrono::Utc::now()).await?;
        if run.resumed {
            let secs = |t: Time| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            client.progress.println(&format!(
                "backfill: {scope}: resuming the run started at {} (since {})",
                secs(run.started),
                secs(run.window.since)
            ));
            summary.resumed.push(scope.to_string());
        }
        Ok(Scoped {
            client,
            state,
            sink,
            scope: scope.to_string(),
            run,
            refused_before: summary.refused,
        })
    }

    /// The run's window: the interrupted run's when this one resumes it.
    pub fn window(&self) -> Window {
        self.run.window
    }

    /// `<scope> <what>`, as progress names a resource.
    pub fn label(&self, what: &str) -> String {
        format!("{} {what}", self.scope)
    }

    /// Items per chunk: a page's worth.
    pub fn chunk(&self) -> usize {
        self.client.settings.page_size.max(1) as usize
    }

    /// A delivery of this run was refused.
    pub fn refused(&self, summary: &Summary) -> bool {
        summary.refused > self.refused_before
    }

    /// Skips `resource` when the run this one resumes had done it.
    pub fn skip_done(&self, resource: &str, summary: &mut Summary) -> bool {
        let done = self.run.done(resource);
        if done {
            summary.skipped_resources.push(format!(
                "{} {resource} (done before the interruption)",
                self.scope
            ));
        }
        done
    }

    /// `resource` answered 304: unchanged since the run that delivered it.
    pub fn unchanged(&self, resource: &str, summary: &mut Summary) {
        summary
            .skipped_resources
            .push(format!("{} {resource}", self.scope));
    }

    /// The `ETag` kept for the list at `path` of `resource`, if one applies to this window.
    pub async fn etag(&self, resource: &str, path: &str) -> anyhow::Result<Option<String>> {
        let url = self.client.list_url(path);
        Ok(self
            .state
            .validator(&self.scope, resource, &url, &self.run.window)
            .await?
            .map(|v| v.etag))
    }

    /// The items of `resource` (key, when last changed, item) still to deliver, in key order:
    /// the ones the run this one resumes delivered are left out and counted.
    pub fn pending<T>(
        &self,
        resource: &str,
        mut items: Vec<(String, Option<Time>, T)>,
        summary: &mut Summary,
    ) -> Vec<(String, T)> {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let before = items.len();
        let out: Vec<(String, T)> = items
            .into_iter()
            .filter(|(k, changed, _)| !self.run.delivered(resource, k, *changed))
            .map(|(k, _, t)| (k, t))
            .collect();
        summary.resumed_items += (before - out.len()) as u64;
        out
    }

    /// Delivers one chunk of `resource` (`n` items, the last of key `last`), then moves the
    /// resource's cursor to `last`, unless a delivery of the run was refused.
    pub async fn deliver(
        &mut self,
        resource: &str,
        bar: &Bar,
        deliveries: &[Recorded],
        last: Option<String>,
        n: u64,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        deliver_all(self.sink, deliveries, summary).await?;
        bar.items(self.client, n);
        if self.refused(summary) || last.is_none() {
            return Ok(());
        }
        self.state
            .save_cursor(&mut self.run, resource, false, last)
            .await
    }

    /// `resource` is done: its cursor says so and the validator of its list (`url`, `etag`),
    /// when given, is kept; nothing when a delivery of the run was refused.
    pub async fn done(
        &mut self,
        resource: &str,
        bar: &Bar,
        validator: Option<(String, String)>,
        note: &str,
        summary: &Summary,
    ) -> anyhow::Result<()> {
        bar.finish(self.client, note);
        if self.refused(summary) {
            return Ok(());
        }
        if let Some((url, etag)) = validator {
            let v = Validator::new(&url, etag, &self.run.window);
            self.state
                .save_validators(&self.scope, vec![(resource.to_string(), v)])
                .await?;
        }
        self.state
            .save_cursor(&mut self.run, resource, true, None)
            .await
    }

    /// The run went through every resource with no delivery refused: the next starts afresh.
    pub async fn finish(&self, summary: &Summary) -> anyhow::Result<()> {
        if self.refused(summary) {
            return Ok(());
        }
        self.state.finish(&self.run).await
    }
}

/// The validator to keep for a list: its URL and `ETag`, when it was read whole in one page
/// (a 304 on its first page then says the whole list is unchanged; a longer list's later pages
/// may change while its first stays the same).
pub fn one_page(list: &List) -> Option<(String, String)> {
    match (&list.etag, list.pages) {
        (Some(etag), 1) => Some((list.url.clone(), etag.clone())),
        _ => None,
    }
}

/// A sink that keeps the deliveries it is handed, each answered `processed`: how the scheduled
/// sync reads a source's history before delivering it itself.
#[derive(Default)]
pub struct Collect(Mutex<Vec<Recorded>>);

impl Collect {
    pub fn take(self) -> Vec<Recorded> {
        self.0.into_inner().expect("not poisoned")
    }
}

#[async_trait::async_trait]
impl Sink for Collect {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        self.0.lock().expect("not poisoned").push(d.clone());
        Ok((200, r#"{"status":"processed"}"#.to_string()))
    }
}
