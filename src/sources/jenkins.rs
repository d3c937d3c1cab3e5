//! Jenkins: Notification Plugin (JSON) deliveries, authenticated by `Authorization: Bearer
//! <token>` or, for senders that can set nothing but a URL, `?token=<token>`. One span per build:
//! a pipeline run, or a deployment when the job is a deploy job. The payload model (only the
//! fields we use) and its mapping to semantic-convention attributes live here and nowhere else.

use super::{
    authenticate_with, parse_json, signing_secret, verify, Delivery, Ignored, Setting, Source,
    SourceEntry, SourceError, SourceOptions, Translated, Translation,
};
use crate::config::{Config, ConfigError, Env};
use crate::model::attr;
use crate::model::ids::{item_key, short_hash};
use crate::model::refs::vstrace_parents;
use crate::model::{
    set_opt, Action, Attrs, Ending, Input, Kind, ParentRef, Repo, Time, WorkEvent, WorkResult,
};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct Jenkins;

const SOURCE: &str = "jenkins";

/// The registry's entry for Jenkins (`src/sources/registry.rs` lists it).
pub const ENTRY: SourceEntry = SourceEntry {
    name: SOURCE,
    route: "/webhooks/jenkins",
    secret: Setting {
        var: "VALUESTREAM_JENKINS_TOKEN",
        doc: "Jenkins bearer token (Authorization: Bearer, or ?token= in the URL)",
    },
    settings: &[JOB_PATTERN],
    options: Settings::parse,
    source: &Jenkins,
};

/// `VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN`.
const JOB_PATTERN: Setting = Setting {
    var: "VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN",
    doc: "regex of Jenkins job names that are deployments (default ^deploy)",
};

/// Jenkins's settings of their own, beside the secret.
#[derive(Debug)]
pub struct Settings {
    /// Jenkins jobs whose name matches this are deployments.
    pub deploy_job: regex::Regex,
}

impl SourceOptions for Settings {
    const SOURCE: &'static str = SOURCE;

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            deploy_job: env.regex(JOB_PATTERN.var, "^deploy")?,
        })
    }
}

/// Build parameters that name a deployment's target environment (compared case-insensitively).
const ENV_PARAMS: &[&str] = &["ENVIRONMENT", "ENV", "DEPLOY_ENV"];
/// The build parameter that names the issue a build works on (`vstrace-github-repo-12`).
const TRACE_PARAM: &str = "vstrace-trace-id";

#[derive(Deserialize)]
struct Notification {
    name: String,
    /// `job/<folder>/job/<name>/`: the job's full name, folders included.
    url: Option<String>,
    build: Build,
}

#[derive(Deserialize)]
struct Build {
    full_url: Option<String>,
    number: u64,
    phase: String,
    status: Option<String>,
    /// Epoch milliseconds: the build's start.
    timestamp: Option<i64>,
    /// Milliseconds.
    duration: Option<i64>,
    scm: Option<Scm>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Scm {
    url: Option<String>,
    branch: Option<String>,
    commit: Option<String>,
}

impl Source for Jenkins {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        // The header first; the query string only for senders that cannot set one.
        let credential = d
            .header("authorization")
            .and_then(verify::bearer)
            .map(str::to_string)
            .or_else(|| d.query.and_then(query_token));
        authenticate_with(&ENTRY, credential.as_deref(), config, verify::tokens_match)
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let n: Notification = parse_json(SOURCE, d.body)?;
        let job = full_name(&n);
        // The plugin sends no delivery ID: one build phase is one delivery, so a redelivery of
        // the same phase is a duplicate.
        let delivery_id =
            short_hash(format!("{job}\n{}\n{}", n.build.number, n.build.phase).as_bytes());
        Ok(Translated {
            delivery_id,
            translation: translate(&n, &job, config)?,
        })
    }

    fn sign(&self, _body: &[u8], config: &Config) -> Vec<(String, String)> {
        signing_secret(&ENTRY, config)
            .map(|t| vec![("authorization".into(), format!("Bearer {t}"))])
            .unwrap_or_default()
    }
}

/// Maps a Jenkins build result onto `cicd.pipeline.result`. UNSTABLE (tests failed, the build
/// itself went through) is a failure.
pub fn build_result(status: &str) -> Ending {
    match status.to_ascii_uppercase().as_str() {
        "SUCCESS" => Ending::ok(WorkResult::Success),
        "ABORTED" => Ending::ok(WorkResult::Cancellation),
        "NOT_BUILT" => Ending::ok(WorkResult::Skip),
        // FAILURE, UNSTABLE, and anything new Jenkins adds.
        _ => Ending::failed(WorkResult::Failure),
    }
}

