//! `valuestream grafana install` against a stand-in for Grafana's HTTP API.
//!
//! No Grafana server can be installed here (no package of it in the reachable registries), so
//! [`FakeGrafana`] stands in for one: an axum server on loopback that checks every request the
//! real binary sends against Grafana's documented HTTP API — method, path, `Authorization:
//! Bearer` token, JSON content type and the fields each endpoint requires — answers as Grafana
//! does (200 with Grafana's answer bodies, 401 for a bad token, 404 for a missing data source or
//! folder, 409 for a name or UID that is taken, 412 for a dashboard changed by someone else
//! without `overwrite`) and keeps the state, so that the tests can assert what a Grafana would
//! hold after one run and after two. A request outside the documented API is recorded as a
//! violation and fails the test.
//!
//! The pages it follows (Grafana 10's, whose `/api` endpoints later versions keep):
//! - data sources: <https://grafana.com/docs/grafana/v10.4/developers/http_api/data_source/>
//!   (`GET /api/datasources/uid/:uid`, `GET /api/datasources/name/:name`,
//!   `POST /api/datasources`, `PUT /api/datasources/uid/:uid`);
//! - folders: <https://grafana.com/docs/grafana/v10.4/developers/http_api/folder/>
//!   (`GET /api/folders`, `GET /api/folders/:uid`, `POST /api/folders`);
//! - dashboards: <https://grafana.com/docs/grafana/v10.4/developers/http_api/dashboard/>
//!   (`POST /api/dashboards/db` with `dashboard`, `folderUid`, `overwrite`);
//! - service account tokens (`Authorization: Bearer`):
//!   <https://grafana.com/docs/grafana/v10.4/developers/http_api/authentication/>;
//! - the same API in Amazon Managed Grafana:
//!   <https://docs.aws.amazon.com/grafana/latest/userguide/v10-Grafana-API-Folder.html> and its
//!   sibling pages;
//! - the SigV4 settings of a Prometheus data source for Amazon Managed Service for Prometheus:
//!   <https://grafana.com/docs/grafana/latest/datasources/prometheus/configure/aws-authentication/>.
//!
//! It models one server generation at a time ([`Generation`]): its `GET /api/frontend/settings`
//! (`buildInfo.version`, `awsAllowedAuthProviders`), whether `GET
//! /api/plugins/grafana-amazonprometheus-datasource/settings` finds the plugin, and whether the
//! core `prometheus` type still signs with SigV4. Like Grafana, it saves any SigV4 provider and
//! refuses it when the data source is queried (`GET /api/datasources/uid/:uid/health`, or
//! [`FakeGrafana::query`] for a panel's query), with the message of that generation's
//! grafana-aws-sdk: "attempting to use an auth type for SigV4 that is not allowed" (Grafana 9 to
//! 11), "trying to use non-allowed auth method <type>" (12 on). A core data source with SigV4 on a
//! server without core SigV4 sends unsigned queries, which Amazon Managed Service for Prometheus
//! answers 403.
//!
//! Under `/workspaces/…` the same server stands in for the Amazon Managed Grafana API (REST-JSON,
//! <https://docs.aws.amazon.com/grafana/latest/APIReference/>): `DescribeWorkspace`,
//! `ListWorkspaceServiceAccounts`, `CreateWorkspaceServiceAccount`,
//! `CreateWorkspaceServiceAccountToken` and `DeleteWorkspaceServiceAccountToken`, which moto does
//! not model. A token it creates is a Grafana token until deleted.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "glsa_valuestream_test_token";
const AMAZON: &str = "grafana-amazonprometheus-datasource";
const AMP: &str =
    "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0123abcd-4567-89ef-0123-456789abcdef/";
const WORKSPACE: &str = "g-0123456789";

/// One Grafana server generation: what it publishes and what it can query.
#[derive(Clone, Debug)]
struct Generation {
    version: &'static str,
    allowed: &'static [&'static str],
    /// `grafana-amazonprometheus-datasource` installed.
    plugin: bool,
    /// The core `prometheus` type signs with SigV4.
    core_sigv4: bool,
}

const SELF_HOSTED: &[&str] = &["default", "keys", "credentials"];
const AMG: &[&str] = &["ec2_iam_role"];

impl Generation {
    fn self_hosted_10() -> Self {
        Generation {
            version: "10.4.1",
            allowed: SELF_HOSTED,
            plugin: false,
            core_sigv4: true,
        }
    }
    fn self_hosted_11() -> Self {
        Generation {
            version: "11.6.0",
            allowed: SELF_HOSTED,
            plugin: false,
            core_sigv4: true,
        }
    }
    fn amg_9_4() -> Self {
        Generation {
            version: "9.4.7",
            allowed: AMG,
            plugin: false,
            core_sigv4: true,
        }
    }
    fn amg_10_4() -> Self {
        Generation {
            version: "10.4.1",
            allowed: AMG,
            plugin: false,
            core_sigv4: true,
        }
    }
    fn amg_12() -> Self {
        Generation {
            version: "12.0.2",
            allowed: AMG,
            plugin: true,
            core_sigv4: false,
        }
    }
    fn grafana_13() -> Self {
        Generation {
            version: "13.0.0",
            allowed: SELF_HOSTED,
            plugin: true,
            core_sigv4: false,
        }
    }
    fn major(&self) -> u32 {
        self.version.split('.').next().unwrap().parse().unwrap()
    }
}

impl Default for Generation {
    fn default() -> Self {
        Self::self_hosted_10()
    }
}

/// The Amazon Managed Grafana API's state for one workspace.
#[derive(Default)]
struct Aws {
    /// Service accounts: `{id, name, grafanaRole, isDisabled}`.
    accounts: Vec<Value>,
    /// Token id → `{serviceAccountId, name, key, secondsToLive}`, as created.
    tokens: BTreeMap<String, Value>,
    /// Token ids deleted.
    deleted: Vec<String>,
    /// Every call: "METHOD /path -> status".
    calls: Vec<String>,
}

// ------------------------------------------------------------------ the stand-in for Grafana

#[derive(Default)]
struct Grafana {
    server: Generation,
    /// Tokens created through the AWS API and not deleted: valid like [`TOKEN`].
    live_tokens: Vec<String>,
    aws: Aws,
    next_id: i64,
    datasources: BTreeMap<String, Value>,
    folders: BTreeMap<String, Value>,
    /// uid → (the stored dashboard model, its folder uid ("" = General), version).
    dashboards: BTreeMap<String, (Value, String, i64)>,
    /// Every request: "METHOD /path" and the status answered.
    log: Vec<(String, u16)>,
    /// Requests that do not follow the documented API.
    violations: Vec<String>,
}

