//! Distinct signed GitHub deliveries for the benches, made as scripts/bench/deliveries.py makes
//! them for the load test: per repository, issue opened → PR opened → workflow run requested →
//! completed → PR merged → deployment → deployment succeeded → issue closed.

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use valuestream::sources::verify::hmac_sha256_hex;

pub const SECRET: &str = "bench-secret";

fn fixture(rel: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(rel);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

pub struct Deliveries {
    templates: Vec<(&'static str, Value)>,
}

/// One delivery: its event, id and compact body.
pub struct Delivery {
    pub event: &'static str,
    pub id: String,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn signature(&self) -> String {
        format!("sha256={}", hmac_sha256_hex(SECRET, &self.body))
    }

    pub fn request(&self) -> Request<Body> {
        Request::post("/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", self.event)
            .header("x-github-delivery", &self.id)
            .header("x-hub-signature-256", self.signature())
            .body(Body::from(self.body.clone()))
            .unwrap()
    }
}

impl Deliveries {
    pub fn new() -> Self {
        Deliveries {
            templates: vec![
                ("issues", fixture("issues/opened.payload.json")),
                ("pull_request", fixture("pull_request/opened.payload.json")),
                (
                    "workflow_run",
                    fixture("workflow_run/requested.payload.json"),
                ),
                (
                    "workflow_run",
                    fixture("workflow_run/completed.payload.json"),
                ),
                ("pull_request", fixture("pull_request/closed.payload.json")),
                ("deployment", fixture("deployment/payload.json")),
                (
                    "deployment_status",
                    fixture("deployment_status/payload.json"),
                ),
                ("issues", fixture("issues/closed.derived.payload.json")),
            ],
        }
    }

    #[allow(dead_code)]
    pub fn per_repository(&self) -> usize {
        self.templates.len()
    }

    /// The `i`-th delivery of the sequence (repository `i / 8`, step `i % 8`).
    pub fn get(&self, i: usize) -> Delivery {
        let (repo, step) = (i / self.templates.len(), i % self.templates.len());
        let (event, template) = &self.templates[step];
        let mut v = template.clone();
        v["repository"]["full_name"] = json!(format!("bench-org/repo-{repo}"));
        v["repository"]["name"] = json!(format!("repo-{repo}"));
        v["repository"]["id"] = json!(10_000_000 + repo);
        let branch = format!("feature/issue-1-repo-{repo}");
        match *event {
            "issues" => {
                v["issue"]["number"] = json!(1);
                v["issue"]["id"] = json!(20_000_000 + repo);
            }
            "pull_request" => {
                let pr = &mut v["pull_request"];
                pr["number"] = json!(2);
                pr["id"] = json!(30_000_000 + repo);
                pr["head"]["ref"] = json!(branch);
                pr["body"] = json!("Fixes #1");
                if step == 4 {
                    pr["merged"] = json!(true);
                    if pr["closed_at"].is_null() {
                        pr["closed_at"] = json!("2019-05-15T15:21:18Z");
                    }
                    pr["merged_at"] = pr["closed_at"].clone();
                }
            }
            "workflow_run" => {
                v["workflow_run"]["id"] = json!(40_000_000 + repo);
                v["workflow_run"]["head_branch"] = json!(branch);
            }
            _ => {
                v["deployment"]["id"] = json!(50_000_000 + repo);
                if *event == "deployment_status" {
                    v["deployment_status"]["id"] = json!(60_000_000 + repo);
                }
            }
        }
        Delivery {
            event,
            id: format!("bench-{i}"),
            body: serde_json::to_vec(&v).unwrap(),
        }
    }
}
