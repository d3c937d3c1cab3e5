//! Recorded deliveries: the two file shapes `replay` reads, and how they become HTTP requests.
//!
//! 1. A recorded delivery: `{"source": "github", "headers": {"X-GitHub-Event": "issues", ...},
//!    "body": <JSON value or string>}`. A string body is sent byte for byte (keep it a string
//!    when the headers carry a signature); a JSON body is sent compact.
//! 2. An API Gateway HTTP API (payload v2) event, as in `events/`: `rawPath`
//!    `/webhooks/<source>`, `headers`, `body`, `isBase64Encoded`, `rawQueryString`.

use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub file: PathBuf,
    pub source: String,
    pub headers: Vec<(String, String)>,
    pub query: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}: {1}")]
    Read(PathBuf, String),
    #[error("{0}: neither a recorded delivery nor an API Gateway v2 event: {1}")]
    Shape(PathBuf, String),
}

/// Every `.json` file under `paths` (directories in file-name order, recursively).
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReplayError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| ReplayError::Read(p.clone(), e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
            out.extend(
                files
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|x| x == "json")),
            );
            out.extend(collect(&dirs)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub fn load(file: &Path) -> Result<Recorded, ReplayError> {
    let text =
        std::fs::read(file).map_err(|e| ReplayError::Read(file.to_path_buf(), e.to_string()))?;
    parse_bytes(file, &text)
}

/// Parses the bytes of a file (`file` names it in errors): JSON, then one of the two shapes.
pub fn parse_bytes(file: &Path, text: &[u8]) -> Result<Recorded, ReplayError> {
    let v: Value = serde_json::from_slice(text)
        .map_err(|e| ReplayError::Shape(file.to_path_buf(), e.to_string()))?;
    parse(file, &v)
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.to_ascii_lowercase(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse(file: &Path, v: &Value) -> Result<Recorded, ReplayError> {
    let shape = |why: &str| ReplayError::Shape(file.to_path_buf(), why.to_string());
    if let Some(raw_path) = v.get("rawPath").and_then(Value::as_str) {
        let source = raw_path
            .trim_end_matches('/')
            .strip_prefix("/webhooks/")
            .ok_or_else(|| shape("rawPath is not /webhooks/<source>"))?
            .to_string();
        let body = v.get("body").and_then(Value::as_str).unwrap_or_default();
        let body = if v
            .get("isBase64Encoded")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| shape(&format!("body is not base64: {e}")))?
        } else {
            body.as_bytes().to_vec()
        };
        let query = v
            .get("rawQueryString")
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
            .map(str::to_string);
        return Ok(Recorded {
            file: file.to_path_buf(),
            source,
            headers: headers_of(&v["headers"]),
            query,
            body,
        });
    }
    let source = v
        .get("source")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no \"source\" and no \"rawPath\""))?
        .to_string();
    let body = match v.get("body") {
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(other) => serde_json::to_vec(other).expect("JSON value serializes"),
        None => return Err(shape("no \"body\"")),
    };
    Ok(Recorded {
        file: file.to_path_buf(),
        source,
        headers: headers_of(&v["headers"]),
        query: None,
        body,
    })
}
