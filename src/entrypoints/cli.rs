//! The command line: `serve` (the router on a local port), `replay` (recorded deliveries through
//! the same router, in process or to a running instance), `correlations` (what slow and failing
//! work has in common, from a running instance or a local store), `create-table` (DynamoDB) and
//! `grafana install` (the dashboards into Grafana).

use super::open_store;
use crate::config::Config;
use crate::export::{self, console};
use crate::http::{router, Answer, AppState};
use crate::model::FinishedSpan;
use crate::pipeline::{self, Pipeline};
use crate::replay;
use crate::sources;
use anyhow::Context;
use axum::body::Body;
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tower::ServiceExt;

static ENV_HELP: LazyLock<String> = LazyLock::new(|| {
    let mut s = String::from("Environment variables:\n");
    for (name, what) in crate::sources::registry::settings() {
        s.push_str(&format!("  {name}\n      {what}\n"));
    }
    s.push_str("\nIn AWS Lambda (AWS_LAMBDA_RUNTIME_API set) the binary serves API Gateway HTTP API requests instead.");
    s
});

#[derive(Parser)]
#[command(name = "valuestream", version, about = "Software-delivery webhooks in, OpenTelemetry traces and DORA metrics out.", after_help = ENV_HELP.as_str())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The registered sources as JSON (name, route, secret variable); with --sign, the headers
    /// each source signs the bodies of stdin's `[{"source", "secret", "body"}]` with. For
    /// scripts/make-events.py.
    #[command(hide = true)]
    Sources {
        #[arg(long)]
        sign: bool,
    },
    /// Serve the webhook routes on a local port (POST /webhooks/{source}, GET /healthz, GET /metrics).
    ///
    /// State lives in the embedded store under --data-dir (it survives a restart), or in DynamoDB
    /// when VALUESTREAM_TABLE is set. Without OTEL_EXPORTER_OTLP_ENDPOINT, each finished span is
    /// printed as one line on stdout.
    #[command(after_help = ENV_HELP.as_str())]
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
        /// Directory of the embedded store.
        #[arg(long, default_value = ".valuestream")]
        data_dir: PathBuf,
    },
    /// Feed recorded deliveries through the pipeline: the README demo and the backfill tool.
    ///
    /// Reads recorded deliveries ({"source", "headers", "body"}) and API Gateway HTTP API v2 event
    /// files (events/); a directory replays in file-name order. Deliveries without a signature
    /// are signed with the configured secret. In process (the default) the deliveries go through
    /// the same router as `serve`, and the resulting traces are printed at the end.
    #[command(after_help = ENV_HELP.as_str())]
    Replay {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Post to a running instance (e.g. http://127.0.0.1:3000) instead of processing in process.
        #[arg(long)]
        to: Option<String>,
        /// Keep in-process state in this directory (default: memory, fresh each run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// What slow and failing work has in common: the lift of every attribute value (team,
    /// language, deployment type, any attribute) among the slow or failed items of one kind.
    ///
    /// Asks a running instance (--url, its GET /correlations) or reads the stored metric state
    /// itself (--data-dir, or DynamoDB when VALUESTREAM_TABLE is set). Prints a table.
    #[command(after_help = ENV_HELP.as_str())]
    Correlations {
        /// issue, change, run or deployment.
        #[arg(long)]
        kind: String,
        /// duration (slow ones), failure (failed runs and deployments) or rework (rework
        /// production deployments).
        #[arg(long, default_value = "duration")]
        by: String,
        /// Slow = longer than this many seconds (raised to the next histogram bucket bound);
        /// default: the kind's 90th-percentile bucket bound.
        #[arg(long)]
        threshold_s: Option<String>,
        /// A running instance, e.g. http://127.0.0.1:3000.
        #[arg(long, conflicts_with = "data_dir")]
        url: Option<String>,
        /// Directory of the embedded store (default .valuestream, as serve).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Create the DynamoDB table (VALUESTREAM_TABLE) with TTL enabled, for local and self-hosted use.
    #[command(after_help = ENV_HELP.as_str())]
    CreateTable {
        /// Table name (default: VALUESTREAM_TABLE).
        #[arg(long)]
        table: Option<String>,
    },
    /// Read history from a sender's API and feed it through the pipeline as the webhook
    /// deliveries the sender would have sent (`backfill github`, `backfill pagerduty`,
    /// `backfill jira`).
    ///
    /// Writes to the embedded store under --data-dir (or DynamoDB when VALUESTREAM_TABLE is set),
    /// or posts to a running instance with --to. A second backfill adds nothing.
    #[command(after_help = ENV_HELP.as_str())]
    Backfill {
        #[command(subcommand)]
        source: BackfillSource,
    },
    /// Put the Prometheus data source and the dashboards into a Grafana (`grafana install`).
    #[command(subcommand)]
    Grafana(crate::grafana::cli::GrafanaCommand),
}

/// One sub-command per sender `backfill` reads.
#[derive(Subcommand)]
enum BackfillSource {
    /// GitHub: issues, pull requests and their steps (reviews, draft, ready for review, review
    /// requests), default-branch commits, workflow runs and jobs, deployments and their
    /// statuses. The token is read from GITHUB_TOKEN.
    #[command(after_help = ENV_HELP.as_str())]
    Github {
        /// OWNER/NAME; repeat for more repositories.
        #[arg(long = "repo", required_unless_present = "orgs")]
        repos: Vec<String>,
        /// Every repository of this organization (archived ones left out); repeatable.
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// Start of the window: RFC 3339, a date (YYYY-MM-DD) or a duration back from now (90d, 12w).
        #[arg(long)]
        since: String,
        /// End of the window (default: now).
        #[arg(long)]
        until: Option<String>,
        /// The API; GitHub Enterprise Server: https://HOST/api/v3.
        #[arg(long, default_value = crate::backfill::github::DEFAULT_API_URL)]
        api_url: String,
        /// Directory of the embedded store (as serve).
        #[arg(long, default_value = ".valuestream", conflicts_with = "to")]
        data_dir: PathBuf,
        /// Post to a running instance (e.g. http://127.0.0.1:3000) instead of writing the store.
        #[arg(long)]
        to: Option<String>,
        /// Items per page (per_page, at most 100).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// API requests in flight at most.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// With --to: keep the validators (ETags) and the resumable cursors in an embedded
        /// store of their own here (without --to they live in the store written to).
        #[arg(long, requires = "to")]
        state_dir: Option<PathBuf>,
        /// Read everything again: no conditional requests, no resuming of an interrupted run
        /// (validators and cursors are still written for the next run).
        #[arg(long)]
        fresh: bool,
        /// Do not read pull requests' steps (reviews, draft, ready for review, review
        /// requests; GraphQL, one request per 50 pull requests): no pickup or review stage for
        /// the pull requests read. Also spelled --no-reviews.
        #[arg(long, alias = "no-reviews")]
        no_steps: bool,
        /// The GraphQL API the steps are read from (default: https://api.github.com/graphql;
        /// with --api-url https://HOST/api/v3, https://HOST/api/graphql; otherwise
        /// {api-url}/graphql).
        #[arg(long)]
        graphql_url: Option<String>,
    },
    /// GitLab: issues, merge requests, default-branch commits, pipelines and jobs, deployments.
    /// The token (read_api scope) is read from GITLAB_TOKEN.
    #[command(after_help = ENV_HELP.as_str())]
    Gitlab {
        /// GROUP/NAME (or GROUP/SUBGROUP/NAME); repeat for more projects.
        #[arg(long = "project", required_unless_present = "groups")]
        projects: Vec<String>,
        /// Every project of this group and its subgroups (archived ones left out); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Start of the window: RFC 3339, a date (YYYY-MM-DD) or a duration back from now (90d, 12w).
        #[arg(long)]
        since: String,
        /// End of the window (default: now).
        #[arg(long)]
        until: Option<String>,
        /// The API; self-managed GitLab: https://HOST/api/v4.
        #[arg(long, default_value = crate::backfill::gitlab::DEFAULT_API_URL)]
        api_url: String,
        /// Directory of the embedded store (as serve).
        #[arg(long, default_value = ".valuestream", conflicts_with = "to")]
        data_dir: PathBuf,
        /// Post to a running instance (e.g. http://127.0.0.1:3000) instead of writing the store.
        #[arg(long)]
        to: Option<String>,
        /// Items per page (per_page, at most 100).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// API requests in flight at most.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// With --to: keep the resumable cursors and the validators (ETags) in an embedded store of their own
        /// here (without --to they live in the store written to).
        #[arg(long, requires = "to")]
        state_dir: Option<PathBuf>,
        /// Read everything again: no resuming of an interrupted run, no conditional requests (cursors are
        /// still written for the next run).
        #[arg(long)]
        fresh: bool,
    },
    /// PagerDuty: the incidents of services, with their trigger, acknowledge and resolve log
    /// entries. The API key is read from PAGERDUTY_TOKEN.
    #[command(after_help = ENV_HELP.as_str())]
    Pagerduty {
        /// A service ID (PIJ90N7); repeat for more services.
        #[arg(long = "service", required = true)]
        services: Vec<String>,
        #[command(flatten)]
        common: BackfillArgs,
        /// The API.
        #[arg(long, default_value = crate::backfill::pagerduty::DEFAULT_API_URL)]
        api_url: String,
    },
    /// Jira Cloud: the issues of projects, with their changelog (status transitions). The
    /// credentials are read from JIRA_EMAIL and JIRA_TOKEN.
    #[command(after_help = ENV_HELP.as_str())]
    Jira {
        /// A project key (SHOP); repeat for more projects.
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
        #[command(flatten)]
        common: BackfillArgs,
        /// The site, e.g. https://acme.atlassian.net.
        #[arg(long)]
        api_url: String,
    },
}

/// What `backfill pagerduty` and `backfill jira` take besides their items and API.
#[derive(clap::Args)]
struct BackfillArgs {
    /// Start of the window: RFC 3339, a date (YYYY-MM-DD) or a duration back from now (90d, 12w).
    #[arg(long)]
    since: String,
    /// End of the window (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Directory of the embedded store (as serve).
    #[arg(long, default_value = ".valuestream", conflicts_with = "to")]
    data_dir: PathBuf,
    /// Post to a running instance (e.g. http://127.0.0.1:3000) instead of writing the store.
    #[arg(long)]
    to: Option<String>,
    /// Items per page (at most 100).
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// API requests in flight at most.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// With --to: keep the resumable cursors in an embedded store of their own
    /// here (without --to they live in the store written to).
    #[arg(long, requires = "to")]
    state_dir: Option<PathBuf>,
    /// Read everything again: no resuming of an interrupted run (cursors are
    /// still written for the next run).
    #[arg(long)]
    fresh: bool,
}

pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { addr, data_dir } => serve(addr, data_dir).await,
        Command::Replay {
            paths,
            to,
            data_dir,
        } => replay_cmd(paths, to, data_dir).await,
        Command::Correlations {
            kind,
            by,
            threshold_s,
            url,
            data_dir,
            json,
        } => correlations_cmd(kind, by, threshold_s, url, data_dir, json).await,
        Command::CreateTable { table } => {
            super::init_logging(false);
            let config = Config::from_env()?;
            let table = table
                .or(config.table)
                .context("name the table with --table or VALUESTREAM_TABLE")?;
            let timeout = Duration::from_millis(config.dynamodb_timeout_ms);
            crate::store::dynamodb::create_table(&table, timeout).await?;
            println!("table {table} is ready (TTL on attribute ttl)");
            Ok(())
        }
        Command::Grafana(cmd) => crate::grafana::cli::run(cmd).await,
        Command::Backfill { source } => backfill_cmd(source).await,
        Command::Sources { sign } => sources_cmd(sign),
    }
}

