//! GitHub: `X-Hub-Signature-256` verification and the translation of `issues`, `pull_request`, `pull_request_review`,
//! `workflow_run`, `workflow_job`, `deployment`, `deployment_status` and `push` deliveries into
//! normalized events. The payload model (only the fields we use) and its mapping to
//! semantic-convention attributes live here and nowhere else.

mod mapping;
mod payload;

use crate::config::Config;
use crate::model::{Input, Repo};
use crate::sources::{
    authenticate_with, no_options, parse_json, signing_secret, verify, Delivery, Ignored, Setting,
    Source, SourceEntry, SourceError, Translated, Translation,
};
use mapping::Ctx;
use payload::Envelope;

pub struct GitHub;

const SOURCE: &str = "github";

/// The registry's entry for GitHub (`src/sources/registry.rs` lists it).
pub const ENTRY: SourceEntry = SourceEntry {
    name: SOURCE,
    route: "/webhooks/github",
    secret: Setting {
        var: "VALUESTREAM_GITHUB_SECRET",
        doc: "GitHub webhook secret (X-Hub-Signature-256, HMAC-SHA256)",
    },
    settings: &[],
    options: no_options,
    source: &GitHub,
};

impl Source for GitHub {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        authenticate_with(
            &ENTRY,
            d.header("x-hub-signature-256"),
            config,
            |secret, presented| {
                presented
                    .strip_prefix("sha256=")
                    .is_some_and(|hex| verify::hmac_sha256_matches(secret, d.body, hex))
            },
        )
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let delivery_id = d
            .header("x-github-delivery")
            .map(str::to_string)
            .unwrap_or_else(|| crate::model::ids::short_hash(d.body));
        let event = d
            .header("x-github-event")
            .ok_or_else(|| {
                SourceError::Malformed("github: X-GitHub-Event header is missing".into())
            })?
            .to_string();
        let translation = translate(&event, d.body, config)?;
        Ok(Translated {
            delivery_id,
            translation,
        })
    }

    fn sign(&self, body: &[u8], config: &Config) -> Vec<(String, String)> {
        signing_secret(&ENTRY, config)
            .map(|s| {
                vec![(
                    "x-hub-signature-256".into(),
                    format!("sha256={}", verify::hmac_sha256_hex(s, body)),
                )]
            })
            .unwrap_or_default()
    }
}

fn ignored(why: Ignored) -> Result<Translation, SourceError> {
    Ok(Translation::Ignored(why))
}

fn translate(event: &str, body: &[u8], config: &Config) -> Result<Translation, SourceError> {
    const USED: &[&str] = &[
        "ping",
        "issues",
        "pull_request",
        "pull_request_review",
        "workflow_run",
        "workflow_job",
        "deployment",
        "deployment_status",
        "push",
    ];
    if !USED.contains(&event) {
        // Checked before parsing: every other event GitHub can send is answered "ignored".
        return ignored(Ignored::unused("github event", event));
    }
    let env: Envelope = parse_json(SOURCE, body)?;
    if event == "ping" {
        return Ok(Translation::Inputs(Vec::new()));
    }
    let action = env.action.clone().unwrap_or_default();
    let Some(repository) = env.repository.as_ref() else {
        return Err(SourceError::Malformed(format!(
            "github: {event} delivery has no repository"
        )));
    };
    let repo = Repo::new(&repository.full_name);
    let ctx = Ctx {
        repository,
        repo: &repo,
        config,
    };
    map_event(&ctx, event, &action, &env)
}

/// One used event's payload mapped onto the model, through `ctx`'s mapping functions.
fn map_event(
    ctx: &Ctx,
    event: &str,
    action: &str,
    env: &Envelope,
) -> Result<Translation, SourceError> {
    let missing =
        |field: &str| SourceError::Malformed(format!("github: {event} delivery has no {field}"));
    let input = match event {
        "issues" => ctx.issue(action, env.issue.as_ref().ok_or_else(|| missing("issue"))?),
        "pull_request" => ctx.pull_request(
            action,
            env.pull_request
                .as_ref()
                .ok_or_else(|| missing("pull_request"))?,
        ),
        "pull_request_review" => ctx.review(
            action,
            env.pull_request
                .as_ref()
                .ok_or_else(|| missing("pull_request"))?,
            env.review.as_ref().ok_or_else(|| missing("review"))?,
        ),
        "workflow_run" => ctx.workflow_run(
            action,
            env.workflow_run
                .as_ref()
                .ok_or_else(|| missing("workflow_run"))?,
            env.workflow.as_ref().and_then(|w| w.name.as_deref()),
        ),
        "workflow_job" => ctx.workflow_job(
            action,
            env.workflow_job
                .as_ref()
                .ok_or_else(|| missing("workflow_job"))?,
        ),
        "deployment" => ctx.deployment(
            env.deployment
                .as_ref()
                .ok_or_else(|| missing("deployment"))?,
            None,
        ),
        "deployment_status" => ctx.deployment(
            env.deployment
                .as_ref()
                .ok_or_else(|| missing("deployment"))?,
            Some(
                env.deployment_status
                    .as_ref()
                    .ok_or_else(|| missing("deployment_status"))?,
            ),
        ),
        "push" => return Ok(ctx.push(env)),
        _ => unreachable!("checked against USED"),
    };
    Ok(match input {
        Ok(work) => Translation::Inputs(vec![Input::Work(work)]),
        Err(why) => Translation::Ignored(why),
    })
}

#[cfg(test)]
mod tests {
    use super::mapping::merges_a_pull_request;

    #[test]
    fn merge_and_squash_messages_merge_a_pull_request() {
        assert!(merges_a_pull_request(
            "Merge pull request #12 from o/feature\n\nFix"
        ));
        assert!(merges_a_pull_request("Fix the thing (#12)\n\nbody"));
        assert!(!merges_a_pull_request("Fix the thing\n\nsee (#12)"));
        assert!(!merges_a_pull_request("Merge branch 'a' into 'main'"));
    }
}
