//! The Prometheus data source: what the Grafana server supports ([`Server`], from
//! `GET /api/frontend/settings` and the Amazon Managed Service for Prometheus plugin's settings),
//! then the data source found by UID, then by name; created with `POST /api/datasources` or
//! updated with `PUT /api/datasources/uid/:uid`, and checked with
//! `GET /api/datasources/uid/:uid/health`.
//!
//! Two types serve the same queries: the core `prometheus` and the plugin
//! `grafana-amazonprometheus-datasource`, to which Grafana 12 moves SigV4 (Amazon Managed Grafana
//! workspaces of version 12 have it installed; Grafana 13 migrates SigV4 data sources of the core
//! type to it at start-up and drops the core type's SigV4 code). Both read the same `jsonData`:
//! `sigV4Auth`, `sigV4AuthType` (the AWS credentials provider), `sigV4Region`.
//!
//! The provider must be one the server allows (`[aws] allowed_auth_providers`, published as
//! `awsAllowedAuthProviders`): Grafana checks it on every query, not when the data source is
//! saved ("attempting to use an auth type for SigV4 that is not allowed" up to Grafana 11, "trying
//! to use non-allowed auth method" from 12 on). Amazon Managed Grafana allows `ec2_iam_role` (the
//! workspace's IAM role); a self-hosted Grafana `default,keys,credentials` unless configured.

use super::api::Api;
use super::{Change, GrafanaError};
use reqwest::Method;
use serde_json::{json, Map, Value};

/// The core Prometheus data source type.
pub const CORE: &str = "prometheus";
/// The Amazon Managed Service for Prometheus data source plugin.
pub const AMAZON: &str = "grafana-amazonprometheus-datasource";

/// The providers Grafana allows when its settings do not say (its `[aws]` default).
const GRAFANA_DEFAULT_PROVIDERS: [&str; 3] = ["default", "keys", "credentials"];

/// What the data source must be.
pub struct Wanted<'a> {
    pub name: &'a str,
    /// Prometheus's query URL; `None` = use the existing data source as it is.
    pub url: Option<&'a str>,
    pub sigv4_region: Option<&'a str>,
    /// The SigV4 credentials provider asked for (`--sigv4-auth-type`); `None` = choose.
    pub sigv4_auth_type: Option<&'a str>,
}

/// What the Grafana server supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `buildInfo.version` (e.g. `10.4.1`), if given.
    pub version: Option<String>,
    /// The AWS credentials providers data sources may use (`awsAllowedAuthProviders`).
    pub allowed_auth: Vec<String>,
    /// Whether the `grafana-amazonprometheus-datasource` plugin is installed.
    pub amazon_plugin: bool,
}

impl Server {
    /// The major version, if the build version says.
    pub fn major(&self) -> Option<u32> {
        self.version
            .as_deref()
            .and_then(|v| v.trim_start_matches('v').split('.').next())
            .and_then(|m| m.parse().ok())
    }

    /// The SigV4 credentials provider: the one asked for if the server allows it; else
    /// `ec2_iam_role` when allowed (Amazon Managed Grafana's workspace role), else `default`
    /// (the AWS SDK's default chain of a self-hosted Grafana), else the first allowed.
    pub fn sigv4_auth_type(&self, asked: Option<&str>) -> Result<String, GrafanaError> {
        let allowed = |p: &str| self.allowed_auth.iter().any(|a| a == p);
        if let Some(asked) = asked {
            if allowed(asked) {
                return Ok(asked.to_string());
            }
            return Err(GrafanaError::InvalidFlag {
                flag: "--sigv4-auth-type",
                reason: format!(
                    "this Grafana does not allow {asked:?} (its allowed AWS auth providers: {}); \
                     choose one of them, or leave the flag out",
                    self.allowed_list()
                ),
            });
        }
        ["ec2_iam_role", "default"]
            .into_iter()
            .find(|p| allowed(p))
            .map(str::to_string)
            .or_else(|| self.allowed_auth.first().cloned())
            .ok_or(GrafanaError::NoAuthProvider)
    }

