//! The Prometheus data source: found by UID, then by name; created with `POST /api/datasources`
//! or updated with `PUT /api/datasources/uid/:uid`. SigV4 (Amazon Managed Service for
//! Prometheus, credentials from the AWS SDK's default chain, which in Amazon Managed Grafana is
//! the workspace's IAM role) when a region is given, plain HTTP for a self-hosted Prometheus.

use super::api::Api;
use super::{Change, GrafanaError};
use reqwest::Method;
use serde_json::{json, Map, Value};

/// What the data source must be.
pub struct Wanted<'a> {
    pub name: &'a str,
    /// Prometheus's query URL; `None` = use the existing data source as it is.
    pub url: Option<&'a str>,
    pub sigv4_region: Option<&'a str>,
}

/// The data source the dashboards are bound to.
#[derive(Debug, Clone)]
pub struct Installed {
    pub uid: String,
    pub name: String,
    pub change: Change,
}

const SIGV4_KEYS: [&str; 3] = ["sigV4Auth", "sigV4AuthType", "sigV4Region"];

/// The `jsonData` for `wanted`, keeping any other settings an existing data source has.
fn json_data(existing: Option<&Value>, wanted: &Wanted) -> Value {
    let mut data: Map<String, Value> = existing
        .and_then(|e| e.get("jsonData"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    data.insert("httpMethod".into(), json!("POST"));
    for k in SIGV4_KEYS {
        data.remove(k);
    }
    if let Some(region) = wanted.sigv4_region {
        data.insert("sigV4Auth".into(), json!(true));
        data.insert("sigV4AuthType".into(), json!("default"));
        data.insert("sigV4Region".into(), json!(region));
    }
    Value::Object(data)
}

/// The full data source model for a create or an update (PUT replaces the whole model).
fn model(uid: &str, existing: Option<&Value>, wanted: &Wanted, url: &str) -> Value {
    let is_default = existing
        .and_then(|e| e.get("isDefault"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    json!({
        "uid": uid,
        "name": wanted.name,
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "basicAuth": false,
        "isDefault": is_default,
        "jsonData": json_data(existing, wanted),
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

/// Creates or updates the data source and returns its UID.
pub async fn ensure(api: &Api, wanted: &Wanted<'_>) -> Result<Installed, GrafanaError> {
    let new_uid = super::uid_for(wanted.name);
    let existing = find(api, &new_uid, wanted.name).await?;
    let existing_uid = existing
        .as_ref()
        .and_then(|e| e.get("uid"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(e) = &existing {
        if e.get("type").and_then(Value::as_str) != Some("prometheus") {
            return Err(GrafanaError::WrongDatasourceType {
                name: wanted.name.to_string(),
                found: e.get("type").cloned().unwrap_or(Value::Null).to_string(),
            });
        }
    }
    match (existing_uid, wanted.url) {
        (Some(uid), None) => Ok(Installed {
            name: existing_name(existing.as_ref(), wanted.name),
            uid,
            change: Change::Kept,
        }),
        (None, None) => Err(GrafanaError::NoDatasource {
            name: wanted.name.to_string(),
        }),
        (Some(uid), Some(url)) => {
            let body = model(&uid, existing.as_ref(), wanted, url);
            let path = format!("/api/datasources/uid/{}", segment(&uid));
            api.expect_ok(Method::PUT, &path, Some(&body)).await?;
            Ok(Installed {
                uid,
                name: wanted.name.to_string(),
                change: Change::Updated,
            })
        }
        (None, Some(url)) => {
            let body = model(&new_uid, None, wanted, url);
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
                change: Change::Created,
            })
        }
    }
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

    #[test]
    fn sigv4_settings_come_and_go_and_other_settings_stay() {
        let amp = Wanted {
            name: "p",
            url: Some("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/"),
            sigv4_region: Some("eu-west-1"),
        };
        let existing = json!({"jsonData": {"timeInterval": "30s", "httpMethod": "GET"}});
        assert_eq!(
            json_data(Some(&existing), &amp),
            json!({"timeInterval": "30s", "httpMethod": "POST", "sigV4Auth": true,
                   "sigV4AuthType": "default", "sigV4Region": "eu-west-1"})
        );
        let plain = Wanted {
            sigv4_region: None,
            ..amp
        };
        let was_amp = json!({"jsonData": json_data(None, &amp)});
        assert_eq!(
            json_data(Some(&was_amp), &plain),
            json!({"httpMethod": "POST"})
        );
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(
            segment("valuestream Prometheus/1"),
            "valuestream%20Prometheus%2F1"
        );
    }
}
