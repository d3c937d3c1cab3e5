//! The `valuestream grafana` subcommands and their flags (wired into the command line by
//! `entrypoints::cli`).

use super::workspace::{install_in_workspace, Workspace};
use super::{install, Install};
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand)]
pub enum GrafanaCommand {
    /// Create or update the Prometheus data source, create the folder if missing and import every
    /// dashboard (DORA, delivery, correlations) bound to that data source. Idempotent: a second
    /// run finds everything by UID and leaves the same state.
    ///
    /// Uses Grafana's HTTP API with a service account token (role Admin): --url and --token for
    /// any Grafana; --workspace-id for an Amazon Managed Grafana workspace, whose service
    /// account "valuestream" (role Admin) this finds or creates through the AWS API, with a token
    /// that lives 10 minutes and is deleted after the run, failed or not.
    ///
    /// It reads what the Grafana supports first: with --sigv4-region the data source signs its
    /// queries with SigV4 (Amazon Managed Service for Prometheus) through an AWS auth provider
    /// the server allows (ec2_iam_role, the workspace's IAM role, in Amazon Managed Grafana;
    /// default, the AWS SDK's default chain, in a self-hosted Grafana), and is of the type
    /// grafana-amazonprometheus-datasource when that plugin is installed on Grafana 12 or later,
    /// prometheus otherwise. Without --sigv4-region it queries --prometheus-url as is. Without
    /// --prometheus-url, the data source named --datasource-name must exist and is used as it
    /// is. Grafana then checks that it can query the data source.
    Install(InstallArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    /// Grafana's root URL, e.g. http://grafana:3000. With --workspace-id, the workspace's
    /// endpoint is used unless this is given.
    #[arg(long, required_unless_present = "workspace_id")]
    url: Option<String>,
    /// A Grafana service account token (role Admin). Prefer the GRAFANA_TOKEN environment
    /// variable: a flag's value is visible to every user in the process list. Not used with
    /// --workspace-id.
    #[arg(
        long,
        env = "GRAFANA_TOKEN",
        hide_env_values = true,
        required_unless_present = "workspace_id"
    )]
    token: Option<String>,
    /// An Amazon Managed Grafana workspace ID (g-…): the token is made (and deleted) through the
    /// AWS API with the AWS SDK's default credentials, which need
    /// grafana:DescribeWorkspace, grafana:ListWorkspaceServiceAccounts,
    /// grafana:CreateWorkspaceServiceAccount, grafana:CreateWorkspaceServiceAccountToken and
    /// grafana:DeleteWorkspaceServiceAccountToken.
    #[arg(long, value_name = "WORKSPACE_ID")]
    workspace_id: Option<String>,
    /// The workspace's AWS region (default: the AWS SDK's, e.g. AWS_REGION).
    #[arg(long, value_name = "REGION", requires = "workspace_id")]
    region: Option<String>,
    /// Prometheus's query URL: the Amazon Managed Service for Prometheus workspace's
    /// (https://aps-workspaces.REGION.amazonaws.com/workspaces/ws-…/) or a self-hosted
    /// Prometheus's (http://prometheus:9090).
    #[arg(long, value_name = "QUERY_URL")]
    prometheus_url: Option<String>,
    /// Sign the data source's queries with SigV4 for this AWS region (Amazon Managed Service
    /// for Prometheus).
    #[arg(long, value_name = "REGION", requires = "prometheus_url")]
    sigv4_region: Option<String>,
    /// The AWS auth provider the data source signs with (its sigV4AuthType), if not the one
    /// chosen from those the Grafana allows (ec2_iam_role first, then default, then the first);
    /// refused when the Grafana does not allow it.
    #[arg(long, value_name = "PROVIDER", requires = "sigv4_region")]
    sigv4_auth_type: Option<String>,
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
    /// Import the dashboards even if Grafana cannot query the data source yet (e.g. before the
    /// workspace role may query Amazon Managed Service for Prometheus).
    #[arg(long)]
    skip_health_check: bool,
}

pub async fn run(cmd: GrafanaCommand) -> anyhow::Result<()> {
    match cmd {
        GrafanaCommand::Install(a) => {
            let opts = Install {
                url: a.url.clone().unwrap_or_default(),
                token: a.token.unwrap_or_default(),
                prometheus_url: a.prometheus_url,
                sigv4_region: a.sigv4_region,
                sigv4_auth_type: a.sigv4_auth_type,
                folder: a.folder,
                datasource_name: a.datasource_name,
                lookback: a.lookback,
                timeout: Duration::from_secs(a.timeout_secs),
                skip_health_check: a.skip_health_check,
            };
            match a.workspace_id {
                Some(id) => {
                    let ws = Workspace {
                        id,
                        region: a.region,
                        url: a.url,
                    };
                    let outcome = install_in_workspace(&ws, &opts).await?;
                    print!("{}", outcome.summary());
                }
                None => print!("{}", install(&opts).await?.summary()),
            }
            Ok(())
        }
    }
}