    fn allowed_list(&self) -> String {
        if self.allowed_auth.is_empty() {
            "none".into()
        } else {
            self.allowed_auth.join(", ")
        }
    }

    /// The type a new data source gets, or an existing one becomes. The plugin's when SigV4 is
    /// wanted and the plugin is installed on a Grafana 12 or later (whose core type signs no
    /// more, or soon will not); an existing data source of the plugin's type stays of it; the
    /// core type otherwise.
    fn datasource_type(
        &self,
        existing: Option<&str>,
        sigv4: bool,
    ) -> Result<&'static str, GrafanaError> {
        if existing == Some(AMAZON) {
            return Ok(AMAZON);
        }
        let modern = self.major().is_some_and(|m| m >= 12);
        if sigv4 && self.amazon_plugin && (modern || self.major().is_none()) {
            return Ok(AMAZON);
        }
        if sigv4 && self.major().is_some_and(|m| m >= 13) {
            return Err(GrafanaError::NeedsAmazonPlugin {
                version: self.version.clone().unwrap_or_default(),
            });
        }
        Ok(CORE)
    }
}

/// Reads what the server supports: `GET /api/frontend/settings` and
/// `GET /api/plugins/grafana-amazonprometheus-datasource/settings` (404 = not installed).
pub async fn detect(api: &Api) -> Result<Server, GrafanaError> {
    let settings = api
        .expect_ok(Method::GET, "/api/frontend/settings", None)
        .await?;
    let allowed_auth = match settings
        .get("awsAllowedAuthProviders")
        .and_then(Value::as_array)
    {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None => GRAFANA_DEFAULT_PROVIDERS.map(str::to_string).to_vec(),
    };
    let version = settings
        .pointer("/buildInfo/version")
        .and_then(Value::as_str)
        .map(str::to_string);
    let amazon_plugin = api
        .get_optional(&format!("/api/plugins/{AMAZON}/settings"))
        .await?
        .is_some();
    Ok(Server {
        version,
        allowed_auth,
        amazon_plugin,
    })
}

/// The data source the dashboards are bound to.
#[derive(Debug, Clone)]
pub struct Installed {
    pub uid: String,
    pub name: String,
    /// Its type: `prometheus` or `grafana-amazonprometheus-datasource`.
    pub kind: String,
    /// The SigV4 credentials provider it uses, if it signs.
    pub sigv4_auth_type: Option<String>,
    pub change: Change,
}

const SIGV4_KEYS: [&str; 3] = ["sigV4Auth", "sigV4AuthType", "sigV4Region"];