/// `valuestream sources [--sign]` (hidden): the registry as JSON, or signed headers.
fn sources_cmd(sign: bool) -> anyhow::Result<()> {
    use crate::sources::registry;
    let out = if sign {
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
        registry::sign_requests(&serde_json::from_str(&input)?).map_err(anyhow::Error::msg)?
    } else {
        registry::describe()
    };
    println!("{out}");
    Ok(())
}

async fn backfill_cmd(source: BackfillSource) -> anyhow::Result<()> {
    super::init_logging(false);
    match source {
        BackfillSource::Pagerduty { .. } | BackfillSource::Jira { .. } => {
            backfill_read_then_deliver(source).await
        }
        BackfillSource::Github { .. } => backfill_github(source).await,
        BackfillSource::Gitlab { .. } => backfill_gitlab(source).await,
    }
}

/// `--since` and `--until` read against now and checked, and `--page-size` checked: before
/// anything is opened or written.
fn backfill_window(
    since: &str,
    until: Option<&str>,
    page_size: u32,
) -> anyhow::Result<(crate::model::Time, Option<crate::model::Time>)> {
    use crate::backfill::parse_time;
    let now = chrono::Utc::now();
    let since = parse_time(since, now).context("--since")?;
    let until = until
        .map(|u| parse_time(u, now))
        .transpose()
        .context("--until")?;
    anyhow::ensure!(
        until.is_none_or(|u| u > since),
        "--until must be after --since"
    );
    anyhow::ensure!(
        (1..=100).contains(&page_size),
        "--page-size is from 1 to 100"
    );
    Ok((since, until))
}

