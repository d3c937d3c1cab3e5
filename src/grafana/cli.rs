//! The `valuestream grafana` subcommands and their flags (wired into the command line by
//! `entrypoints::cli`).

use super::{install, Install};
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand)]
pub enum GrafanaCommand {
    /// Create or update the Prometheus data source, create the folder if missing and import every
    /// dashboard (DORA, delivery, correlations) bound to that data source. Idempotent: a second
    /// run finds everything by UID and leaves the same state.
    ///
    /// Uses Grafana's HTTP API with a service account token (role Admin). With --sigv4-region
    /// the data source signs its queries with SigV4 (Amazon Managed Service for Prometheus, the
    /// credentials of the AWS SDK's default chain: in Amazon Managed Grafana, the workspace's IAM
    /// role); without it, it queries --prometheus-url as is. Without --prometheus-url, the data
    /// source named --datasource-name must exist and is used as it is.
    Install(InstallArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    /// Grafana's root URL, e.g. https://g-abc123.grafana-workspace.eu-west-1.amazonaws.com.
    #[arg(long)]
    url: String,
    /// A Grafana service account token (role Admin). Prefer the GRAFANA_TOKEN environment
    /// variable: a flag's value is visible to every user in the process list.
    #[arg(long, env = "GRAFANA_TOKEN", hide_env_values = true)]
    token: String,
    /// Prometheus's query URL: the Amazon Managed Service for Prometheus workspace's
    /// (https://aps-workspaces.REGION.amazonaws.com/workspaces/ws-…/) or a self-hosted
    /// Prometheus's (http://prometheus:9090).
    #[arg(long, value_name = "QUERY_URL")]
    prometheus_url: Option<String>,
    /// Sign the data source's queries with SigV4 for this AWS region (Amazon Managed Service
    /// for Prometheus).
    #[arg(long, value_name = "REGION", requires = "prometheus_url")]
    sigv4_region: Option<String>,
    /// The folder the dashboards go into (created if missing).
    #[arg(long, value_name = "NAME", default_value = "valuestream")]
    folder: String,
    /// The Prometheus data source's name (created or updated under this name).
    #[arg(long, value_name = "NAME", default_value = "valuestream Prometheus")]
    datasource_name: String,
    /// The dashboards' lookback for quiet series (a Prometheus duration; default: the
    /// dashboards' 90d). Keep it longer than the longest time a series goes without a new point.
    #[arg(long, value_name = "DURATION")]
    lookback: Option<String>,
    /// Bound of each request to Grafana, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout_secs: u64,
}

pub async fn run(cmd: GrafanaCommand) -> anyhow::Result<()> {
    match cmd {
        GrafanaCommand::Install(a) => {
            let outcome = install(&Install {
                url: a.url,
                token: a.token,
                prometheus_url: a.prometheus_url,
                sigv4_region: a.sigv4_region,
                folder: a.folder,
                datasource_name: a.datasource_name,
                lookback: a.lookback,
                timeout: Duration::from_secs(a.timeout_secs),
            })
            .await?;
            print!("{}", outcome.summary());
            Ok(())
        }
    }
}
