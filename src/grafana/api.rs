//! The Grafana HTTP API client: JSON requests with a service account token (`Authorization:
//! Bearer`), every request bounded by a timeout, and Grafana's answers turned into
//! [`GrafanaError`]s that say what to do (a refused token, a missing permission, an unreachable
//! URL, a URL that is not Grafana).

use super::GrafanaError;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A Grafana instance (or Amazon Managed Grafana workspace) reached with one token.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    timeout: Duration,
}

/// An answer Grafana gave with a status the caller handles itself (404, 409, 412, ...).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Grafana's `message` field, or the whole body.
    pub fn message(&self) -> String {
        match self.body.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => self.body.to_string(),
        }
    }
}

impl Api {
    /// `base` is Grafana's root URL (`https://g-123.grafana-workspace.eu-west-1.amazonaws.com`).
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, GrafanaError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| GrafanaError::Client(e.to_string()))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            timeout,
        })
    }

    /// Sends one request and returns Grafana's answer whatever its status, except the ones no
    /// caller can handle: 401 (the token), 403 (its permissions), 5xx, and answers that are not
    /// JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GrafanaError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).expect("a JSON value serializes"));
        }
        let what = format!("{method} {path}");
        let resp = req.send().await.map_err(|e| self.transport(&what, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(&what, e))?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| GrafanaError::NotGrafana {
                base: self.base.clone(),
                what: what.clone(),
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            })?
        };
        let answer = Answer { status, body };
        match status {
            StatusCode::UNAUTHORIZED => Err(GrafanaError::TokenRefused {
                base: self.base.clone(),
                message: answer.message(),
            }),
            StatusCode::FORBIDDEN => Err(GrafanaError::Forbidden {
                what,
                message: answer.message(),
            }),
            s if s.is_server_error() => Err(GrafanaError::Status {
                what,
                status: s.as_u16(),
                message: answer.message(),
            }),
            _ => Ok(answer),
        }
    }

    /// As [`Api::send`], and any status but 2xx is an error.
    pub async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GrafanaError> {
        let what = format!("{method} {path}");
        let answer = self.send(method, path, body).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(GrafanaError::Status {
                what,
                status: answer.status.as_u16(),
                message: answer.message(),
            })
        }
    }

    /// `GET path`: its body, `None` on 404 (absent), any other status but 2xx an error.
    pub async fn get_optional(&self, path: &str) -> Result<Option<Value>, GrafanaError> {
        let answer = self.send(Method::GET, path, None).await?;
        match answer.status {
            s if s.is_success() => Ok(Some(answer.body)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(GrafanaError::Status {
                what: format!("GET {path}"),
                status: s.as_u16(),
                message: answer.message(),
            }),
        }
    }

    fn transport(&self, what: &str, e: reqwest::Error) -> GrafanaError {
        if e.is_timeout() {
            GrafanaError::Timeout {
                base: self.base.clone(),
                what: what.to_string(),
                secs: self.timeout.as_secs_f64(),
            }
        } else {
            GrafanaError::Unreachable {
                base: self.base.clone(),
                reason: error_chain(&e),
            }
        }
    }
}

/// The error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