fn translate(n: &Notification, job: &str, config: &Config) -> Result<Translation, SourceError> {
    let b = &n.build;
    let act = match phase_action(&b.phase) {
        Ok(act) => act,
        Err(why) => return Ok(Translation::Ignored(why)),
    };
    let stamp = phase_stamp(b, job)?;
    let params = Params::of(b);
    let target = Target::of(n, job, &params, config);
    let mut w = WorkEvent::new(
        target.kind,
        item_key(SOURCE, target.segment(), job, &b.number.to_string()),
        target.span_name(job, b.number),
        act,
    );
    set_times(&mut w, b, job, act, stamp)?;
    let scm = ScmRef::of(b);
    link(&mut w, &scm, &target, &params);
    w.pipeline = Some(job.to_string());
    w.attributes = attributes(b, job, act, &target, &scm);
    if let Some(repo) = &scm.repo {
        w.traits.team = config.team_of(repo).map(str::to_string);
    }
    Ok(Translation::Inputs(vec![Input::Work(w)]))
}

/// The action of a notification phase, or why the phase is not used.
fn phase_action(phase: &str) -> Result<Action, Ignored> {
    match phase.to_ascii_uppercase().as_str() {
        "STARTED" => Ok(Action::Open),
        "COMPLETED" | "FINALIZED" => Ok(Action::Close),
        "QUEUED" => Err(Ignored::because(
            "jenkins phase QUEUED is not used: it stamps when the build entered the \
             queue; the build's span opens when it STARTED",
        )),
        other => Err(Ignored::unused("jenkins phase", other)),
    }
}

/// The phase's own time. The plugin (1.12 and later) stamps each phase with its own time:
/// STARTED with the build's start, COMPLETED with its end (start + duration), FINALIZED with the
/// moment of finalization (just after the end). `duration` is the build's run time.
fn phase_stamp(b: &Build, job: &str) -> Result<Time, SourceError> {
    b.timestamp
        .and_then(chrono::DateTime::from_timestamp_millis)
        .ok_or_else(|| {
            SourceError::Malformed(format!(
                "jenkins: {} build {} has no build.timestamp",
                job, b.number
            ))
        })
}

/// The build's parameters, values as text.
struct Params(BTreeMap<String, String>);

impl Params {
    fn of(b: &Build) -> Self {
        Params(
            b.parameters
                .iter()
                .flatten()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    }

    /// A parameter's non-blank value; names compare case-insensitively.
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
    }
}

/// What the build is: a deployment (an environment parameter, or a job name that
/// `VALUESTREAM_JENKINS_DEPLOY_JOB` matches) to an environment, or a pipeline run.
struct Target {
    kind: Kind,
    /// The deployment's environment (`unknown` when no parameter names it).
    environment: Option<String>,
}

impl Target {
    fn of(n: &Notification, job: &str, params: &Params, config: &Config) -> Self {
        let env_param = ENV_PARAMS.iter().find_map(|p| params.get(p));
        let short = job.rsplit('/').next().unwrap_or(job);
        let deploy = env_param.is_some()
            || Settings::of(config).deploy_job.is_match(short)
            || Settings::of(config).deploy_job.is_match(job)
            || Settings::of(config).deploy_job.is_match(&n.name);
        if deploy {
            Target {
                kind: Kind::Deployment,
                environment: Some(env_param.unwrap_or_else(|| "unknown".into())),
            }
        } else {
            Target {
                kind: Kind::PipelineRun,
                environment: None,
            }
        }
    }

    fn segment(&self) -> &'static str {
        match self.environment {
            Some(_) => "deployment",
            None => "run",
        }
    }

    fn span_name(&self, job: &str, number: u64) -> String {
        match &self.environment {
            Some(env) => format!("DEPLOY {env} {job} #{number}"),
            None => format!("RUN {job} #{number}"),
        }
    }
}