/// Where a backfill delivers: a running instance (`--to`), or a pipeline of its own over the
/// store of `--data-dir` (DynamoDB with `VALUESTREAM_TABLE`).
async fn backfill_target(
    to: Option<String>,
    config: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<Target> {
    Ok(match to {
        Some(base) => Target::Remote(base, reqwest::Client::new()),
        None => {
            let (app, pipeline) = local_app(config, Some(data_dir)).await?;
            Target::Local(app, pipeline)
        }
    })
}

/// The end of a backfill: what it delivered in process settled, the summary printed; refused
/// deliveries fail the command.
async fn backfill_finish(
    target: &Target,
    summary: &crate::backfill::Summary,
) -> anyhow::Result<()> {
    if let Target::Local(_, pipeline) = target {
        let drained = pipeline.drain_all().await?;
        eprintln!("backfill: {} span(s) settled", drained.settled.len());
    }
    println!("{}", summary.lines());
    anyhow::ensure!(
        summary.refused == 0,
        "{} deliveries were refused",
        summary.refused
    );
    Ok(())
}

/// `backfill github`: the token tried first, then the validators and cursors kept in the store
/// written to (with `--to`, in `--state-dir`'s).
async fn backfill_github(source: BackfillSource) -> anyhow::Result<()> {
    use crate::backfill::{self, github, Client, ClientSettings};
    let BackfillSource::Github {
        repos,
        orgs,
        since,
        until,
        api_url,
        data_dir,
        to,
        page_size,
        concurrency,
        state_dir,
        fresh,
        no_steps,
        graphql_url,
    } = source
    else {
        unreachable!("backfill_cmd hands github here")
    };
    let (since, until) = backfill_window(&since, until.as_deref(), page_size)?;
    let token = github::token_from_env()?;
    let config = Config::from_env()?;
    let mut settings = ClientSettings::new(&api_url, token, github::TOKEN_VAR);
    settings.page_size = page_size;
    settings.concurrency = concurrency.max(1);
    let client = Client::new(settings)?;
    let mut opts = github::Options::new(repos, since, until);
    opts.orgs = orgs;
    opts.reviews = !no_steps;
    opts.graphql_url = graphql_url;
    // The token is tried before the store is opened: a refused one writes nothing.
    client.get(&client.url("/rate_limit")).await.or_else(|e| {
        // An Enterprise Server with rate limiting off answers 404 here.
        if e.to_string().contains("answered 404") {
            Ok(backfill::Page {
                body: serde_json::Value::Null,
                next: None,
            })
        } else {
            Err(e)
        }
    })?;
    let target = backfill_target(to, &config, &data_dir).await?;
    let sink = Signed {
        target: &target,
        config: &config,
    };
    // Validators and cursors: in the store written to, or with --to in --state-dir's.
    let state_store: Option<Arc<dyn crate::store::Store>> = match (&target, state_dir) {
        (Target::Local(_, pipeline), _) => Some(pipeline.engine.store.clone()),
        (Target::Remote(..), Some(dir)) => Some(Arc::new(
            crate::store::embedded::EmbeddedStore::open(&dir)
                .with_context(|| format!("--state-dir {}", dir.display()))?,
        )),
        (Target::Remote(..), None) => None,
    };
    let records = state_store
        .as_ref()
        .map(|s| crate::sync::StoreRecords(s.as_ref()));
    let mut state = match &records {
        Some(records) => backfill::State::new(records, github::SOURCE),
        None => backfill::State::none(github::SOURCE),
    };
    state.fresh = fresh;
    let summary = github::run_with(&client, &opts, &sink, &state).await?;
    backfill_finish(&target, &summary).await
}

/// The store a backfill keeps its validators and cursors in: the one written to, or with
/// `--to` the embedded store of `--state-dir` (none without it: every run reads everything).
fn backfill_state_store(
    target: &Target,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<Option<Arc<dyn crate::store::Store>>> {
    Ok(match (target, state_dir) {
        (Target::Local(_, pipeline), _) => Some(pipeline.engine.store.clone()),
        (Target::Remote(..), Some(dir)) => Some(Arc::new(
            crate::store::embedded::EmbeddedStore::open(&dir)
                .with_context(|| format!("--state-dir {}", dir.display()))?,
        )),
        (Target::Remote(..), None) => None,
    })
}

/// What `backfill gitlab`, `pagerduty` and `jira` read with, once the client is built and the
/// credentials tried: the target, its store of validators and cursors, `--fresh`.
struct BackfillRun {
    target: Target,
    state_store: Option<Arc<dyn crate::store::Store>>,
    fresh: bool,
}

impl BackfillRun {
    async fn open(
        config: &Config,
        to: Option<String>,
        data_dir: &std::path::Path,
        state_dir: Option<PathBuf>,
        fresh: bool,
    ) -> anyhow::Result<BackfillRun> {
        let target = backfill_target(to, config, data_dir).await?;
        let state_store = backfill_state_store(&target, state_dir)?;
        Ok(BackfillRun {
            target,
            state_store,
            fresh,
        })
    }

    /// The state of `source` over the store (none without one).
    fn state<'a>(
        &self,
        records: &'a Option<crate::sync::StoreRecords<'a>>,
        source: &'static str,
    ) -> crate::backfill::State<'a> {
        let mut state = match records {
            Some(r) => crate::backfill::State::new(r, source),
            None => crate::backfill::State::none(source),
        };
        state.fresh = self.fresh;
        state
    }
}