/// The `jsonData` for `wanted`, keeping any other settings an existing data source has.
fn json_data(existing: Option<&Value>, wanted: &Wanted, auth_type: Option<&str>) -> Value {
    let mut data: Map<String, Value> = existing
        .and_then(|e| e.get("jsonData"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    data.insert("httpMethod".into(), json!("POST"));
    for k in SIGV4_KEYS {
        data.remove(k);
    }
    if let (Some(region), Some(auth)) = (wanted.sigv4_region, auth_type) {
        data.insert("sigV4Auth".into(), json!(true));
        data.insert("sigV4AuthType".into(), json!(auth));
        data.insert("sigV4Region".into(), json!(region));
    }
    Value::Object(data)
}

/// The full data source model for a create or an update (PUT replaces the whole model).
fn model(
    uid: &str,
    kind: &str,
    existing: Option<&Value>,
    wanted: &Wanted,
    url: &str,
    auth_type: Option<&str>,
) -> Value {
    let is_default = existing
        .and_then(|e| e.get("isDefault"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    json!({
        "uid": uid,
        "name": wanted.name,
        "type": kind,
        "access": "proxy",
        "url": url,
        "basicAuth": false,
        "isDefault": is_default,
        "jsonData": json_data(existing, wanted, auth_type),
    })
}

/// Finds the data source by `uid` (the one this command gives it), then by name (one made by
/// hand).
async fn find(api: &Api, uid: &str, name: &str) -> Result<Option<Value>, GrafanaError> {
    for path in [
        format!("/api/datasources/uid/{}", segment(uid)),
        format!("/api/datasources/name/{}", segment(name)),
    ] {
        if let Some(found) = api.get_optional(&path).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Creates or updates the data source for `server` and returns it. An existing one of either
/// type keeps its UID (and the plugin's type, once it has it).
pub async fn ensure(
    api: &Api,
    server: &Server,
    wanted: &Wanted<'_>,
) -> Result<Installed, GrafanaError> {
    let new_uid = super::uid_for(wanted.name);
    let existing = find(api, &new_uid, wanted.name).await?;
    let existing_uid = field(existing.as_ref(), "uid");
    let existing_type = field(existing.as_ref(), "type");
    if let Some(e) = &existing {
        if !matches!(existing_type.as_deref(), Some(CORE | AMAZON)) {
            return Err(GrafanaError::WrongDatasourceType {
                name: wanted.name.to_string(),
                found: e.get("type").cloned().unwrap_or(Value::Null).to_string(),
            });
        }
    }
    let auth_type = match wanted.sigv4_region {
        Some(_) => Some(server.sigv4_auth_type(wanted.sigv4_auth_type)?),
        None => None,
    };
    match (existing_uid, wanted.url) {
        (Some(uid), None) => {
            let e = existing.as_ref();
            Ok(Installed {
                name: existing_name(e, wanted.name),
                uid,
                kind: existing_type.unwrap_or_else(|| CORE.into()),
                sigv4_auth_type: e
                    .and_then(|e| e.pointer("/jsonData/sigV4AuthType"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                change: Change::Kept,
            })
        }
        (None, None) => Err(GrafanaError::NoDatasource {
            name: wanted.name.to_string(),
        }),
        (Some(uid), Some(url)) => {
            let kind = server.datasource_type(existing_type.as_deref(), auth_type.is_some())?;
            let body = model(
                &uid,
                kind,
                existing.as_ref(),
                wanted,
                url,
                auth_type.as_deref(),
            );
            let path = format!("/api/datasources/uid/{}", segment(&uid));
            api.expect_ok(Method::PUT, &path, Some(&body)).await?;
            Ok(Installed {
                uid,
                name: wanted.name.to_string(),
                kind: kind.to_string(),
                sigv4_auth_type: auth_type,
                change: Change::Updated,
            })
        }
        (None, Some(url)) => create(api, server, wanted, url, new_uid, auth_type).await,
    }
}

/// A string field of a data source Grafana holds.
fn field(datasource: Option<&Value>, key: &str) -> Option<String> {
    datasource
        .and_then(|e| e.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Creates the data source (`POST /api/datasources`) under `new_uid` (or the UID Grafana gives
/// it).
async fn create(
    api: &Api,
    server: &Server,
    wanted: &Wanted<'_>,
    url: &str,
    new_uid: String,
    auth_type: Option<String>,
) -> Result<Installed, GrafanaError> {
    let kind = server.datasource_type(None, auth_type.is_some())?;
    let body = model(&new_uid, kind, None, wanted, url, auth_type.as_deref());
    let created = api
        .expect_ok(Method::POST, "/api/datasources", Some(&body))
        .await?;
    let uid = created
        .pointer("/datasource/uid")
        .and_then(Value::as_str)
        .map_or(new_uid, str::to_string);
    Ok(Installed {
        uid,
        name: wanted.name.to_string(),
        kind: kind.to_string(),
        sigv4_auth_type: auth_type,
        change: Change::Created,
    })
}

/// Asks Grafana to query the data source (`GET /api/datasources/uid/:uid/health`): a credentials
/// provider the server does not allow, a type that cannot sign, or a Prometheus that refuses
/// shows here rather than on every panel.
pub async fn check_health(api: &Api, ds: &Installed) -> Result<(), GrafanaError> {
    let path = format!("/api/datasources/uid/{}/health", segment(&ds.uid));
    let answer = api.send(Method::GET, &path, None).await?;
    let ok = answer.status.is_success()
        && answer
            .body
            .get("status")
            .and_then(Value::as_str)
            .is_none_or(|s| s.eq_ignore_ascii_case("ok"));
    if ok {
        return Ok(());
    }
    Err(GrafanaError::Unhealthy {
        name: ds.name.clone(),
        uid: ds.uid.clone(),
        status: answer.status.as_u16(),
        message: answer.message(),
    })
}

fn existing_name(existing: Option<&Value>, fallback: &str) -> String {
    existing
        .and_then(|e| e.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(fallback)
        .to_string()
}

/// Everything but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One URL path segment, percent-encoded (a data source name may hold spaces or `/`).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str, allowed: &[&str], plugin: bool) -> Server {
        Server {
            version: Some(version.into()),
            allowed_auth: allowed.iter().map(|s| s.to_string()).collect(),
            amazon_plugin: plugin,
        }
    }

    #[test]
    fn sigv4_settings_come_and_go_and_other_settings_stay() {
        let amp = Wanted {
            name: "p",
            url: Some("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/"),
            sigv4_region: Some("eu-west-1"),
            sigv4_auth_type: None,
        };
        let existing = json!({"jsonData": {"timeInterval": "30s", "httpMethod": "GET"}});
        assert_eq!(
            json_data(Some(&existing), &amp, Some("ec2_iam_role")),
            json!({"timeInterval": "30s", "httpMethod": "POST", "sigV4Auth": true,
                   "sigV4AuthType": "ec2_iam_role", "sigV4Region": "eu-west-1"})
        );
        let plain = Wanted {
            sigv4_region: None,
            ..amp
        };
        let was_amp = json!({"jsonData": json_data(None, &amp, Some("default"))});
        assert_eq!(
            json_data(Some(&was_amp), &plain, None),
            json!({"httpMethod": "POST"})
        );
    }

    #[test]
    fn the_provider_is_one_the_server_allows() {
        let own = server("11.3.0", &["default", "keys", "credentials"], false);
        assert_eq!(own.sigv4_auth_type(None).unwrap(), "default");
        assert_eq!(own.sigv4_auth_type(Some("keys")).unwrap(), "keys");
        let amg = server("10.4.1", &["ec2_iam_role"], false);
        assert_eq!(amg.sigv4_auth_type(None).unwrap(), "ec2_iam_role");
        let e = amg
            .sigv4_auth_type(Some("default"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid --sigv4-auth-type") && e.contains("ec2_iam_role"),
            "{e}"
        );
        let both = server("12.0.0", &["default", "ec2_iam_role"], true);
        assert_eq!(both.sigv4_auth_type(None).unwrap(), "ec2_iam_role");
        let odd = server("12.0.0", &["credentials"], true);
        assert_eq!(odd.sigv4_auth_type(None).unwrap(), "credentials");
        assert!(server("12.0.0", &[], true).sigv4_auth_type(None).is_err());
    }

    #[test]
    fn the_type_follows_the_server_and_an_existing_plugin_type_stays() {
        let s10 = server("10.4.1", &["ec2_iam_role"], false);
        assert_eq!(s10.datasource_type(None, true).unwrap(), CORE);
        assert_eq!(s10.datasource_type(Some(AMAZON), true).unwrap(), AMAZON);
        let s12 = server("12.1.0", &["ec2_iam_role"], true);
        assert_eq!(s12.datasource_type(None, true).unwrap(), AMAZON);
        assert_eq!(s12.datasource_type(Some(CORE), true).unwrap(), AMAZON);
        assert_eq!(s12.datasource_type(None, false).unwrap(), CORE);
        let s13 = server("13.0.0", &["default"], false);
        assert!(s13.datasource_type(None, true).is_err());
        assert_eq!(s13.datasource_type(None, false).unwrap(), CORE);
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(
            segment("valuestream Prometheus/1"),
            "valuestream%20Prometheus%2F1"
        );
    }
}