/// Start, end, run time and outcome. A close alone starts at stamp − duration (right for 1.12+:
/// COMPLETED is stamped with the end; earlier versions stamp it with the build's start); when
/// STARTED was seen its start wins, and the span ends at max(stamp, start + duration): right for
/// both.
fn set_times(
    w: &mut WorkEvent,
    b: &Build,
    job: &str,
    act: Action,
    stamp: Time,
) -> Result<(), SourceError> {
    if act != Action::Close {
        w.start = Some(stamp);
        w.time_fields = ["build.timestamp", ""];
        return Ok(());
    }
    let ms = b.duration.unwrap_or(0);
    let start = chrono::TimeDelta::try_milliseconds(ms)
        .filter(|_| ms >= 0)
        .and_then(|d| stamp.checked_sub_signed(d))
        .ok_or_else(|| {
            SourceError::Malformed(format!(
                "jenkins: {job} build {}: build.duration {ms} ms is not a run time",
                b.number
            ))
        })?;
    w.start = Some(start);
    w.end = Some(stamp);
    w.duration_ms = Some(ms);
    w.time_fields = ["build.timestamp - build.duration", "build.timestamp"];
    w.outcome = Some(build_result(b.status.as_deref().unwrap_or("FAILURE")));
    Ok(())
}

/// What the build's SCM section says: repository, branch and commit.
struct ScmRef<'b> {
    url: Option<&'b str>,
    repo: Option<Repo>,
    branch: Option<String>,
    commit: Option<String>,
}

impl<'b> ScmRef<'b> {
    fn of(b: &'b Build) -> Self {
        let scm = b.scm.as_ref();
        let url = scm.and_then(|s| s.url.as_deref());
        ScmRef {
            url,
            repo: url.and_then(Repo::from_url),
            branch: scm
                .and_then(|s| s.branch.as_deref())
                .map(strip_branch)
                .filter(|s| !s.is_empty()),
            commit: scm.and_then(|s| s.commit.clone()).filter(|s| !s.is_empty()),
        }
    }
}

/// Repository, head and parents, best first: the issue the build names, the open change of its
/// commit or branch, and last the issue its branch names (a root, when no change is open).
fn link(w: &mut WorkEvent, scm: &ScmRef<'_>, target: &Target, params: &Params) {
    w.repo = scm.repo.clone();
    w.head_branch = scm.branch.clone();
    w.head_sha = scm.commit.clone();
    w.environment = target.environment.clone();
    let issue = |text: &str| -> Vec<ParentRef> { vstrace_parents(text, scm.repo.as_ref()) };
    if let Some(t) = params.get(TRACE_PARAM) {
        w.parents.extend(issue(&t));
    }
    if let Some(repo) = &scm.repo {
        w.parent_by_commit(repo, scm.commit.as_deref(), scm.branch.as_deref());
    }
    if let Some(b) = &scm.branch {
        for p in issue(b) {
            if !w.parents.contains(&p) {
                w.parents.push(p);
            }
        }
    }
}

/// The span's attributes: run identity, head, result status, deployment, repository.
fn attributes(b: &Build, job: &str, act: Action, target: &Target, scm: &ScmRef<'_>) -> Attrs {
    let mut a = Attrs::new();
    a.insert(
        attr::CICD_PIPELINE_RUN_ID.into(),
        b.number.to_string().into(),
    );
    set_opt(&mut a, attr::CICD_PIPELINE_RUN_URL_FULL, b.full_url.clone());
    set_opt(&mut a, attr::VCS_REF_HEAD_NAME, scm.branch.clone());
    set_opt(&mut a, attr::VCS_REF_HEAD_REVISION, scm.commit.clone());
    if act == Action::Close {
        set_opt(&mut a, attr::JENKINS_STATUS, b.status.clone());
    }
    if let Some(environment) = &target.environment {
        a.insert(
            attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
            environment.clone().into(),
        );
        a.insert(
            attr::DEPLOYMENT_ID.into(),
            format!("{job}#{}", b.number).into(),
        );
    }
    if let Some(repo) = &scm.repo {
        repo_attrs(&mut a, repo, scm.url);
    }
    a
}

/// Repository identity from the SCM URL (names as the URL spells them).
fn repo_attrs(a: &mut Attrs, repo: &Repo, url: Option<&str>) {
    let url = url
        .unwrap_or_default()
        .trim()
        .trim_end_matches('/')
        .trim_end_matches(".git");
    // `https://host/owner/name` or `git@host:owner/name`.
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        None => url.split_once(':').unwrap_or(("", url)),
    };
    let host = host.rsplit('@').next().unwrap_or(host).to_ascii_lowercase();
    let path = if Repo::new(path) == *repo {
        path
    } else {
        repo.0.as_str()
    };
    let (owner, name) = path.rsplit_once('/').unwrap_or(("", path));
    a.insert(attr::VCS_REPOSITORY_NAME.into(), name.into());
    a.insert(attr::VCS_OWNER_NAME.into(), owner.into());
    // Jenkins builds from any host; name the provider when the host says which it is.
    let provider = ["github", "gitlab", "bitbucket", "gitea"]
        .into_iter()
        .find(|p| host.split(['.', ':']).any(|label| label == *p));
    set_opt(a, attr::VCS_PROVIDER_NAME, provider);
    let web = Some(url).filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    set_opt(a, attr::VCS_REPOSITORY_URL_FULL, web.map(str::to_string));
}

