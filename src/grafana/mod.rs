//! `valuestream grafana install`: the dashboards into a Grafana (or an Amazon Managed Grafana
//! workspace) with one command, through Grafana's HTTP API and a service account token. It
//! creates or updates the Prometheus data source, creates the folder if missing and imports every
//! embedded dashboard bound to that data source, in that folder. Everything is found by UID, so
//! running it again gives the same result.
//!
//! It first reads what the server supports ([`datasource::detect`]): the AWS credentials
//! providers it allows for SigV4 and whether the Amazon Managed Service for Prometheus plugin is
//! installed, so that the data source it creates can query on that Grafana; then it asks Grafana
//! to check the data source. With an Amazon Managed Grafana workspace ID instead of a URL and a
//! token, [`workspace`] makes a short-lived token through the AWS API and deletes it afterwards.

mod api;
pub mod cli;
pub mod dashboards;
mod datasource;
pub mod workspace;

use api::Api;
use reqwest::Method;
use serde_json::json;
use sha2::Digest;
use std::sync::LazyLock;
use std::time::Duration;

pub use datasource::Installed as InstalledDatasource;
pub use datasource::Server;
pub use datasource::{AMAZON as AMAZON_PROMETHEUS_TYPE, CORE as PROMETHEUS_TYPE};

/// What `install` was asked to do, as given on the command line.
#[derive(Debug, Clone)]
pub struct Install {
    /// Grafana's root URL.
    pub url: String,
    /// A service account token.
    pub token: String,
    /// Prometheus's query URL; without it, the data source must exist already.
    pub prometheus_url: Option<String>,
    /// SigV4 signing region (Amazon Managed Service for Prometheus).
    pub sigv4_region: Option<String>,
    /// The SigV4 credentials provider (`sigV4AuthType`); `None` = the best the server allows.
    pub sigv4_auth_type: Option<String>,
    pub folder: String,
    pub datasource_name: String,
    /// The dashboards' `$lookback`; `None` keeps theirs (90d).
    pub lookback: Option<String>,
    /// Bound of each request.
    pub timeout: Duration,
    /// Leave out Grafana's check that it can query the data source.
    pub skip_health_check: bool,
}

/// What a run did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    /// Found and used as it was.
    Kept,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Kept => "found, kept as it is",
        })
    }
}

/// One imported dashboard, as Grafana answered.
#[derive(Debug, Clone)]
pub struct Imported {
    pub uid: String,
    pub title: String,
    pub version: i64,
    /// Its address in Grafana.
    pub url: String,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// What the server supports.
    pub server: Server,
    pub datasource: InstalledDatasource,
    pub folder_uid: String,
    pub folder_title: String,
    pub folder: Change,
    pub dashboards: Vec<Imported>,
}

