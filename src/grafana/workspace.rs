//! `grafana install --workspace-id g-…`: an Amazon Managed Grafana workspace, reached without a
//! token made by hand. Through the AWS API (`aws-sdk-grafana`, the credentials and region of the
//! AWS SDK's default chain): `DescribeWorkspace` for its URL, `ListWorkspaceServiceAccounts` to
//! find the service account [`SERVICE_ACCOUNT`] (`CreateWorkspaceServiceAccount` with the Admin
//! role if missing), `CreateWorkspaceServiceAccountToken` for a token that lives
//! [`TOKEN_SECONDS`], then the install with it, then `DeleteWorkspaceServiceAccountToken`,
//! whether the install succeeded or not.

use super::{install, GrafanaError, Install, InstallReport, REGION};
use aws_sdk_grafana::types::Role;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The workspace service account the command creates or reuses.
pub const SERVICE_ACCOUNT: &str = "valuestream";
/// How long the token it makes may live, in seconds: long enough for one install, short enough
/// that a token left behind (the process killed between creation and deletion) soon expires.
pub const TOKEN_SECONDS: i32 = 600;

static WORKSPACE_ID: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^g-[0-9a-f]{10}$").unwrap());

/// The workspace, as given on the command line.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// `g-` and ten hexadecimal digits.
    pub id: String,
    /// Its AWS region; `None` = the AWS SDK's default chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Grafana's root URL if not the workspace's endpoint (a proxy; the tests' stand-in).
    pub url: Option<String>,
}

/// What a run did in the workspace.
#[derive(Debug)]
pub struct WorkspaceReport {
    pub url: String,
    pub service_account_id: String,
    pub service_account: super::Change,
    pub install: InstallReport,
}

impl WorkspaceReport {
    pub fn summary(&self) -> String {
        format!(
            "workspace Grafana {}\nservice account {SERVICE_ACCOUNT:?} (id {}, role Admin): {}\n\
             token (valid {TOKEN_SECONDS} s): created, used and deleted\n{}",
            self.url,
            self.service_account_id,
            self.service_account,
            self.install.summary()
        )
    }
}

impl Workspace {
    pub fn validate(&self) -> Result<(), GrafanaError> {
        let invalid = |flag, reason: String| GrafanaError::InvalidFlag { flag, reason };
        if !WORKSPACE_ID.is_match(&self.id) {
            return Err(invalid(
                "--workspace-id",
                format!(
                    "{:?} is not an Amazon Managed Grafana workspace ID such as g-0123456789",
                    self.id
                ),
            ));
        }
        if let Some(r) = &self.region {
            if !REGION.is_match(r) {
                return Err(invalid(
                    "--region",
                    format!("{r:?} is not an AWS region such as eu-west-1"),
                ));
            }
        }
        if let Some(u) = &self.url {
            super::http_url("--url", u)?;
        }
        Ok(())
    }
}

/// The workspace's URL from DescribeWorkspace's `endpoint` (a host name), or else the
/// documented form.
pub fn workspace_url(id: &str, region: &str, endpoint: Option<&str>) -> String {
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) if e.starts_with("https://") || e.starts_with("http://") => {
            e.trim_end_matches('/').to_string()
        }
        Some(e) => format!("https://{}", e.trim_end_matches('/')),
        None => format!("https://{id}.grafana-workspace.{region}.amazonaws.com"),
    }
}

fn aws_error<E>(what: String) -> impl FnOnce(aws_sdk_grafana::error::SdkError<E>) -> GrafanaError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| GrafanaError::Aws {
        what,
        message: aws_sdk_grafana::error::DisplayErrorContext(&e).to_string(),
    }
}

/// Installs into the workspace: `opts`' URL and token are set here (the ones given are not used).
pub async fn install_in_workspace(
    ws: &Workspace,
    opts: &Install,
) -> Result<WorkspaceReport, GrafanaError> {
    check_flags(ws, opts)?;
    let (aws, region) = client(ws, opts).await?;
    let id = ws.id.as_str();

    let described = aws
        .describe_workspace()
        .workspace_id(id)
        .send()
        .await
        .map_err(aws_error(format!("DescribeWorkspace {id} in {region}")))?;
    let url = match &ws.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => workspace_url(id, &region, described.workspace().map(|w| w.endpoint())),
    };

    let (account_id, account) = service_account(&aws, id).await?;
    let (token_id, key) = create_token(&aws, id, &account_id).await?;
    let installed = install(&Install {
        url: url.clone(),
        token: key,
        ..opts.clone()
    })
    .await;
    let deleted = aws
        .delete_workspace_service_account_token()
        .workspace_id(id)
        .service_account_id(&account_id)
        .token_id(&token_id)
        .send()
        .await
        .map_err(aws_error(format!(
            "DeleteWorkspaceServiceAccountToken {token_id} (it expires by itself within \
             {TOKEN_SECONDS} s)"
        )));
    match (installed, deleted) {
        (Ok(install), Ok(_)) => Ok(WorkspaceReport {
            url,
            service_account_id: account_id,
            service_account: account,
            install,
        }),
        (Err(e), Ok(_)) => Err(e),
        (Ok(_), Err(d)) => Err(d),
        (Err(e), Err(d)) => Err(GrafanaError::Aws {
            what: e.to_string(),
            message: format!("and then {d}"),
        }),
    }
}