#[derive(Clone)]
struct FakeGrafana {
    state: Arc<Mutex<Grafana>>,
    base: String,
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn message(status: StatusCode, m: &str) -> Response {
    answer(status, json!({ "message": m }))
}

fn is_str(v: &Value, key: &str) -> bool {
    v.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

impl Grafana {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// The fields `POST`/`PUT /api/datasources` need for a Prometheus data source.
    fn check_datasource(&mut self, what: &str, b: &Value) -> bool {
        let mut wrong = Vec::new();
        for key in ["name", "url"] {
            if !is_str(b, key) {
                wrong.push(format!("{key} missing"));
            }
        }
        let plugin_type = b["type"] == AMAZON;
        if b["type"] != "prometheus" && !plugin_type {
            wrong.push(format!("type {} is not prometheus", b["type"]));
        }
        if plugin_type && !self.server.plugin {
            wrong.push(format!("type {AMAZON}: the plugin is not installed"));
        }
        if b["access"] != "proxy" {
            wrong.push(format!("access {} is not proxy", b["access"]));
        }
        let jd = &b["jsonData"];
        if jd["sigV4Auth"] == true && (!is_str(jd, "sigV4AuthType") || !is_str(jd, "sigV4Region")) {
            wrong.push(format!(
                "sigV4Auth needs sigV4AuthType and sigV4Region: {jd}"
            ));
        }
        if !wrong.is_empty() {
            self.violations
                .push(format!("{what}: {}", wrong.join(", ")));
        }
        wrong.is_empty()
    }

    /// What a query through the data source `uid` gives on this server: `Err` with Grafana's
    /// message when it cannot sign as configured.
    fn query(&self, uid: &str) -> Result<(), String> {
        let ds = self
            .datasources
            .get(uid)
            .ok_or_else(|| "Data source not found".to_string())?;
        let jd = &ds["jsonData"];
        if ds["type"] == AMAZON && !self.server.plugin {
            return Err(format!("plugin {AMAZON} not found"));
        }
        if jd["sigV4Auth"] != true {
            return Ok(());
        }
        if ds["type"] == "prometheus" && !self.server.core_sigv4 {
            return Err(
                "bad_response: 403 Forbidden: {\"message\":\"Missing Authentication Token\"} \
                 (the core prometheus type sends the query unsigned)"
                    .into(),
            );
        }
        let auth = jd["sigV4AuthType"].as_str().unwrap_or_default();
        if !self.server.allowed.contains(&auth) {
            return Err(if self.server.major() >= 12 {
                format!("trying to use non-allowed auth method {auth}")
            } else {
                "attempting to use an auth type for SigV4 that is not allowed".into()
            });
        }
        Ok(())
    }

    /// Grafana 13's start-up migration: every core data source that signs with SigV4 becomes of
    /// the plugin's type, with the same UID and settings.
    fn upgrade_to_13_and_migrate(&mut self) {
        self.server = Generation::grafana_13();
        for ds in self.datasources.values_mut() {
            if ds["type"] == "prometheus" && ds["jsonData"]["sigV4Auth"] == true {
                ds["type"] = json!(AMAZON);
                ds["version"] = json!(ds["version"].as_i64().unwrap() + 1);
            }
        }
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> Response {
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let what = format!("{method} {path}");
        let body = body.unwrap_or(Value::Null);
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["api", "frontend", "settings"]) => answer(
                StatusCode::OK,
                json!({
                    "appSubUrl": "",
                    "awsAllowedAuthProviders": self.server.allowed,
                    "awsAssumeRoleEnabled": true,
                    "buildInfo": {"version": self.server.version, "commit": "abc123", "edition": "Open Source", "env": "production"},
                    "datasources": {},
                }),
            ),
            ("GET", ["api", "plugins", id, "settings"]) => {
                if *id == AMAZON && self.server.plugin {
                    answer(
                        StatusCode::OK,
                        json!({"id": AMAZON, "type": "datasource", "name": "Amazon Managed Service for Prometheus", "enabled": true, "info": {"version": "2.3.0"}}),
                    )
                } else {
                    message(
                        StatusCode::NOT_FOUND,
                        "Plugin not found, no installed plugin with that id",
                    )
                }
            }
            ("GET", ["api", "datasources", "uid", uid, "health"]) => match self.query(uid) {
                Ok(()) => answer(
                    StatusCode::OK,
                    json!({"status": "OK", "message": "Successfully queried the Prometheus API."}),
                ),
                Err(m) if m == "Data source not found" => message(StatusCode::NOT_FOUND, &m),
                Err(m) => answer(
                    StatusCode::BAD_REQUEST,
                    json!({"status": "ERROR", "message": m}),
                ),
            },
            ("GET", ["api", "datasources"]) => answer(
                StatusCode::OK,
                json!(self.datasources.values().collect::<Vec<_>>()),
            ),
            ("GET", ["api", "datasources", "uid", uid]) => match self.datasources.get(*uid) {
                Some(ds) => answer(StatusCode::OK, ds.clone()),
                None => message(StatusCode::NOT_FOUND, "Data source not found"),
            },
            ("GET", ["api", "datasources", "name", name]) => {
                match self.datasources.values().find(|d| d["name"] == *name) {
                    Some(ds) => answer(StatusCode::OK, ds.clone()),
                    None => message(StatusCode::NOT_FOUND, "Data source not found"),
                }
            }
            ("POST", ["api", "datasources"]) => {
                if !self.check_datasource(&what, &body) {
                    return message(StatusCode::BAD_REQUEST, "bad request data");
                }
                if self.datasources.values().any(|d| d["name"] == body["name"]) {
                    return message(
                        StatusCode::CONFLICT,
                        "data source with the same name already exists",
                    );
                }
                let uid = body["uid"]
                    .as_str()
                    .map_or_else(|| format!("gen{}", self.next_id + 1), str::to_string);
                if self.datasources.contains_key(&uid) {
                    return message(
                        StatusCode::CONFLICT,
                        "data source with the same uid already exists",
                    );
                }
                let id = self.id();
                let mut ds = body.clone();
                ds["id"] = json!(id);
                ds["uid"] = json!(uid);
                ds["orgId"] = json!(1);
                ds["version"] = json!(1);
                self.datasources.insert(uid.clone(), ds.clone());
                answer(
                    StatusCode::OK,
                    json!({"datasource": ds, "id": id, "message": "Datasource added", "name": body["name"]}),
                )
            }
            ("PUT", ["api", "datasources", "uid", uid]) => {
                let Some(old) = self.datasources.get(*uid).cloned() else {
                    return message(StatusCode::NOT_FOUND, "Data source not found");
                };
                if !self.check_datasource(&what, &body) {
                    return message(StatusCode::BAD_REQUEST, "bad request data");
                }
                if self
                    .datasources
                    .values()
                    .any(|d| d["name"] == body["name"] && d["uid"] != *uid)
                {
                    return message(
                        StatusCode::CONFLICT,
                        "data source with the same name already exists",
                    );
                }
                if body.get("uid").is_some_and(|u| u != *uid) {
                    self.violations
                        .push(format!("{what}: changes the uid to {}", body["uid"]));
                }
                let mut ds = body.clone();
                ds["id"] = old["id"].clone();
                ds["uid"] = json!(uid);
                ds["orgId"] = json!(1);
                ds["version"] = json!(old["version"].as_i64().unwrap() + 1);
                self.datasources.insert(uid.to_string(), ds.clone());
                answer(
                    StatusCode::OK,
                    json!({"datasource": ds, "id": old["id"], "message": "Datasource updated", "name": body["name"]}),
                )
            }
            ("GET", ["api", "folders"]) => {
                if !query.is_empty() && !query.starts_with("limit=") && !query.starts_with("page=")
                {
                    self.violations
                        .push(format!("{what}?{query}: unknown query"));
                }
                answer(
                    StatusCode::OK,
                    json!(self
                        .folders
                        .values()
                        .map(|f| json!({"id": f["id"], "uid": f["uid"], "title": f["title"]}))
                        .collect::<Vec<_>>()),
                )
            }
            ("GET", ["api", "folders", uid]) => match self.folders.get(*uid) {
                Some(f) => answer(StatusCode::OK, f.clone()),
                None => message(StatusCode::NOT_FOUND, "folder not found"),
            },
            ("POST", ["api", "folders"]) => {
                if !is_str(&body, "title") || !is_str(&body, "uid") {
                    self.violations
                        .push(format!("{what}: needs uid and title: {body}"));
                    return message(StatusCode::BAD_REQUEST, "bad request data");
                }
                let uid = body["uid"].as_str().unwrap().to_string();
                if self.folders.contains_key(&uid) {
                    return message(
                        StatusCode::CONFLICT,
                        "a folder with the same uid already exists",
                    );
                }
                let general_titles = self
                    .dashboards
                    .values()
                    .filter(|(_, f, _)| f.is_empty())
                    .map(|(d, _, _)| d["title"].clone());
                let taken = self
                    .folders
                    .values()
                    .map(|f| f["title"].clone())
                    .chain(general_titles)
                    .any(|t| t == body["title"]);
                if taken {
                    return message(
                        StatusCode::CONFLICT,
                        "a folder or dashboard in the general folder with the same name already exists",
                    );
                }
                let id = self.id();
                let f = json!({"id": id, "uid": uid, "title": body["title"], "url": format!("/dashboards/f/{uid}/"), "version": 1});
                self.folders.insert(uid, f.clone());
                answer(StatusCode::OK, f)
            }
            ("POST", ["api", "dashboards", "db"]) => {
                let d = &body["dashboard"];
                if !d.is_object() || !is_str(d, "uid") || !is_str(d, "title") {
                    self.violations
                        .push(format!("{what}: dashboard needs uid and title"));
                    return message(StatusCode::BAD_REQUEST, "bad request data");
                }
                if !is_str(&body, "folderUid") {
                    self.violations.push(format!("{what}: no folderUid"));
                }
                if body["overwrite"] != true {
                    self.violations
                        .push(format!("{what}: overwrite is not true"));
                }
                let folder = body["folderUid"].as_str().unwrap_or_default().to_string();
                if !folder.is_empty() && !self.folders.contains_key(&folder) {
                    return message(StatusCode::BAD_REQUEST, "folder not found");
                }
                let uid = d["uid"].as_str().unwrap().to_string();
                let overwrite = body["overwrite"] == true;
                let version = match self.dashboards.get(&uid) {
                    Some((old, _, v)) => {
                        if !overwrite && d["version"] != old["version"] {
                            return answer(
                                StatusCode::PRECONDITION_FAILED,
                                json!({"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}),
                            );
                        }
                        v + 1
                    }
                    None => {
                        let same_name = self
                            .dashboards
                            .values()
                            .any(|(o, f, _)| o["title"] == d["title"] && *f == folder);
                        if same_name && !overwrite {
                            return answer(
                                StatusCode::PRECONDITION_FAILED,
                                json!({"message": "A dashboard with the same name in the folder already exists", "status": "name-exists"}),
                            );
                        }
                        1
                    }
                };
                let id = match self.dashboards.get(&uid) {
                    Some((old, _, _)) => old["id"].clone(),
                    None => json!(self.id()),
                };
                let mut stored = d.clone();
                stored["id"] = id.clone();
                stored["version"] = json!(version);
                self.dashboards
                    .insert(uid.clone(), (stored, folder, version));
                let slug = "valuestream";
                answer(
                    StatusCode::OK,
                    json!({"id": id, "uid": uid, "url": format!("/d/{uid}/{slug}"), "status": "success", "version": version, "slug": slug}),
                )
            }
            _ => {
                self.violations
                    .push(format!("{what}: not an endpoint this command should call"));
                message(StatusCode::NOT_FOUND, "Not found")
            }
        }
    }
}

async fn serve_grafana(State(g): State<FakeGrafana>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap();
    let mut s = g.state.lock().unwrap();
    let what = format!("{method} {path}");
    if path.starts_with("/workspaces/") {
        let body = serde_json::from_slice::<Value>(&bytes).ok();
        let resp = s.handle_aws(
            &method,
            &path,
            auth.as_deref(),
            content_type.as_deref(),
            body,
        );
        let status = resp.status().as_u16();
        s.aws.calls.push(format!("{what} -> {status}"));
        return resp;
    }
    let valid = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| t == TOKEN || s.live_tokens.iter().any(|l| l == t));
    let resp = if !valid {
        message(StatusCode::UNAUTHORIZED, "Invalid API key")
    } else if bytes.is_empty() {
        if matches!(method, Method::POST | Method::PUT) {
            s.violations.push(format!("{what}: no body"));
        }
        s.handle(&method, &path, &query, None)
    } else {
        if content_type.as_deref() != Some("application/json") {
            s.violations
                .push(format!("{what}: content type {content_type:?}"));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => s.handle(&method, &path, &query, Some(v)),
            Err(e) => {
                s.violations.push(format!("{what}: body is not JSON: {e}"));
                message(StatusCode::BAD_REQUEST, "bad request data")
            }
        }
    };
    s.log.push((what, resp.status().as_u16()));
    resp
}

fn aws_error(status: StatusCode, kind: &str, m: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE.as_str(), "application/json"),
            ("x-amzn-errortype", kind),
        ],
        json!({ "message": m }).to_string(),
    )
        .into_response()
}