/// `backfill gitlab`: the token tried on the first project (or group) before anything is
/// opened, then the validators and cursors kept in the store written to (with `--to`, in
/// `--state-dir`'s).
async fn backfill_gitlab(source: BackfillSource) -> anyhow::Result<()> {
    use crate::backfill::{gitlab, Client};
    let BackfillSource::Gitlab {
        projects,
        groups,
        since,
        until,
        api_url,
        data_dir,
        to,
        page_size,
        concurrency,
        state_dir,
        fresh,
    } = source
    else {
        unreachable!("backfill_cmd hands gitlab here")
    };
    let (since, until) = backfill_window(&since, until.as_deref(), page_size)?;
    let token = gitlab::token_from_env()?;
    let config = Config::from_env()?;
    let mut settings = gitlab::settings(&api_url, token);
    settings.page_size = page_size;
    settings.concurrency = concurrency.max(1);
    let client = Client::new(settings)?;
    let mut opts = gitlab::Options::new(projects, since, until);
    opts.groups = groups;
    // The token is tried before the store is opened: a refused one writes nothing.
    gitlab::check_token(&client, &opts).await?;
    let run = BackfillRun::open(&config, to, &data_dir, state_dir, fresh).await?;
    let sink = Signed {
        target: &run.target,
        config: &config,
    };
    let records = run
        .state_store
        .as_ref()
        .map(|s| crate::sync::StoreRecords(s.as_ref()));
    let state = run.state(&records, gitlab::SOURCE);
    let summary = gitlab::run_with(&client, &opts, &sink, &state).await?;
    backfill_finish(&run.target, &summary).await
}