/// The errors of `grafana install`, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    #[error("invalid {flag}: {reason}")]
    InvalidFlag { flag: &'static str, reason: String },
    #[error(
        "the token was refused: Grafana at {base} answered 401 Unauthorized ({message}); give \
         --token a service account token of this Grafana (Administration → Users and access → \
         Service accounts, role Admin)"
    )]
    TokenRefused { base: String, message: String },
    #[error(
        "the token may not {what}: 403 Forbidden ({message}); the service account needs the Admin \
         role to create data sources and folders"
    )]
    Forbidden { what: String, message: String },
    #[error("cannot reach Grafana at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    #[error("Grafana at {base} did not answer {what} within {secs} s")]
    Timeout {
        base: String,
        what: String,
        secs: f64,
    },
    #[error(
        "{what} answered {status} with something other than JSON ({body:?}); is {base} the root \
         URL of a Grafana?"
    )]
    NotGrafana {
        base: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: Grafana answered {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error(
        "no data source named {name:?} in Grafana: give --prometheus-url (and --sigv4-region for \
         Amazon Managed Service for Prometheus) to create it"
    )]
    NoDatasource { name: String },
    #[error(
        "the data source {name:?} is of type {found}, neither prometheus nor \
         grafana-amazonprometheus-datasource: choose another --datasource-name"
    )]
    WrongDatasourceType { name: String, found: String },
    #[error(
        "this Grafana allows no AWS auth provider for SigV4 (awsAllowedAuthProviders is empty): \
         set [aws] allowed_auth_providers in its configuration"
    )]
    NoAuthProvider,
    #[error(
        "Grafana {version} signs Prometheus queries with SigV4 only through the plugin \
         grafana-amazonprometheus-datasource, which is not installed: install it \
         (Administration → Plugins and data → Plugins → Amazon Managed Service for Prometheus), \
         then run this again"
    )]
    NeedsAmazonPlugin { version: String },
    #[error(
        "the data source {name:?} (uid {uid}) was saved, but Grafana cannot query it (health \
         check answered {status}: {message}); nothing else was installed \
         (--skip-health-check installs the dashboards all the same)"
    )]
    Unhealthy {
        name: String,
        uid: String,
        status: u16,
        message: String,
    },
    #[error("{what}: {message}")]
    Aws { what: String, message: String },
    #[error("the embedded dashboard {file} is unusable: {reason}")]
    BadDashboard { file: &'static str, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

static AUTH_TYPE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[a-z0-9_]{1,64}$").unwrap());
static REGION: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$").unwrap());
static DURATION: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^([0-9]+(ms|s|m|h|d|w|y))+$").unwrap());
static AMP_HOST: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^aps-workspaces\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$").unwrap()
});