impl Grafana {
    /// The Amazon Managed Grafana API for the workspace [`WORKSPACE`]: SigV4-signed requests
    /// (service `grafana`), JSON bodies, the answers' documented fields.
    fn handle_aws(
        &mut self,
        method: &Method,
        path: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let signed = auth.is_some_and(|a| {
            a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDVALUESTREAMTEST/")
                && a.contains("/grafana/aws4_request")
        });
        if !signed {
            self.violations.push(format!(
                "{method} {path}: not SigV4-signed for grafana: {auth:?}"
            ));
            return aws_error(StatusCode::FORBIDDEN, "AccessDeniedException", "not signed");
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let Some(ws) = segs.get(1).copied() else {
            return aws_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "no workspace",
            );
        };
        if ws != WORKSPACE {
            return aws_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("Workspace {ws} not found"),
            );
        }
        let body = body.unwrap_or(Value::Null);
        if *method == Method::POST && content_type != Some("application/json") {
            self.violations
                .push(format!("{method} {path}: content type {content_type:?}"));
        }
        match (method.as_str(), &segs[2..]) {
            ("GET", []) => answer(
                StatusCode::OK,
                json!({"workspace": {
                    "id": WORKSPACE,
                    "endpoint": format!("{WORKSPACE}.grafana-workspace.eu-west-1.amazonaws.com"),
                    "grafanaVersion": self.server.version,
                    "status": "ACTIVE",
                    "accountAccessType": "CURRENT_ACCOUNT",
                    "authentication": {"providers": ["AWS_SSO"]},
                    "permissionType": "CUSTOMER_MANAGED",
                    "dataSources": ["PROMETHEUS"],
                    "created": 1.7e9,
                    "modified": 1.7e9,
                }}),
            ),
            ("GET", ["serviceaccounts"]) => answer(
                StatusCode::OK,
                json!({"workspaceId": WORKSPACE, "serviceAccounts": self.aws.accounts}),
            ),
            ("POST", ["serviceaccounts"]) => {
                if !is_str(&body, "name") || body["grafanaRole"] != "ADMIN" {
                    self.violations.push(format!(
                        "{method} {path}: needs name and grafanaRole ADMIN: {body}"
                    ));
                    return aws_error(StatusCode::BAD_REQUEST, "ValidationException", "invalid");
                }
                if self.aws.accounts.iter().any(|a| a["name"] == body["name"]) {
                    return aws_error(
                        StatusCode::CONFLICT,
                        "ConflictException",
                        "service account exists",
                    );
                }
                let id = (self.aws.accounts.len() + 2).to_string();
                let a = json!({"id": id, "name": body["name"], "grafanaRole": "ADMIN", "isDisabled": "false"});
                self.aws.accounts.push(a);
                answer(
                    StatusCode::OK,
                    json!({"id": id, "name": body["name"], "grafanaRole": "ADMIN", "workspaceId": WORKSPACE}),
                )
            }
            ("POST", [_, sa, "tokens"]) if segs[2] == "serviceaccounts" => {
                let sa = sa.to_string();
                if !self.aws.accounts.iter().any(|a| a["id"] == sa) {
                    return aws_error(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFoundException",
                        "no service account",
                    );
                }
                let ttl = body["secondsToLive"].as_i64().unwrap_or(0);
                if !is_str(&body, "name") || !(1..=2_592_000).contains(&ttl) {
                    self.violations.push(format!(
                        "{method} {path}: needs name and secondsToLive: {body}"
                    ));
                    return aws_error(StatusCode::BAD_REQUEST, "ValidationException", "invalid");
                }
                let id = (self.aws.tokens.len() + 1).to_string();
                let key = format!("glsa_workspace_token_{id}");
                self.aws.tokens.insert(
                    id.clone(),
                    json!({"serviceAccountId": sa, "name": body["name"], "key": key, "secondsToLive": ttl}),
                );
                self.live_tokens.push(key.clone());
                answer(
                    StatusCode::OK,
                    json!({"serviceAccountId": sa, "workspaceId": WORKSPACE,
                           "serviceAccountToken": {"id": id, "name": body["name"], "key": key}}),
                )
            }
            ("DELETE", [_, sa, "tokens", token]) if segs[2] == "serviceaccounts" => {
                let Some(t) = self.aws.tokens.get(*token) else {
                    return aws_error(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFoundException",
                        "no token",
                    );
                };
                if t["serviceAccountId"] != *sa {
                    return aws_error(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFoundException",
                        "no token",
                    );
                }
                let key = t["key"].clone();
                self.live_tokens.retain(|k| *k != key);
                self.aws.deleted.push(token.to_string());
                answer(
                    StatusCode::OK,
                    json!({"serviceAccountId": sa, "tokenId": token, "workspaceId": WORKSPACE}),
                )
            }
            _ => {
                self.violations.push(format!(
                    "{method} {path}: not an AMG API call this command makes"
                ));
                aws_error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFoundException",
                    "unknown",
                )
            }
        }
    }
}