/// `backfill pagerduty` and `backfill jira`: the client and the options of each, then
/// [`backfill_pagerduty_or_jira`].
async fn backfill_read_then_deliver(source: BackfillSource) -> anyhow::Result<()> {
    use crate::backfill::{jira, pagerduty};
    let (BackfillSource::Pagerduty { common, .. } | BackfillSource::Jira { common, .. }) = &source
    else {
        unreachable!("github and gitlab are backfill_cmd's own")
    };
    let (since, until) = backfill_window(&common.since, common.until.as_deref(), common.page_size)?;
    let reader = match &source {
        BackfillSource::Pagerduty {
            services, api_url, ..
        } => {
            let token = pagerduty::token_from_env()?;
            let settings = pagerduty::settings(api_url, token);
            let opts = pagerduty::Options::new(services.clone(), since, until);
            Reader::PagerDuty(settings, opts)
        }
        BackfillSource::Jira {
            projects, api_url, ..
        } => {
            let (email, token) = jira::credentials_from_env()?;
            let settings = jira::settings(api_url, &email, &token);
            let opts = jira::Options {
                projects: projects.clone(),
                since,
                until,
            };
            Reader::Jira(settings, opts)
        }
        BackfillSource::Github { .. } | BackfillSource::Gitlab { .. } => {
            unreachable!("github and gitlab are backfill_cmd's own")
        }
    };
    backfill_pagerduty_or_jira(reader, common).await
}

