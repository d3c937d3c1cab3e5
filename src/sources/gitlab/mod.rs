//! GitLab: `X-Gitlab-Token` verification and the translation of Issue, Merge Request, Pipeline,
//! Job, Deployment and Push hooks into normalized events. The payload model (only the fields we
//! use) and its mapping to semantic-convention attributes live here and nowhere else.
//!
//! GitLab writes timestamps in three shapes depending on the hook and its version
//! (`2013-12-03T17:23:34Z`, `2016-08-12 15:23:28 UTC`, `2021-04-28 21:50:00 +0200`); every
//! time field goes through [`de`].

mod mapping;
mod payload;

use crate::config::Config;
use crate::model::ids::short_hash;
use crate::model::{Input, WorkEvent};
use crate::sources::{
    authenticate_with, no_options, parse_json, signing_secret, verify, Delivery, Ignored, Setting,
    Source, SourceEntry, SourceError, Translated, Translation,
};
use mapping::Ctx;
pub use payload::de;
use payload::{
    DeploymentHook, IssueHook, JobHook, MergeRequestHook, ObjectKind, PipelineHook, PushHook,
};

pub struct GitLab;

const SOURCE: &str = "gitlab";

/// The registry's entry for GitLab (`src/sources/registry.rs` lists it).
pub const ENTRY: SourceEntry = SourceEntry {
    name: SOURCE,
    route: "/webhooks/gitlab",
    secret: Setting {
        var: "VALUESTREAM_GITLAB_TOKEN",
        doc: "GitLab webhook secret token (X-Gitlab-Token)",
    },
    settings: &[],
    options: no_options,
    source: &GitLab,
};

impl Source for GitLab {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        authenticate_with(
            &ENTRY,
            d.header("x-gitlab-token"),
            config,
            verify::tokens_match,
        )
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let delivery_id = d
            .header("x-gitlab-event-uuid")
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| short_hash(d.body));
        let event = match d.header("x-gitlab-event") {
            Some(h) if h != "System Hook" => Event::from_header(h),
            // A system hook names its event in the body: merge requests by `object_kind` (the
            // project hook's body), pushes and the instance's own events (users, groups,
            // projects) by `event_name`.
            _ => {
                let k: ObjectKind = parse_json(SOURCE, d.body)?;
                match (k.object_kind, k.event_name) {
                    (Some(kind), _) => Event::from_object_kind(&kind),
                    (None, Some(name)) => Event::from_event_name(&name),
                    (None, None) => {
                        return Err(SourceError::Malformed(
                            "gitlab: neither the X-Gitlab-Event header nor the body's object_kind or event_name names the event".into(),
                        ))
                    }
                }
            }
        };
        let translation = match event {
            Ok(event) => translate(event, d.body, config)?,
            Err(why) => Translation::Ignored(why),
        };
        Ok(Translated {
            delivery_id,
            translation,
        })
    }

    fn sign(&self, _body: &[u8], config: &Config) -> Vec<(String, String)> {
        signing_secret(&ENTRY, config)
            .map(|t| vec![("x-gitlab-token".into(), t.to_string())])
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Issue,
    MergeRequest,
    Pipeline,
    Job,
    Deployment,
    Push,
}

impl Event {
    fn from_header(h: &str) -> Result<Event, Ignored> {
        Ok(match h {
            "Issue Hook" | "Confidential Issue Hook" => Event::Issue,
            "Merge Request Hook" => Event::MergeRequest,
            "Pipeline Hook" => Event::Pipeline,
            "Job Hook" => Event::Job,
            "Deployment Hook" => Event::Deployment,
            "Push Hook" => Event::Push,
            other => return Err(Ignored::unused("gitlab event", other)),
        })
    }

    fn from_object_kind(k: &str) -> Result<Event, Ignored> {
        Ok(match k {
            "issue" => Event::Issue,
            "merge_request" => Event::MergeRequest,
            "pipeline" => Event::Pipeline,
            "build" => Event::Job,
            "deployment" => Event::Deployment,
            "push" => Event::Push,
            other => return Err(Ignored::unused("gitlab object_kind", other)),
        })
    }