impl FakeGrafana {
    /// A stand-in for one server generation.
    async fn of(generation: Generation) -> Self {
        let g = Self::start().await;
        g.with(|s| s.server = generation);
        g
    }

    /// A panel's query through the data source `uid`.
    fn query(&self, uid: &str) -> Result<(), String> {
        self.with(|g| g.query(uid))
    }

    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let g = FakeGrafana {
            state: Arc::default(),
            base: format!("http://{}", listener.local_addr().unwrap()),
        };
        let app = Router::new().fallback(serve_grafana).with_state(g.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        g
    }

    fn with<T>(&self, f: impl FnOnce(&mut Grafana) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// What Grafana holds, by UID, without the versions a second import bumps.
    fn snapshot(&self) -> Value {
        self.with(|g| {
            let unversioned = |v: &Value| {
                let mut v = v.clone();
                v.as_object_mut().unwrap().remove("version");
                v
            };
            json!({
                "datasources": g.datasources.iter().map(|(k, v)| (k.clone(), unversioned(v))).collect::<BTreeMap<_, _>>(),
                "folders": g.folders.iter().map(|(k, v)| (k.clone(), unversioned(v))).collect::<BTreeMap<_, _>>(),
                "dashboards": g.dashboards.iter().map(|(k, (d, f, _))| (k.clone(), json!({"dashboard": unversioned(d), "folderUid": f}))).collect::<BTreeMap<_, _>>(),
            })
        })
    }

    /// The requests logged from index `from` on.
    fn requests_since(&self, from: usize) -> Vec<String> {
        self.with(|g| {
            g.log[from..]
                .iter()
                .map(|(r, s)| format!("{r} -> {s}"))
                .collect()
        })
    }

    fn assert_no_violations(&self) {
        let v = self.with(|g| g.violations.clone());
        assert!(v.is_empty(), "requests outside Grafana's API: {v:#?}");
    }
}

// ------------------------------------------------------------------ running the real binary

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

async fn valuestream(args: &[&str]) -> Run {
    valuestream_with(args, &[]).await
}

async fn valuestream_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_valuestream"))
            .args(args)
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("GRAFANA_TOKEN")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("valuestream finished within 60 s")
    .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

async fn install(g: &FakeGrafana, extra: &[&str]) -> Run {
    let mut args = vec!["grafana", "install", "--url", &g.base, "--token", TOKEN];
    args.extend_from_slice(extra);
    valuestream(&args).await
}

/// The file names of `dashboards/*.json`.
fn dashboard_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The data source UID a `{type, uid}` reference resolves to, as Grafana resolves a
/// `${name}` / `$name` reference: the current value of that `datasource` variable.
fn resolve(d: &Value, reference: &Value, what: &str) -> String {
    assert_eq!(reference["type"], "prometheus", "{what}: {reference}");
    let uid = reference["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no datasource uid"));
    let var = uid
        .strip_prefix("${")
        .and_then(|s| s.strip_suffix('}'))
        .or_else(|| uid.strip_prefix('$'));
    match var {
        None => uid.to_string(),
        Some(name) => {
            let v = d["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{what}: no variable {name}"));
            assert_eq!(v["type"], "datasource", "{what}: ${name} type");
            assert!(
                v["query"] == "prometheus" || v["query"] == AMAZON,
                "{what}: ${name} lists Prometheus: {}",
                v["query"]
            );
            v["current"]["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: ${name} has no current value"))
                .to_string()
        }
    }
}

/// Every panel, target and query variable of every stored dashboard queries `uid`, and the
/// `$datasource` variable lists that data source's type.
fn assert_bound_to(g: &FakeGrafana, uid: &str) {
    let (dashboards, kind) = g.with(|g| (g.dashboards.clone(), g.datasources[uid]["type"].clone()));
    for (duid, (d, _, _)) in &dashboards {
        let var = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap();
        assert_eq!(
            var["query"], kind,
            "{duid}: $datasource lists the type of {uid}"
        );
        let mut refs = 0;
        for p in d["panels"].as_array().unwrap() {
            let what = format!("{duid} / {}", p["title"]);
            assert_eq!(resolve(d, &p["datasource"], &what), uid, "{what}");
            for t in p["targets"].as_array().unwrap() {
                let what = format!("{what} / {}", t["refId"]);
                assert_eq!(resolve(d, &t["datasource"], &what), uid, "{what}");
                refs += 1;
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                let what = format!("{duid} / ${}", v["name"]);
                assert_eq!(resolve(d, &v["datasource"], &what), uid, "{what}");
            }
        }
        assert!(refs > 0, "{duid}: has targets");
    }
}