/// PagerDuty's or Jira's client settings and options.
enum Reader {
    PagerDuty(
        crate::backfill::ClientSettings,
        crate::backfill::pagerduty::Options,
    ),
    Jira(
        crate::backfill::ClientSettings,
        crate::backfill::jira::Options,
    ),
}

/// Reads PagerDuty or Jira with the cursors kept in the store written to (with `--to`, in
/// `--state-dir`'s), delivering as it reads.
async fn backfill_pagerduty_or_jira(reader: Reader, common: &BackfillArgs) -> anyhow::Result<()> {
    use crate::backfill::{jira, pagerduty, Client};
    let config = Config::from_env()?;
    let client_of = |mut settings: crate::backfill::ClientSettings| {
        settings.page_size = common.page_size;
        settings.concurrency = common.concurrency.max(1);
        Client::new(settings)
    };
    let client = match &reader {
        Reader::PagerDuty(settings, _) => client_of(settings.clone())?,
        Reader::Jira(settings, _) => client_of(settings.clone())?,
    };
    // The credentials are tried before the store is opened: refused ones write nothing.
    match &reader {
        Reader::PagerDuty(_, opts) => pagerduty::check_token(&client, opts).await?,
        Reader::Jira(..) => jira::check_token(&client).await?,
    }
    let run = BackfillRun::open(
        &config,
        common.to.clone(),
        &common.data_dir,
        common.state_dir.clone(),
        common.fresh,
    )
    .await?;
    let sink = Signed {
        target: &run.target,
        config: &config,
    };
    let records = run
        .state_store
        .as_ref()
        .map(|s| crate::sync::StoreRecords(s.as_ref()));
    let summary = match reader {
        Reader::PagerDuty(_, opts) => {
            let state = run.state(&records, pagerduty::SOURCE);
            pagerduty::run_with(&client, &opts, &sink, &state).await?
        }
        Reader::Jira(_, opts) => {
            let state = run.state(&records, jira::SOURCE);
            jira::run_with(&client, &opts, &sink, &state).await?
        }
    };
    backfill_finish(&run.target, &summary).await
}

/// A backfill's deliveries, signed like `replay` signs unsigned ones, to the target.
struct Signed<'a> {
    target: &'a Target,
    config: &'a Config,
}

#[async_trait::async_trait]
impl crate::backfill::Sink for Signed<'_> {
    async fn deliver(&self, rec: &replay::Recorded) -> anyhow::Result<(u16, String)> {
        self.target.send(rec, &headers_of(rec, self.config)).await
    }
}

async fn serve(addr: String, data_dir: PathBuf) -> anyhow::Result<()> {
    super::init_logging(false);
    let config = Arc::new(Config::from_env()?);
    if config.allow_unsigned {
        tracing::warn!("VALUESTREAM_ALLOW_UNSIGNED is on: deliveries without a signature or token are accepted");
    }
    // Every setting is checked before anything is opened or served.
    let sync_settings = crate::sync::SyncSettings::from_env()?;
    // VALUESTREAM_SECRET_ARN: webhook secrets from Secrets Manager, re-read every TTL.
    if let Some(secrets) = crate::secrets::start_from_env(&config).await? {
        secrets.spawn_refresh();
    }
    // A sync needs its token (from the environment or the secret) before anything is opened.
    if sync_settings.enabled() {
        sync_settings.check_tokens(&config)?;
    }
    let pipeline = pipeline::build(
        config.clone(),
        Some(&data_dir),
        export::from_env(Box::new(console::Console))?,
    )
    .await?;
    let store = pipeline.engine.store.clone();
    spawn_drainer(pipeline.clone(), config.settle_secs);
    spawn_health_export(&pipeline, config.health_export_secs);
    spawn_sweeper(store.clone());
    // VALUESTREAM_SYNC_*: lost deliveries healed from the APIs on a timer of its own.
    if sync_settings.enabled() {
        tracing::info!(
            targets = ?sync_settings.targets(),
            every_secs = sync_settings.every.as_secs(),
            "sync on"
        );
        Arc::new(super::sync::Syncer::new(
            sync_settings,
            pipeline.clone(),
            config.clone(),
        ))
        .spawn_timer();
    }
    let app = router(AppState {
        pipeline,
        config,
        metrics_endpoint: true,
    });
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %data_dir.display(), "valuestream serving: POST /webhooks/{{source}}, GET /healthz, GET /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // scripts/bench-load reads the fsync count from this line.
    tracing::info!(
        store_requests = store.requests(),
        durable_commits = store.durable_commits(),
        "store closed"
    );
    Ok(())
}