fn http_url(flag: &'static str, s: &str) -> Result<reqwest::Url, GrafanaError> {
    let invalid = |reason: String| GrafanaError::InvalidFlag { flag, reason };
    let url = reqwest::Url::parse(s).map_err(|e| invalid(format!("{s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!("{s:?} is not an http(s) URL")));
    }
    Ok(url)
}

impl Install {
    /// Checks every flag before anything is sent.
    pub fn validate(&self) -> Result<(), GrafanaError> {
        let invalid = |flag, reason: &str| GrafanaError::InvalidFlag {
            flag,
            reason: reason.to_string(),
        };
        http_url("--url", &self.url)?;
        if self.token.trim().is_empty() {
            return Err(invalid("--token", "empty"));
        }
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token)).is_err() {
            return Err(invalid("--token", "not usable in an HTTP header"));
        }
        if let Some(p) = &self.prometheus_url {
            let url = http_url("--prometheus-url", p)?;
            let amp = url.host_str().and_then(|h| AMP_HOST.captures(h));
            match (&amp, &self.sigv4_region) {
                (Some(c), None) => {
                    return Err(invalid(
                        "--sigv4-region",
                        &format!(
                            "{p} is Amazon Managed Service for Prometheus, which needs SigV4: \
                             add --sigv4-region {}",
                            &c[1]
                        ),
                    ))
                }
                (Some(c), Some(r)) if &c[1] != r => {
                    return Err(invalid(
                        "--sigv4-region",
                        &format!("{r} is not the region of {p} ({})", &c[1]),
                    ))
                }
                _ => {}
            }
        }
        if let Some(r) = &self.sigv4_region {
            if self.prometheus_url.is_none() {
                return Err(invalid("--sigv4-region", "needs --prometheus-url"));
            }
            if !REGION.is_match(r) {
                return Err(invalid(
                    "--sigv4-region",
                    &format!("{r:?} is not an AWS region such as eu-west-1"),
                ));
            }
        }
        if let Some(a) = &self.sigv4_auth_type {
            if self.sigv4_region.is_none() {
                return Err(invalid("--sigv4-auth-type", "needs --sigv4-region"));
            }
            if !AUTH_TYPE.is_match(a) {
                return Err(invalid(
                    "--sigv4-auth-type",
                    &format!("{a:?} is not an AWS auth provider name such as ec2_iam_role"),
                ));
            }
        }
        if self.folder.trim().is_empty() {
            return Err(invalid("--folder", "empty"));
        }
        if self.datasource_name.trim().is_empty() {
            return Err(invalid("--datasource-name", "empty"));
        }
        if let Some(l) = &self.lookback {
            if !DURATION.is_match(l) {
                return Err(invalid(
                    "--lookback",
                    &format!("{l:?} is not a Prometheus duration such as 90d"),
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(invalid("--timeout-secs", "must be more than 0"));
        }
        Ok(())
    }
}

/// The UID this command gives what it creates under `name`: lower-case letters, digits and `-`,
/// at most 40 characters (Grafana's limit); a name with none of those gets a hash.
pub fn uid_for(name: &str) -> String {
    let mut uid = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            uid.push(c);
        } else if !uid.is_empty() && !uid.ends_with('-') {
            uid.push('-');
        }
    }
    let uid = uid.trim_end_matches('-');
    if uid.is_empty() {
        let hash = hex::encode(sha2::Sha256::digest(name.as_bytes()));
        return format!("valuestream-{}", &hash[..16]);
    }
    uid.chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Finds the folder by UID, then by title among the top-level folders; creates it if missing.
async fn ensure_folder(api: &Api, title: &str) -> Result<(String, Change), GrafanaError> {
    let uid = uid_for(title);
    let path = format!("/api/folders/{}", datasource::segment(&uid));
    if api.get_optional(&path).await?.is_some() {
        return Ok((uid, Change::Kept));
    }
    let all = api
        .expect_ok(Method::GET, "/api/folders?limit=1000", None)
        .await?;
    if let Some(found) = all
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["title"] == title)
    {
        if let Some(uid) = found["uid"].as_str() {
            return Ok((uid.to_string(), Change::Kept));
        }
    }
    let created = api
        .expect_ok(
            Method::POST,
            "/api/folders",
            Some(&json!({"uid": uid, "title": title})),
        )
        .await?;
    let uid = created["uid"].as_str().map_or(uid, str::to_string);
    Ok((uid, Change::Created))
}

/// Installs the data source, the folder and every embedded dashboard.
pub async fn install(opts: &Install) -> Result<InstallReport, GrafanaError> {
    opts.validate()?;
    let api = Api::new(&opts.url, &opts.token, opts.timeout)?;
    let server = datasource::detect(&api).await?;
    let ds = datasource::ensure(
        &api,
        &server,
        &datasource::Wanted {
            name: &opts.datasource_name,
            url: opts.prometheus_url.as_deref(),
            sigv4_region: opts.sigv4_region.as_deref(),
            sigv4_auth_type: opts.sigv4_auth_type.as_deref(),
        },
    )
    .await?;
    if !opts.skip_health_check {
        datasource::check_health(&api, &ds).await?;
    }
    let (folder_uid, folder) = ensure_folder(&api, &opts.folder).await?;
    let mut imported = Vec::new();
    for d in dashboards::DASHBOARDS {
        let model = dashboards::bind(
            d,
            &dashboards::Binding {
                datasource_uid: &ds.uid,
                datasource_name: &ds.name,
                datasource_type: &ds.kind,
                lookback: opts.lookback.as_deref(),
            },
        )?;
        let title = model["title"].as_str().unwrap_or_default().to_string();
        let body = json!({
            "dashboard": model,
            "folderUid": folder_uid,
            "overwrite": true,
            "message": "valuestream grafana install",
        });
        let answer = api
            .expect_ok(Method::POST, "/api/dashboards/db", Some(&body))
            .await?;
        imported.push(Imported {
            uid: answer["uid"]
                .as_str()
                .or(body["dashboard"]["uid"].as_str())
                .unwrap_or_default()
                .to_string(),
            title,
            version: answer["version"].as_i64().unwrap_or(0),
            url: format!(
                "{}{}",
                opts.url.trim_end_matches('/'),
                answer["url"].as_str().unwrap_or_default()
            ),
        });
    }
    Ok(InstallReport {
        server,
        datasource: ds,
        folder_uid,
        folder_title: opts.folder.clone(),
        folder,
        dashboards: imported,
    })
}

impl InstallReport {
    /// What a run did, one line per object.
    pub fn summary(&self) -> String {
        let mut s =
            format!(
            "Grafana {} (AWS auth providers allowed: {}; Amazon Managed Service for Prometheus \
             plugin: {})\n",
            self.server.version.as_deref().unwrap_or("of unknown version"),
            if self.server.allowed_auth.is_empty() {
                "none".to_string()
            } else {
                self.server.allowed_auth.join(", ")
            },
            if self.server.amazon_plugin {
                "installed"
            } else {
                "not installed"
            },
        );
        let signing = match &self.datasource.sigv4_auth_type {
            Some(a) => format!(", SigV4 with {a}"),
            None => String::new(),
        };
        s.push_str(&format!(
            "data source {:?} (uid {}, type {}{signing}): {}\nfolder {:?} (uid {}): {}\n",
            self.datasource.name,
            self.datasource.uid,
            self.datasource.kind,
            self.datasource.change,
            self.folder_title,
            self.folder_uid,
            self.folder
        ));
        for d in &self.dashboards {
            s.push_str(&format!(
                "dashboard {:?} (uid {}): imported, version {}: {}\n",
                d.title, d.uid, d.version, d.url
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Install {
        Install {
            url: "https://grafana.example.com".into(),
            token: "glsa_x".into(),
            prometheus_url: None,
            sigv4_region: None,
            sigv4_auth_type: None,
            folder: "valuestream".into(),
            datasource_name: "valuestream Prometheus".into(),
            lookback: None,
            timeout: Duration::from_secs(30),
            skip_health_check: false,
        }
    }

    #[test]
    fn uids_are_grafana_uids() {
        assert_eq!(uid_for("valuestream Prometheus"), "valuestream-prometheus");
        assert_eq!(uid_for("  DORA / Team A  "), "dora-team-a");
        assert_eq!(uid_for(&"x".repeat(60)).len(), 40);
        assert!(uid_for("÷÷").starts_with("valuestream-"));
    }

    #[test]
    fn every_flag_is_checked_and_named() {
        let err = |o: Install| o.validate().unwrap_err().to_string();
        assert!(err(Install {
            url: "grafana".into(),
            ..opts()
        })
        .starts_with("invalid --url"));
        assert!(err(Install {
            token: " ".into(),
            ..opts()
        })
        .starts_with("invalid --token"));
        let amp = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/";
        let e = err(Install {
            prometheus_url: Some(amp.into()),
            ..opts()
        });
        assert!(e.contains("--sigv4-region eu-west-1"), "{e}");
        assert!(err(Install {
            prometheus_url: Some(amp.into()),
            sigv4_region: Some("us-east-1".into()),
            ..opts()
        })
        .contains("not the region"));
        assert!(err(Install {
            sigv4_region: Some("eu-west-1".into()),
            ..opts()
        })
        .contains("needs --prometheus-url"));
        assert!(err(Install {
            prometheus_url: Some("http://p:9090".into()),
            sigv4_auth_type: Some("ec2_iam_role".into()),
            ..opts()
        })
        .contains("--sigv4-auth-type: needs --sigv4-region"));
        assert!(err(Install {
            prometheus_url: Some(amp.into()),
            sigv4_region: Some("eu-west-1".into()),
            sigv4_auth_type: Some("Workspace IAM role".into()),
            ..opts()
        })
        .starts_with("invalid --sigv4-auth-type"));
        assert!(err(Install {
            lookback: Some("90 days".into()),
            ..opts()
        })
        .starts_with("invalid --lookback"));
        Install {
            prometheus_url: Some(amp.into()),
            sigv4_region: Some("eu-west-1".into()),
            lookback: Some("30d".into()),
            ..opts()
        }
        .validate()
        .unwrap();
    }
}