// ------------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_file_is_embedded() {
    let embedded: Vec<&str> = valuestream::grafana::dashboards::DASHBOARDS
        .iter()
        .map(|d| d.file)
        .collect();
    assert_eq!(
        embedded,
        dashboard_files(),
        "dashboards/*.json = DASHBOARDS"
    );
    for d in valuestream::grafana::dashboards::DASHBOARDS {
        let on_disk = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("dashboards")
                .join(d.file),
        )
        .unwrap();
        assert!(
            on_disk == d.json,
            "{}: the embedded copy is the file",
            d.file
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_twice_gives_one_datasource_one_folder_and_every_dashboard_once() {
    let g = FakeGrafana::start().await;
    let prom = "http://prometheus.internal:9090";
    let first = install(&g, &["--prometheus-url", prom]).await;
    assert!(first.ok, "{}", first.stderr);
    g.assert_no_violations();
    let n = dashboard_files().len();
    assert_eq!(n, 4);
    let (datasources, folders, dashboards) = g.with(|g| {
        (
            g.datasources.clone(),
            g.folders.clone(),
            g.dashboards.clone(),
        )
    });
    assert_eq!(datasources.len(), 1, "one data source");
    assert_eq!(folders.len(), 1, "one folder");
    assert_eq!(dashboards.len(), n, "every dashboard");
    let (uid, ds) = datasources.iter().next().unwrap();
    assert_eq!(ds["name"], "valuestream Prometheus");
    assert_eq!(ds["url"], prom);
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(ds["access"], "proxy");
    assert_eq!(
        ds["jsonData"],
        json!({"httpMethod": "POST"}),
        "plain: no SigV4"
    );
    let folder = folders.values().next().unwrap();
    assert_eq!(folder["title"], "valuestream");
    for (duid, (_, f, v)) in &dashboards {
        assert_eq!(*f, folder["uid"], "{duid} is in the folder");
        assert_eq!(*v, 1, "{duid} created");
    }
    let mut uids: Vec<&String> = dashboards.keys().collect();
    uids.sort();
    assert_eq!(
        uids,
        [
            "valuestream-correlations",
            "valuestream-delivery",
            "valuestream-dora",
            "valuestream-health"
        ]
    );
    assert_bound_to(&g, uid);
    // What is stored is the file, but for the binding: `$datasource` on the data source.
    for file in valuestream::grafana::dashboards::DASHBOARDS {
        let mut want: Value = serde_json::from_str(file.json).unwrap();
        let (got, _, _) = &dashboards[want["uid"].as_str().unwrap()];
        let mut got = got.clone();
        for m in [&mut want, &mut got] {
            let o = m.as_object_mut().unwrap();
            o.remove("id");
            o.remove("version");
            for v in o["templating"]["list"].as_array_mut().unwrap() {
                if v["name"] == "datasource" {
                    v["current"] = json!({});
                    v["query"] = json!("prometheus");
                }
            }
        }
        assert!(got == want, "{}: stored as in the file", file.file);
    }
    for d in dashboards.keys() {
        assert!(
            first.stdout.contains(d),
            "the summary names {d}: {}",
            first.stdout
        );
    }
    let created = g.requests_since(0);
    assert_eq!(
        created
            .iter()
            .filter(|r| r.starts_with("POST /api/datasources "))
            .count(),
        1
    );
    assert_eq!(
        created
            .iter()
            .filter(|r| r.starts_with("POST /api/folders "))
            .count(),
        1
    );

    // Twice = the same result: found by UID, updated, nothing new.
    let before = g.snapshot();
    let logged = g.with(|g| g.log.len());
    let second = install(&g, &["--prometheus-url", prom]).await;
    assert!(second.ok, "{}", second.stderr);
    g.assert_no_violations();
    let again = g.requests_since(logged);
    assert!(
        !again.iter().any(|r| r.starts_with("POST /api/datasources ")
            || r.starts_with("POST /api/folders ")),
        "the second run creates nothing: {again:#?}"
    );
    assert!(
        again.contains(&format!("PUT /api/datasources/uid/{uid} -> 200")),
        "the data source is updated in place: {again:#?}"
    );
    assert_eq!(
        again
            .iter()
            .filter(|r| r.starts_with("POST /api/dashboards/db "))
            .count(),
        n
    );
    assert_eq!(g.snapshot(), before, "the same state, by UID");
    assert!(g.with(|g| g.dashboards.values().all(|(_, _, v)| *v == 2)));
    assert_bound_to(&g, uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_managed_prometheus_gets_sigv4_and_a_switch_back_drops_it() {
    let g = FakeGrafana::start().await;
    let amp = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0123abcd-4567-89ef-0123-456789abcdef/";
    let run = install(
        &g,
        &[
            "--prometheus-url",
            amp,
            "--sigv4-region",
            "eu-west-1",
            "--folder",
            "DORA metrics",
            "--datasource-name",
            "AMP valuestream",
            "--lookback",
            "30d",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    g.assert_no_violations();
    let ds = g.with(|g| g.datasources.clone());
    assert_eq!(ds.len(), 1);
    let (uid, d) = ds.iter().next().unwrap();
    assert_eq!(d["name"], "AMP valuestream");
    assert_eq!(d["url"], amp);
    assert_eq!(
        d["jsonData"],
        json!({"sigV4Auth": true, "sigV4AuthType": "default", "sigV4Region": "eu-west-1", "httpMethod": "POST"})
    );
    let folders = g.with(|g| g.folders.clone());
    assert_eq!(folders.values().next().unwrap()["title"], "DORA metrics");
    assert_bound_to(&g, uid);
    for (duid, (dash, _, _)) in g.with(|g| g.dashboards.clone()) {
        let lb = dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "lookback")
            .unwrap()
            .clone();
        assert_eq!(lb["query"], "30d", "{duid}: --lookback");
    }

    // The same name pointed at a self-hosted Prometheus: the same data source, plain again.
    let run = install(
        &g,
        &[
            "--prometheus-url",
            "http://prometheus:9090",
            "--folder",
            "DORA metrics",
            "--datasource-name",
            "AMP valuestream",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    g.assert_no_violations();
    let ds = g.with(|g| g.datasources.clone());
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[uid]["jsonData"], json!({"httpMethod": "POST"}));
    assert_eq!(ds[uid]["url"], "http://prometheus:9090");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datasource_and_folder_made_by_hand_are_found_by_name_and_title() {
    let g = FakeGrafana::start().await;
    g.with(|g| {
        g.datasources.insert(
            "P1809F7CD0C75ACF3".into(),
            json!({"id": 7, "uid": "P1809F7CD0C75ACF3", "orgId": 1, "name": "valuestream Prometheus",
                   "type": "prometheus", "access": "proxy", "url": "http://old:9090", "isDefault": true,
                   "jsonData": {"timeInterval": "15s"}, "version": 3}),
        );
        g.folders.insert(
            "abc123".into(),
            json!({"id": 8, "uid": "abc123", "title": "valuestream", "version": 1}),
        );
        g.next_id = 10;
    });
    let run = install(&g, &["--prometheus-url", "http://prometheus:9090"]).await;
    assert!(run.ok, "{}", run.stderr);
    g.assert_no_violations();
    let (ds, folders, dashboards) = g.with(|g| {
        (
            g.datasources.clone(),
            g.folders.clone(),
            g.dashboards.clone(),
        )
    });
    assert_eq!(ds.len(), 1, "no second data source");
    let d = &ds["P1809F7CD0C75ACF3"];
    assert_eq!(d["url"], "http://prometheus:9090");
    assert_eq!(d["isDefault"], true, "still the default");
    assert_eq!(
        d["jsonData"],
        json!({"timeInterval": "15s", "httpMethod": "POST"}),
        "other settings kept"
    );
    assert_eq!(folders.len(), 1, "no second folder");
    assert!(dashboards.values().all(|(_, f, _)| f == "abc123"));
    assert_bound_to(&g, "P1809F7CD0C75ACF3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_prometheus_url_the_datasource_must_exist_and_is_kept() {
    let g = FakeGrafana::start().await;
    let run = install(&g, &[]).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("no data source named \"valuestream Prometheus\"")
            && run.stderr.contains("--prometheus-url"),
        "{}",
        run.stderr
    );
    assert!(g.with(|g| g.folders.is_empty() && g.dashboards.is_empty()));

    let existing = json!({"id": 1, "uid": "prom", "orgId": 1, "name": "Prometheus", "type": "prometheus",
                          "access": "proxy", "url": "http://p:9090", "jsonData": {}, "version": 1});
    g.with(|g| g.datasources.insert("prom".into(), existing.clone()));
    let run = install(&g, &["--datasource-name", "Prometheus"]).await;
    assert!(run.ok, "{}", run.stderr);
    g.assert_no_violations();
    assert_eq!(
        g.with(|g| g.datasources["prom"].clone()),
        existing,
        "untouched"
    );
    assert!(!g.requests_since(0).iter().any(|r| r.starts_with("PUT ")));
    assert_bound_to(&g, "prom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_clear_error_and_a_failing_exit() {
    let g = FakeGrafana::start().await;
    let run = valuestream(&[
        "grafana",
        "install",
        "--url",
        &g.base,
        "--token",
        "glsa_wrong",
        "--prometheus-url",
        "http://prometheus:9090",
    ])
    .await;
    assert!(!run.ok, "a non-zero exit");
    assert!(
        run.stderr.contains("the token was refused") && run.stderr.contains("401"),
        "{}",
        run.stderr
    );
    assert!(g.with(|g| g.datasources.is_empty() && g.folders.is_empty() && g.dashboards.is_empty()));
    assert_eq!(g.requests_since(0).len(), 1, "stops at the first refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_grafana_token_out_of_the_process_list() {
    let g = FakeGrafana::start().await;
    let args = [
        "grafana",
        "install",
        "--url",
        &g.base,
        "--prometheus-url",
        "http://prometheus:9090",
    ];
    let run = valuestream_with(&args, &[("GRAFANA_TOKEN", TOKEN)]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(g.with(|g| g.datasources.len() == 1 && !g.dashboards.is_empty()));
    // The value is what Grafana checks: a wrong one in the variable is refused as a flag's is.
    let run = valuestream_with(&args, &[("GRAFANA_TOKEN", "glsa_wrong")]).await;
    assert!(
        !run.ok && run.stderr.contains("the token was refused"),
        "{}",
        run.stderr
    );
    // Neither flag nor variable: refused before anything is sent; --help names the variable.
    let before = g.requests_since(0).len();
    let run = valuestream_with(&args, &[]).await;
    assert!(!run.ok && run.stderr.contains("--token"), "{}", run.stderr);
    let help = valuestream(&["grafana", "install", "--help"]).await;
    assert!(
        help.stdout.contains("[env: GRAFANA_TOKEN"),
        "{}",
        help.stdout
    );
    assert_eq!(
        g.requests_since(0).len(),
        before,
        "nothing sent without a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_folder_name_is_reported_with_grafanas_409() {
    let g = FakeGrafana::start().await;
    // A dashboard titled "valuestream" in the General folder: Grafana refuses a folder of that name.
    g.with(|g| {
        g.dashboards.insert(
            "other".into(),
            (
                json!({"id": 1, "uid": "other", "title": "valuestream"}),
                String::new(),
                1,
            ),
        )
    });
    let run = install(&g, &["--prometheus-url", "http://prometheus:9090"]).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("POST /api/folders: Grafana answered 409")
            && run.stderr.contains("same name already exists"),
        "{}",
        run.stderr
    );
    g.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_grafana_fails_within_the_timeout() {
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let run = valuestream(&["grafana", "install", "--url", &url, "--token", TOKEN]).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains(&format!("cannot reach Grafana at {url}")),
        "{}",
        run.stderr
    );

    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let run = valuestream(&[
        "grafana",
        "install",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--timeout-secs",
        "1",
    ])
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("did not answer"), "{}", run.stderr);
    assert!(
        run.took < Duration::from_secs(10),
        "bounded: {:?}",
        run.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_refused_before_anything_is_sent() {
    let g = FakeGrafana::start().await;
    for (extra, flag) in [
        (
            vec!["--prometheus-url", "prometheus:9090"],
            "--prometheus-url",
        ),
        (
            vec![
                "--prometheus-url",
                "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/",
            ],
            "--sigv4-region",
        ),
        (
            vec![
                "--prometheus-url",
                "http://p:9090",
                "--sigv4-region",
                "Ireland",
            ],
            "--sigv4-region",
        ),
        (vec!["--lookback", "ninety days"], "--lookback"),
    ] {
        let run = install(&g, &extra).await;
        assert!(!run.ok, "{extra:?}");
        assert!(
            run.stderr.contains(&format!("invalid {flag}")),
            "{extra:?}: {}",
            run.stderr
        );
    }
    assert!(g.requests_since(0).is_empty(), "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_command_and_its_flags() {
    let top = valuestream(&["--help"]).await;
    assert!(top.ok);
    assert!(top.stdout.contains("grafana"), "{}", top.stdout);
    let help = valuestream(&["grafana", "install", "--help"]).await;
    assert!(help.ok, "{}", help.stderr);
    for flag in [
        "--url",
        "--token",
        "--prometheus-url",
        "--sigv4-region",
        "--sigv4-auth-type",
        "--workspace-id",
        "--region",
        "--folder",
        "--datasource-name",
        "--lookback",
        "--timeout-secs",
        "--skip-health-check",
    ] {
        assert!(help.stdout.contains(flag), "{flag}: {}", help.stdout);
    }
}

/// A YAML file as JSON, through PyYAML (in .venv, installed with cfn-lint by
/// scripts/install-test-deps).
fn yaml(text: &str) -> Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PyYAML is needed to read the provisioning examples (scripts/install-test-deps installs \
         it into .venv; put .venv/bin on PATH): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn provisioning_examples_give_what_the_command_installs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/provisioning");
    let text = std::fs::read_to_string(dir.join("datasources.yaml")).unwrap();
    let ds = yaml(&text);
    assert_eq!(ds["apiVersion"], 1);
    let plain = &ds["datasources"][0];
    assert_eq!(plain["type"], "prometheus");
    assert_eq!(plain["access"], "proxy");
    assert_eq!(plain["jsonData"], json!({"httpMethod": "POST"}));
    // The same uid as `grafana install` gives the same name: either way, one data source.
    assert_eq!(
        plain["uid"].as_str().unwrap(),
        valuestream::grafana::uid_for(plain["name"].as_str().unwrap())
    );
    // The commented Amazon Managed Service for Prometheus example, uncommented, has the
    // SigV4 settings the command sets.
    let start = text
        .find("  # - name: valuestream AMP")
        .expect("the AMP example");
    let uncommented: String = text[start..]
        .lines()
        .map(|l| l.replacen("  # ", "  ", 1) + "\n")
        .collect();
    let amp = yaml(&format!("datasources:\n{uncommented}"));
    let amp = &amp["datasources"][0];
    assert_eq!(amp["type"], "prometheus");
    assert_eq!(amp["access"], "proxy");
    assert_eq!(
        amp["jsonData"],
        json!({"httpMethod": "POST", "sigV4Auth": true, "sigV4AuthType": "default", "sigV4Region": "eu-west-1"})
    );
    assert!(amp["url"]
        .as_str()
        .unwrap()
        .starts_with("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/"));

    let providers = yaml(&std::fs::read_to_string(dir.join("dashboards.yaml")).unwrap());
    assert_eq!(providers["apiVersion"], 1);
    let p = &providers["providers"][0];
    assert_eq!(p["type"], "file");
    // The folder `grafana install` uses by default.
    assert_eq!(p["folder"], "valuestream");
    assert_eq!(p["folderUid"], valuestream::grafana::uid_for("valuestream"));
    assert!(p["options"]["path"].as_str().is_some_and(|s| !s.is_empty()));
    // File provisioning reads the dashboard files as they are: no import-time inputs, and every
    // panel on the `$datasource` variable.
    for d in valuestream::grafana::dashboards::DASHBOARDS {
        let v: Value = serde_json::from_str(d.json).unwrap();
        assert!(v.get("__inputs").is_none(), "{}", d.file);
        for panel in v["panels"].as_array().unwrap() {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", d.file);
        }
    }
}

// ------------------------------------------------------------------ server generations

/// `grafana install` for Amazon Managed Service for Prometheus (`AMP`) on `g`.
async fn install_amp(g: &FakeGrafana, extra: &[&str]) -> Run {
    let mut args = vec!["--prometheus-url", AMP, "--sigv4-region", "eu-west-1"];
    args.extend_from_slice(extra);
    install(g, &args).await
}

/// The only data source `g` holds: its uid and model.
fn only_datasource(g: &FakeGrafana) -> (String, Value) {
    let ds = g.with(|g| g.datasources.clone());
    assert_eq!(ds.len(), 1, "one data source: {ds:#?}");
    let (uid, d) = ds.into_iter().next().unwrap();
    (uid, d)
}

/// One install on a fresh stand-in of `generation`: the data source it made, checked to query.
async fn installs_and_queries(generation: Generation, kind: &str, auth: &str) {
    let what = format!("{generation:?}");
    let g = FakeGrafana::of(generation).await;
    let run = install_amp(&g, &[]).await;
    assert!(run.ok, "{what}: {}", run.stderr);
    g.assert_no_violations();
    let (uid, d) = only_datasource(&g);
    assert_eq!(d["type"], kind, "{what}");
    assert_eq!(
        d["jsonData"],
        json!({"httpMethod": "POST", "sigV4Auth": true, "sigV4AuthType": auth, "sigV4Region": "eu-west-1"}),
        "{what}"
    );
    assert_eq!(g.query(&uid), Ok(()), "{what}: a panel's query works");
    let log = g.requests_since(0);
    for r in [
        "GET /api/frontend/settings -> 200".to_string(),
        format!("GET /api/datasources/uid/{uid}/health -> 200"),
    ] {
        assert!(log.contains(&r), "{what}: {r}: {log:#?}");
    }
    assert!(
        run.stdout
            .contains(&format!("type {kind}, SigV4 with {auth}")),
        "{what}: the summary says what was chosen: {}",
        run.stdout
    );
    assert_bound_to(&g, &uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_hosted_grafana_10_and_11_sign_with_the_default_chain() {
    for generation in [Generation::self_hosted_10(), Generation::self_hosted_11()] {
        installs_and_queries(generation, "prometheus", "default").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_managed_grafana_9_4_and_10_4_sign_with_the_workspace_role() {
    for generation in [Generation::amg_9_4(), Generation::amg_10_4()] {
        installs_and_queries(generation, "prometheus", "ec2_iam_role").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_managed_grafana_12_gets_the_amazon_prometheus_plugin_type() {
    installs_and_queries(Generation::amg_12(), AMAZON, "ec2_iam_role").await;
    // What the core type would give there: saved, and every query unsigned.
    let g = FakeGrafana::of(Generation::amg_12()).await;
    g.with(|g| {
        g.datasources.insert(
            "core".into(),
            json!({"uid": "core", "name": "core", "type": "prometheus", "url": AMP,
                   "jsonData": {"sigV4Auth": true, "sigV4AuthType": "ec2_iam_role", "sigV4Region": "eu-west-1"}}),
        )
    });
    let e = g.query("core").unwrap_err();
    assert!(e.contains("403"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_13_migrated_our_datasource_and_a_rerun_keeps_its_type_and_uid() {
    let g = FakeGrafana::of(Generation::self_hosted_11()).await;
    let first = install_amp(&g, &[]).await;
    assert!(first.ok, "{}", first.stderr);
    let (uid, d) = only_datasource(&g);
    assert_eq!(d["type"], "prometheus");
    g.with(Grafana::upgrade_to_13_and_migrate);
    let (_, migrated) = only_datasource(&g);
    assert_eq!(migrated["type"], AMAZON);
    assert_eq!(g.query(&uid), Ok(()), "the migrated data source queries");

    let logged = g.with(|g| g.log.len());
    let second = install_amp(&g, &[]).await;
    assert!(second.ok, "no WrongDatasourceType: {}", second.stderr);
    g.assert_no_violations();
    let (uid2, d) = only_datasource(&g);
    assert_eq!(uid2, uid, "the same uid");
    assert_eq!(d["type"], AMAZON, "the type Grafana gave it, kept");
    assert_eq!(d["jsonData"]["sigV4AuthType"], "default");
    let again = g.requests_since(logged);
    assert!(
        again.contains(&format!("PUT /api/datasources/uid/{uid} -> 200")),
        "{again:#?}"
    );
    assert!(!again
        .iter()
        .any(|r| r.starts_with("POST /api/datasources ")));
    assert_eq!(g.query(&uid), Ok(()));
    assert_bound_to(&g, &uid);

    // Without --prometheus-url, the migrated data source is found and kept as it is.
    let run = install(&g, &[]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("type {AMAZON}")),
        "{}",
        run.stdout
    );
    assert_bound_to(&g, &uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_13_without_the_plugin_is_told_to_install_it() {
    let g = FakeGrafana::of(Generation {
        plugin: false,
        ..Generation::grafana_13()
    })
    .await;
    let run = install_amp(&g, &[]).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("grafana-amazonprometheus-datasource, which is not installed"),
        "{}",
        run.stderr
    );
    assert!(g.with(|g| g.datasources.is_empty()));
}

/// The data source the command wrote before it read the server: core type, `default` provider.
fn old_datasource() -> Value {
    json!({"id": 1, "uid": "valuestream-prometheus", "orgId": 1, "name": "valuestream Prometheus",
           "type": "prometheus", "access": "proxy", "url": AMP, "basicAuth": false, "isDefault": false,
           "jsonData": {"httpMethod": "POST", "sigV4Auth": true, "sigV4AuthType": "default", "sigV4Region": "eu-west-1"},
           "version": 1})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_default_only_datasource_fails_on_amazon_managed_grafana_and_a_rerun_fixes_it() {
    let migrated = {
        let mut d = old_datasource();
        d["type"] = json!(AMAZON);
        d
    };
    for (generation, old, refusal) in [
        (
            Generation::amg_9_4(),
            old_datasource(),
            "attempting to use an auth type for SigV4 that is not allowed",
        ),
        (
            Generation::amg_10_4(),
            old_datasource(),
            "attempting to use an auth type for SigV4 that is not allowed",
        ),
        // The core type on AMG 12: unsigned.
        (Generation::amg_12(), old_datasource(), "403 Forbidden"),
        // Moved to the plugin's type, as Grafana's migration does: the provider is refused.
        (
            Generation::amg_12(),
            migrated.clone(),
            "trying to use non-allowed auth method default",
        ),
    ] {
        let what = format!("{generation:?} {}", old["type"]);
        let g = FakeGrafana::of(generation).await;
        g.with(|g| g.datasources.insert("valuestream-prometheus".into(), old));
        // What the old behaviour left: a saved data source whose every query is refused.
        let e = g.query("valuestream-prometheus").unwrap_err();
        assert!(e.contains(refusal), "{what}: {e}");
        // Asking for that provider again is refused before anything is written.
        let run = install_amp(&g, &["--sigv4-auth-type", "default"]).await;
        assert!(!run.ok, "{what}");
        assert!(
            run.stderr.contains("invalid --sigv4-auth-type")
                && run.stderr.contains("does not allow \"default\"")
                && run.stderr.contains("ec2_iam_role"),
            "{what}: {}",
            run.stderr
        );
        assert!(
            !g.requests_since(0).iter().any(|r| r.starts_with("PUT ")),
            "{what}"
        );
        // The command as it is now repairs it in place.
        let run = install_amp(&g, &[]).await;
        assert!(run.ok, "{what}: {}", run.stderr);
        g.assert_no_violations();
        let (uid, d) = only_datasource(&g);
        assert_eq!(uid, "valuestream-prometheus", "{what}");
        assert_eq!(d["jsonData"]["sigV4AuthType"], "ec2_iam_role", "{what}");
        let kind = if g.with(|g| g.server.plugin) {
            AMAZON
        } else {
            "prometheus"
        };
        assert_eq!(d["type"], kind, "{what}");
        assert_eq!(g.query(&uid), Ok(()), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datasource_grafana_cannot_query_fails_the_install_with_grafanas_message() {
    // A Grafana that publishes no providers (so the command assumes Grafana's default list)
    // but allows only the workspace role: the health check catches the refusal.
    let g = FakeGrafana::of(Generation::amg_10_4()).await;
    let real = g.base.clone();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", proxy.local_addr().unwrap());
    let app = Router::new().fallback(move |req: Request| {
        let real = real.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
            let url = format!("{real}{}", parts.uri);
            let mut r = reqwest::Client::new().request(parts.method.clone(), &url);
            for (k, v) in &parts.headers {
                if k != header::HOST {
                    r = r.header(k, v);
                }
            }
            let resp = r.body(bytes).send().await.unwrap();
            let status = resp.status();
            let mut body: Value =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
            if parts.uri.path() == "/api/frontend/settings" {
                body.as_object_mut()
                    .unwrap()
                    .remove("awsAllowedAuthProviders");
            }
            answer(status, body)
        }
    });
    tokio::spawn(async move { axum::serve(proxy, app).await.unwrap() });
    let run = valuestream(&[
        "grafana",
        "install",
        "--url",
        &base,
        "--token",
        TOKEN,
        "--prometheus-url",
        AMP,
        "--sigv4-region",
        "eu-west-1",
    ])
    .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("Grafana cannot query it")
            && run
                .stderr
                .contains("attempting to use an auth type for SigV4 that is not allowed"),
        "{}",
        run.stderr
    );
    assert!(
        g.with(|g| g.dashboards.is_empty()),
        "nothing else installed"
    );
    let run = valuestream(&[
        "grafana",
        "install",
        "--url",
        &base,
        "--token",
        TOKEN,
        "--prometheus-url",
        AMP,
        "--sigv4-region",
        "eu-west-1",
        "--skip-health-check",
    ])
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(g.with(|g| g.dashboards.len()), dashboard_files().len());
}

// ------------------------------------------------------------------ --workspace-id

async fn install_workspace(g: &FakeGrafana, extra: &[&str]) -> Run {
    let mut args = vec![
        "grafana",
        "install",
        "--workspace-id",
        WORKSPACE,
        "--url",
        &g.base,
    ];
    args.extend_from_slice(extra);
    valuestream_with(
        &args,
        &[
            ("AWS_ENDPOINT_URL_GRAFANA", g.base.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIDVALUESTREAMTEST"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_id_gives_a_short_lived_token_that_is_deleted_after_the_install() {
    let g = FakeGrafana::of(Generation::amg_10_4()).await;
    let run = install_workspace(
        &g,
        &[
            "--region",
            "eu-west-1",
            "--prometheus-url",
            AMP,
            "--sigv4-region",
            "eu-west-1",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    g.assert_no_violations();
    let (accounts, tokens, deleted, calls, live) = g.with(|g| {
        (
            g.aws.accounts.clone(),
            g.aws.tokens.clone(),
            g.aws.deleted.clone(),
            g.aws.calls.clone(),
            g.live_tokens.clone(),
        )
    });
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["name"], "valuestream");
    assert_eq!(accounts[0]["grafanaRole"], "ADMIN");
    assert_eq!(tokens.len(), 1);
    let (token_id, token) = tokens.iter().next().unwrap();
    assert_eq!(token["secondsToLive"], 600);
    assert_eq!(
        deleted,
        std::slice::from_ref(token_id),
        "the token made is deleted"
    );
    assert!(live.is_empty(), "no token left behind");
    let sa = accounts[0]["id"].as_str().unwrap();
    assert_eq!(
        calls,
        [
            format!("GET /workspaces/{WORKSPACE} -> 200"),
            format!("GET /workspaces/{WORKSPACE}/serviceaccounts -> 200"),
            format!("POST /workspaces/{WORKSPACE}/serviceaccounts -> 200"),
            format!("POST /workspaces/{WORKSPACE}/serviceaccounts/{sa}/tokens -> 200"),
            format!("DELETE /workspaces/{WORKSPACE}/serviceaccounts/{sa}/tokens/{token_id} -> 200"),
        ]
    );
    // The install ran with that token, on the workspace's Grafana.
    let (uid, d) = only_datasource(&g);
    assert_eq!(d["jsonData"]["sigV4AuthType"], "ec2_iam_role");
    assert_eq!(g.with(|g| g.dashboards.len()), dashboard_files().len());
    assert_bound_to(&g, &uid);
    assert!(
        run.stdout.contains("service account \"valuestream\"")
            && run.stdout.contains("created, used and deleted"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains(token["key"].as_str().unwrap()),
        "the key is never printed"
    );

    // A second run reuses the service account (AWS_REGION gives the region).
    let run = install_workspace(
        &g,
        &["--prometheus-url", AMP, "--sigv4-region", "eu-west-1"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    g.assert_no_violations();
    let (accounts, tokens, deleted, live) = g.with(|g| {
        (
            g.aws.accounts.clone(),
            g.aws.tokens.clone(),
            g.aws.deleted.clone(),
            g.live_tokens.clone(),
        )
    });
    assert_eq!(accounts.len(), 1, "reused");
    assert_eq!(tokens.len(), 2);
    assert_eq!(deleted.len(), 2);
    assert!(live.is_empty());
    assert!(
        run.stdout.contains("found, kept as it is"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workspace_install_still_deletes_its_token() {
    let g = FakeGrafana::of(Generation::amg_12()).await;
    // A data source of our name and another type: the install fails after the token exists.
    g.with(|g| {
        g.datasources.insert(
            "loki".into(),
            json!({"id": 1, "uid": "loki", "name": "valuestream Prometheus", "type": "loki",
                   "url": "http://loki:3100", "jsonData": {}, "version": 1}),
        )
    });
    let run = install_workspace(
        &g,
        &["--prometheus-url", AMP, "--sigv4-region", "eu-west-1"],
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("is of type \"loki\""), "{}", run.stderr);
    let (tokens, deleted, live) = g.with(|g| {
        (
            g.aws.tokens.clone(),
            g.aws.deleted.clone(),
            g.live_tokens.clone(),
        )
    });
    assert_eq!(tokens.len(), 1);
    assert_eq!(deleted.len(), 1, "deleted after the failure");
    assert!(live.is_empty());

    // An unknown workspace: AWS's error, and no token made.
    let run = valuestream_with(
        &[
            "grafana",
            "install",
            "--workspace-id",
            "g-fedcba9876",
            "--url",
            &g.base,
        ],
        &[
            ("AWS_ENDPOINT_URL_GRAFANA", g.base.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIDVALUESTREAMTEST"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ],
    )
    .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("DescribeWorkspace g-fedcba9876")
            && run.stderr.contains("ResourceNotFoundException"),
        "{}",
        run.stderr
    );
    assert_eq!(g.with(|g| g.aws.tokens.len()), 1, "no second token");

    // A malformed workspace ID is refused before anything is sent.
    let before = g.with(|g| g.aws.calls.len());
    let run = install_workspace(&g, &["--region", "Ireland"]).await;
    assert!(
        !run.ok && run.stderr.contains("invalid --region"),
        "{}",
        run.stderr
    );
    assert_eq!(g.with(|g| g.aws.calls.len()), before);
}