/// Settles and exports in the background, never on a request: every few seconds (and at once
/// after a delivery when the settle period is 0); after a failed export the collector is left
/// alone for VALUESTREAM_RETRY_SECS. A drain that ran out of its settle or export budget (a
/// backlog) is followed by the next one at once.
fn spawn_drainer(drainer: Arc<pipeline::Pipeline>, settle_secs: i64) {
    let every = Duration::from_secs(drain_tick_secs(settle_secs));
    tokio::spawn(async move {
        let mut cut_short = false;
        loop {
            if !cut_short {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = drainer.wake.notified() => {}
                }
            }
            cut_short = match drainer.drain().await {
                Ok(d) => {
                    if d.exported > 0 || d.failed > 0 || d.cut_short() {
                        tracing::info!(
                            settled = d.settled.len(),
                            exported = d.exported,
                            failed = d.failed,
                            unsettled = d.unsettled,
                            unexported = d.unexported,
                            "drained"
                        )
                    }
                    d.cut_short()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "settling or exporting failed; retrying at the next tick");
                    false
                }
            };
        }
    });
}

/// valuestream's own health over OTLP (when an endpoint is set): every
/// VALUESTREAM_HEALTH_EXPORT_SECS, the first one that long after start, in a task of its own
/// (bounded by the interval; a request never waits for it).
fn spawn_health_export(pipeline: &Arc<pipeline::Pipeline>, every_secs: u64) {
    if !pipeline.exporter.exports_health() {
        return;
    }
    let reporter = pipeline.clone();
    let every = Duration::from_secs(every_secs);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            super::export_health(&reporter, every).await;
        }
    });
}

/// Expired state swept from the embedded store every 10 minutes.
fn spawn_sweeper(sweeper: Arc<dyn crate::store::Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.sweep().await {
                tracing::warn!(error = %e, "sweeping expired state failed");
            }
        }
    });
}

async fn correlations_cmd(
    kind: String,
    by: String,
    threshold_s: Option<String>,
    url: Option<String>,
    data_dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    use crate::analysis::correlations::{self, Report};
    super::init_logging(false);
    let mut pairs = vec![("kind", kind.as_str()), ("by", by.as_str())];
    if let Some(t) = &threshold_s {
        pairs.push(("threshold_s", t.as_str()));
    }
    let q = correlations::Query::from_pairs(pairs)?;
    let report: Report = match url {
        Some(base) => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?;
            let url = format!(
                "{}/correlations?{}",
                base.trim_end_matches('/'),
                q.to_query_string()
            );
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            let status = resp.status();
            let text = resp.text().await?;
            anyhow::ensure!(status.is_success(), "{url} answered {status}: {text}");
            serde_json::from_str(&text).with_context(|| format!("{url} answered {text}"))?
        }
        None => {
            let config = Config::from_env()?;
            let dir = data_dir.unwrap_or_else(|| PathBuf::from(".valuestream"));
            if config.table.is_none() {
                anyhow::ensure!(
                    dir.exists(),
                    "no store in {} (use --data-dir, or --url to ask a running instance)",
                    dir.display()
                );
            }
            let store = open_store(&config, Some(&dir)).await?;
            let series = correlations::read_series(store.as_ref(), q.kind).await?;
            correlations::correlate(&q, &series)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", correlations::table(&report));
    }
    Ok(())
}

/// Seconds between drain ticks: a quarter of the settle period, from 1 to 15 s.
fn drain_tick_secs(settle_secs: i64) -> u64 {
    (settle_secs / 4).clamp(1, 15) as u64
}

async fn replay_cmd(
    paths: Vec<PathBuf>,
    to: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let files = replay::collect(&paths)?;
    anyhow::ensure!(!files.is_empty(), "no .json files under {paths:?}");
    let config = Config::from_env()?;
    let target = match to {
        Some(base) => Target::Remote(base, reqwest::Client::new()),
        None => {
            let (app, pipeline) = local_app(&config, data_dir.as_deref()).await?;
            Target::Local(app, pipeline)
        }
    };
    let mut failures = 0;
    for file in files {
        let rec = replay::load(&file)?;
        let (status, text) = target.send(&rec, &headers_of(&rec, &config)).await?;
        let summary = match serde_json::from_str::<Answer>(&text) {
            Ok(a) => a.summary(),
            Err(_) => text,
        };
        eprintln!("{} {} -> {status} {summary}", rec.source, file.display());
        if status >= 400 {
            failures += 1;
        }
    }
    // In process, every file is in: settle it all at once (order within the files does not
    // matter) and print the traces.
    if let Target::Local(_, pipeline) = &target {
        let drained = pipeline.drain_all().await?;
        if !drained.settled.is_empty() {
            println!("\n{}", trace_tree(&drained.settled));
        }
    }
    anyhow::ensure!(failures == 0, "{failures} deliveries were refused");
    Ok(())
}