/// `origin/feature/x` → `feature/x` (also `refs/heads/` and `refs/remotes/origin/`).
fn strip_branch(b: &str) -> String {
    let b = b.trim();
    let b = b.strip_prefix("refs/remotes/").unwrap_or(b);
    let b = b.strip_prefix("refs/heads/").unwrap_or(b);
    b.strip_prefix("origin/").unwrap_or(b).to_string()
}

/// The job's full name (`folder/job`, multibranch `repo/main`) from its URL
/// `job/folder/job/name/`, else its name. Multibranch branch jobs share short names (`main`), so
/// the key must carry the folders.
fn full_name(n: &Notification) -> String {
    let from_url = n.url.as_deref().and_then(|u| {
        let segs: Vec<&str> = u
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let paired = !segs.is_empty()
            && segs.len().is_multiple_of(2)
            && segs.chunks(2).all(|c| c[0] == "job");
        paired.then(|| {
            segs.chunks(2)
                .map(|c| percent_decode(c[1]))
                .collect::<Vec<_>>()
                .join("/")
        })
    });
    from_url
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| n.name.clone())
}

/// The `token` parameter of a query string, percent-decoded (`+` stays `+`).
fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
        .filter(|v| !v.is_empty())
}

/// Percent-decoding, the same crate the OTLP headers use (invalid escapes stay as written).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(build_result("SUCCESS"), Ending::ok(WorkResult::Success));
        assert_eq!(build_result("FAILURE"), Ending::failed(WorkResult::Failure));
        assert_eq!(
            build_result("UNSTABLE"),
            Ending::failed(WorkResult::Failure)
        );
        assert_eq!(
            build_result("ABORTED"),
            Ending::ok(WorkResult::Cancellation)
        );
        assert_eq!(build_result("NOT_BUILT"), Ending::ok(WorkResult::Skip));
    }

    fn note(name: &str, url: Option<&str>) -> Notification {
        serde_json::from_value(serde_json::json!({
            "name": name, "url": url,
            "build": {"number": 1, "phase": "STARTED", "timestamp": 0}
        }))
        .unwrap()
    }

    #[test]
    fn full_job_name_from_url() {
        assert_eq!(
            full_name(&note("hello-world-ci", Some("job/hello-world-ci/"))),
            "hello-world-ci"
        );
        assert_eq!(
            full_name(&note("main", Some("job/shop/job/api/job/main/"))),
            "shop/api/main"
        );
        assert_eq!(full_name(&note("my job", Some("job/my%20job/"))), "my job");
        assert_eq!(full_name(&note("x", Some("view/all/"))), "x");
        assert_eq!(full_name(&note("x", None)), "x");
    }

    #[test]
    fn repository_attributes_from_scm_urls() {
        for (url, owner, name, provider) in [
            (
                "https://github.com/Codertocat/Hello-World.git",
                "Codertocat",
                "Hello-World",
                Some("github"),
            ),
            (
                "git@gitlab.example.com:Group/Sub/App.git",
                "Group/Sub",
                "App",
                Some("gitlab"),
            ),
            (
                "ssh://git@scm.example.com:2222/team/svc",
                "team",
                "svc",
                None,
            ),
        ] {
            let repo = Repo::from_url(url).unwrap();
            let mut a = Attrs::new();
            repo_attrs(&mut a, &repo, Some(url));
            let get = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
            assert_eq!(get(attr::VCS_OWNER_NAME).as_deref(), Some(owner), "{url}");
            assert_eq!(
                get(attr::VCS_REPOSITORY_NAME).as_deref(),
                Some(name),
                "{url}"
            );
            assert_eq!(get(attr::VCS_PROVIDER_NAME).as_deref(), provider, "{url}");
        }
    }

    #[test]
    fn token_from_query_and_branches() {
        assert_eq!(query_token("a=1&token=s%2Fx+y"), Some("s/x+y".into()));
        assert_eq!(query_token("token="), None);
        assert_eq!(query_token("tokens=1"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            percent_decode("a%2Bb%41"),
            "a+bA",
            "an escape at the very end too"
        );
        assert_eq!(strip_branch("origin/feature/x"), "feature/x");
        assert_eq!(strip_branch("refs/remotes/origin/main"), "main");
        assert_eq!(strip_branch("main"), "main");
    }
}