/// Checks the workspace and every other flag before anything is sent to AWS.
fn check_flags(ws: &Workspace, opts: &Install) -> Result<(), GrafanaError> {
    ws.validate()?;
    let probe = Install {
        url: ws
            .url
            .clone()
            .unwrap_or_else(|| "https://workspace.invalid".into()),
        token: "pending".into(),
        ..opts.clone()
    };
    probe.validate()
}

/// The Amazon Managed Grafana client (within the install's timeout) and its region.
async fn client(
    ws: &Workspace,
    opts: &Install,
) -> Result<(aws_sdk_grafana::Client, String), GrafanaError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .build(),
    );
    if let Some(r) = &ws.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    let conf = loader.load().await;
    let Some(region) = conf.region().map(|r| r.to_string()) else {
        return Err(GrafanaError::InvalidFlag {
            flag: "--region",
            reason: "no AWS region: give --region (or set AWS_REGION)".into(),
        });
    };
    Ok((aws_sdk_grafana::Client::new(&conf), region))
}

/// A short-lived token of the service account `account_id`: its id and its key.
async fn create_token(
    aws: &aws_sdk_grafana::Client,
    id: &str,
    account_id: &str,
) -> Result<(String, String), GrafanaError> {
    let token_name = format!(
        "valuestream-install-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let created = aws
        .create_workspace_service_account_token()
        .workspace_id(id)
        .service_account_id(account_id)
        .name(&token_name)
        .seconds_to_live(TOKEN_SECONDS)
        .send()
        .await
        .map_err(aws_error(format!(
            "CreateWorkspaceServiceAccountToken for service account {account_id} of {id}"
        )))?;
    let (token_id, key) = created
        .service_account_token()
        .map(|t| (t.id().to_string(), t.key().to_string()))
        .unwrap_or_default();
    if token_id.is_empty() || key.is_empty() {
        return Err(GrafanaError::Aws {
            what: format!("CreateWorkspaceServiceAccountToken for {id}"),
            message: "the answer holds no token".into(),
        });
    }
    Ok((token_id, key))
}

/// Finds the service account [`SERVICE_ACCOUNT`] (it must have the Admin role and be enabled),
/// or creates it with the Admin role.
async fn service_account(
    aws: &aws_sdk_grafana::Client,
    id: &str,
) -> Result<(String, super::Change), GrafanaError> {
    let mut next: Option<String> = None;
    loop {
        let page = aws
            .list_workspace_service_accounts()
            .workspace_id(id)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(aws_error(format!("ListWorkspaceServiceAccounts of {id}")))?;
        if let Some(a) = page
            .service_accounts()
            .iter()
            .find(|a| a.name() == SERVICE_ACCOUNT)
        {
            if a.grafana_role() != &Role::Admin || a.is_disabled().eq_ignore_ascii_case("true") {
                return Err(GrafanaError::Aws {
                    what: format!(
                        "the service account {SERVICE_ACCOUNT:?} (id {}) of {id}",
                        a.id()
                    ),
                    message: format!(
                        "it has the role {} and is{} disabled; it needs the Admin role and to be \
                         enabled (Grafana → Administration → Service accounts), or delete it and \
                         run this again",
                        a.grafana_role().as_str(),
                        if a.is_disabled().eq_ignore_ascii_case("true") {
                            ""
                        } else {
                            " not"
                        }
                    ),
                });
            }
            return Ok((a.id().to_string(), super::Change::Kept));
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => break,
        }
    }
    let created = aws
        .create_workspace_service_account()
        .workspace_id(id)
        .name(SERVICE_ACCOUNT)
        .grafana_role(Role::Admin)
        .send()
        .await
        .map_err(aws_error(format!("CreateWorkspaceServiceAccount in {id}")))?;
    Ok((created.id().to_string(), super::Change::Created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_endpoint_or_the_documented_form() {
        assert_eq!(
            workspace_url(
                "g-0123456789",
                "eu-west-1",
                Some("g-0123456789.grafana-workspace.eu-west-1.amazonaws.com")
            ),
            "https://g-0123456789.grafana-workspace.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            workspace_url("g-0123456789", "us-east-1", None),
            "https://g-0123456789.grafana-workspace.us-east-1.amazonaws.com"
        );
        assert_eq!(
            workspace_url("g-0123456789", "us-east-1", Some("")),
            "https://g-0123456789.grafana-workspace.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn ids_and_regions_are_checked() {
        let ws = |id: &str, region: Option<&str>| Workspace {
            id: id.into(),
            region: region.map(str::to_string),
            url: None,
        };
        assert!(ws("g-0123456789", Some("eu-west-1")).validate().is_ok());
        assert!(ws("g-0123456789", None).validate().is_ok());
        let e = ws("my-workspace", None).validate().unwrap_err().to_string();
        assert!(e.starts_with("invalid --workspace-id"), "{e}");
        let e = ws("g-0123456789", Some("Ireland"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid --region"), "{e}");
    }
}