/// Where `replay` sends deliveries: the router in process, or a running instance.
enum Target {
    Local(axum::Router, Arc<Pipeline>),
    Remote(String, reqwest::Client),
}

/// The router over a pipeline of its own. In process, the files are the user's own: unsigned
/// ones are accepted when no secret is configured to sign them with.
async fn local_app(
    config: &Config,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<(axum::Router, Arc<Pipeline>)> {
    let mut local = config.clone();
    local.allow_unsigned = true;
    let local = Arc::new(local);
    let exporter = export::from_env(Box::new(console::Console))?;
    let pipeline = pipeline::build(local.clone(), data_dir, exporter).await?;
    let app = router(AppState {
        pipeline: pipeline.clone(),
        config: local,
        metrics_endpoint: true,
    });
    Ok((app, pipeline))
}

/// The recorded headers, a JSON content type unless recorded, and the configured secret's
/// signature when the recording carries none.
fn headers_of(rec: &replay::Recorded, config: &Config) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = rec.headers.iter().cloned().collect();
    headers
        .entry("content-type".into())
        .or_insert_with(|| "application/json".into());
    if let Some(src) = sources::by_name(&rec.source) {
        for (k, v) in src.sign(&rec.body, config) {
            headers.entry(k).or_insert(v);
        }
    }
    headers
}

impl Target {
    /// Posts one recorded delivery; the status and the answer's text.
    async fn send(
        &self,
        rec: &replay::Recorded,
        headers: &BTreeMap<String, String>,
    ) -> anyhow::Result<(u16, String)> {
        let path = match &rec.query {
            Some(q) => format!("/webhooks/{}?{q}", rec.source),
            None => format!("/webhooks/{}", rec.source),
        };
        match self {
            Target::Local(app, _) => {
                let mut req = axum::http::Request::post(&path);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let resp = app
                    .clone()
                    .oneshot(req.body(Body::from(rec.body.clone()))?)
                    .await?;
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
                Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
            }
            Target::Remote(base, client) => {
                let mut req = client
                    .post(format!("{}{path}", base.trim_end_matches('/')))
                    .body(rec.body.clone());
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("posting {} to {base}", rec.file.display()))?;
                Ok((
                    resp.status().as_u16(),
                    resp.text().await.unwrap_or_default(),
                ))
            }
        }
    }
}

/// The finished spans as trace trees, children indented under their parents.
fn trace_tree(spans: &[FinishedSpan]) -> String {
    let mut out = String::new();
    let mut traces: Vec<&str> = Vec::new();
    for s in spans {
        if !traces.contains(&s.trace_id.as_str()) {
            traces.push(&s.trace_id);
        }
    }
    for t in traces {
        let in_trace: Vec<&FinishedSpan> = spans.iter().filter(|s| s.trace_id == t).collect();
        out.push_str(&format!("trace {t}\n"));
        let ids: Vec<&str> = in_trace.iter().map(|s| s.span_id.as_str()).collect();
        let roots: Vec<&&FinishedSpan> = in_trace
            .iter()
            .filter(|s| {
                s.parent_span_id
                    .as_deref()
                    .is_none_or(|p| !ids.contains(&p))
            })
            .collect();
        for r in roots {
            walk(r, &in_trace, 1, &mut out);
        }
    }
    out
}

fn walk(s: &FinishedSpan, all: &[&FinishedSpan], depth: usize, out: &mut String) {
    let dur = console::human(s.end - s.start);
    out.push_str(&format!(
        "{}{} [{}] {} ({}){}\n",
        "  ".repeat(depth),
        s.name,
        s.source,
        s.start.to_rfc3339(),
        dur,
        if s.parent_span_id.is_some() && depth == 1 {
            " (parent not in this replay)"
        } else {
            ""
        }
    ));
    for c in all
        .iter()
        .filter(|c| c.parent_span_id.as_deref() == Some(s.span_id.as_str()))
    {
        walk(c, all, depth + 1, out);
    }
}
