//! The hosts' side of the scheduled sync ([`crate::sync`]): a [`Syncer`] delivers what a sync
//! reads to the router in process (over the very pipeline the host serves), and runs either on
//! `serve`'s timer ([`Syncer::spawn_timer`]) or on the Lambda `SyncSchedule` rule's event.

use crate::backfill::Sink;
use crate::config::Config;
use crate::http::{router, AppState};
use crate::pipeline::Pipeline;
use crate::replay::Recorded;
use crate::sync::{self, Limits, Report, SyncSettings};
use axum::body::Body;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The router in process as a sync's sink: each delivery signed with the configured secret when
/// there is one (unsigned ones are accepted by this in-process router only, never by the served
/// one), as `replay` and `backfill` do.
pub struct RouterSink {
    app: Router,
    config: Arc<Config>,
}

impl RouterSink {
    /// A router of its own over `pipeline`. Its configuration shares the served one's secrets.
    pub fn new(pipeline: Arc<Pipeline>, config: &Config) -> Self {
        let mut local = config.clone();
        local.allow_unsigned = true;
        let config = Arc::new(local);
        let app = router(AppState {
            pipeline,
            config: config.clone(),
            metrics_endpoint: false,
        });
        RouterSink { app, config }
    }
}

#[async_trait::async_trait]
impl Sink for RouterSink {
    async fn deliver(&self, rec: &Recorded) -> anyhow::Result<(u16, String)> {
        let mut req = axum::http::Request::post(format!("/webhooks/{}", rec.source));
        let mut has_type = false;
        for (k, v) in &rec.headers {
            has_type |= k.eq_ignore_ascii_case("content-type");
            req = req.header(k, v);
        }
        if !has_type {
            req = req.header("content-type", "application/json");
        }
        if let Some(src) = crate::sources::by_name(&rec.source) {
            for (k, v) in src.sign(&rec.body, &self.config) {
                if !rec.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(&k)) {
                    req = req.header(k, v);
                }
            }
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(rec.body.clone()))?)
            .await?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// Runs syncs for a host.
pub struct Syncer {
    pub settings: SyncSettings,
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    sink: RouterSink,
}

impl Syncer {
    pub fn new(settings: SyncSettings, pipeline: Arc<Pipeline>, config: Arc<Config>) -> Self {
        let sink = RouterSink::new(pipeline.clone(), &config);
        Syncer {
            settings,
            config,
            pipeline,
            sink,
        }
    }

    /// One run now, within `limits`.
    pub async fn run(&self, limits: Limits) -> anyhow::Result<Report> {
        self.run_at(chrono::Utc::now(), limits).await
    }

    /// One run as if it were `now` (tests move the clock; the cursor stores `now`).
    pub async fn run_at(&self, now: crate::model::Time, limits: Limits) -> anyhow::Result<Report> {
        // The credentials in force now (read per target): a rotated secret is picked up at the
        // next run.
        let report = sync::run(
            self.pipeline.engine.store.as_ref(),
            &self.sink,
            &self.settings,
            &self.config,
            now,
            limits,
            self.config.ttl_open_secs,
        )
        .await?;
        report.log();
        Ok(report)
    }

    /// `serve`: a sync at start, then every `VALUESTREAM_SYNC_SECS`, in a task of its own (the
    /// requests never wait for it). A run never overlaps the next: it stops at the interval.
    pub fn spawn_timer(self: Arc<Self>) {
        let every = self.settings.every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let limits = self
                    .settings
                    .limits(every.saturating_sub(Duration::from_secs(1)));
                if let Err(e) = self.run(limits).await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "sync failed; retrying at the next tick"
                    );
                }
            }
        });
    }
}