    /// A system hook's `event_name`: pushes are handled like Push Hooks (a `tag_push` is then
    /// ignored as a tag); everything else (`user_add_to_group`, `project_create`,
    /// `repository_update`, …) is about the instance, not delivery.
    fn from_event_name(name: &str) -> Result<Event, Ignored> {
        match name {
            "push" | "tag_push" => Ok(Event::Push),
            "repository_update" => Err(Ignored::unused("gitlab system hook event", name)
                .note("the same push arrives as event_name \"push\"")),
            other => Err(Ignored::unused("gitlab system hook event", other)
                .note("only merge requests and pushes are")),
        }
    }
}

fn translate(event: Event, body: &[u8], config: &Config) -> Result<Translation, SourceError> {
    let one = |r: Result<WorkEvent, Ignored>| match r {
        Ok(w) => Translation::Inputs(vec![Input::Work(w)]),
        Err(why) => Translation::Ignored(why),
    };
    Ok(match event {
        Event::Issue => {
            let h: IssueHook = parse_json(SOURCE, body)?;
            one(Ctx::of(&h.project, config).issue(&h))
        }
        Event::MergeRequest => {
            let h: MergeRequestHook = parse_json(SOURCE, body)?;
            one(Ctx::of(&h.project, config).merge_request(&h))
        }
        Event::Pipeline => {
            let h: PipelineHook = parse_json(SOURCE, body)?;
            Ctx::of(&h.project, config).pipeline(&h)
        }
        Event::Job => {
            let h: JobHook = parse_json(SOURCE, body)?;
            let ctx = match (&h.project, &h.repository) {
                (Some(p), _) => Ctx::of(p, config),
                (None, Some(r)) => r
                    .homepage
                    .as_deref()
                    .or(r.git_http_url.as_deref())
                    .and_then(|u| Ctx::of_url(u, config))
                    .ok_or_else(|| {
                        SourceError::Malformed(
                            "gitlab: Job Hook repository has no usable homepage".into(),
                        )
                    })?,
                (None, None) => {
                    return Err(SourceError::Malformed(
                        "gitlab: Job Hook names neither project nor repository".into(),
                    ))
                }
            };
            one(ctx.job(&h))
        }
        Event::Deployment => {
            let h: DeploymentHook = parse_json(SOURCE, body)?;
            one(Ctx::of(&h.project, config).deployment(&h))
        }
        Event::Push => {
            let h: PushHook = parse_json(SOURCE, body)?;
            Ctx::of(&h.project, config).push(&h)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::mapping::pipeline_result;
    use super::*;
    use crate::model::{Ending, WorkResult};

    #[test]
    fn status_mapping() {
        assert_eq!(
            pipeline_result("success"),
            Some(Ending::ok(WorkResult::Success))
        );
        assert_eq!(
            pipeline_result("failed"),
            Some(Ending::failed(WorkResult::Failure))
        );
        assert_eq!(
            pipeline_result("canceled"),
            Some(Ending::ok(WorkResult::Cancellation))
        );
        assert_eq!(
            pipeline_result("skipped"),
            Some(Ending::ok(WorkResult::Skip))
        );
        assert_eq!(pipeline_result("running"), None);
        assert_eq!(pipeline_result("pending"), None);
    }

    #[test]
    fn events_by_header_and_object_kind() {
        assert!(matches!(
            Event::from_header("Merge Request Hook"),
            Ok(Event::MergeRequest)
        ));
        assert!(matches!(Event::from_header("Job Hook"), Ok(Event::Job)));
        assert!(Event::from_header("Note Hook")
            .unwrap_err()
            .to_string()
            .contains("Note Hook"));
        assert!(matches!(Event::from_object_kind("build"), Ok(Event::Job)));
        assert!(Event::from_object_kind("tag_push").is_err());
    }
}
