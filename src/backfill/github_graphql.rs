//! A pull request's steps from GitHub's GraphQL API, read in batches: one `POST /graphql` asks
//! for up to [`BATCH`] pull requests of a repository at once (`pr12: pullRequest(number: 12)`
//! aliases), each with its first 100 reviews and its first 100 draft / ready-for-review /
//! review-requested timeline events; the rare pull request with more is followed by a query of
//! its own per further page (`pageInfo { hasNextPage endCursor }`). GitHub answers 200 with
//! `errors` when a query fails: the run fails, naming the fields, and nothing of that batch is
//! delivered. [`super::github`] turns the steps into the deliveries webhooks bring.

use super::{field_str, field_time, Client};
use crate::model::Time;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Pull requests per GraphQL request.
pub const BATCH: usize = 50;
/// Nodes per connection and page: GitHub's largest `first`.
pub const FIRST: u32 = 100;

/// The GraphQL endpoint of a REST API URL: `https://api.github.com/graphql`; an Enterprise
/// Server's `https://HOST/api/v3` → `https://HOST/api/graphql`; otherwise `{api_url}/graphql`.
pub fn graphql_url(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    match api.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{api}/graphql"),
    }
}

/// What a pull request's steps were read as: whether it is a draft now, its reviews and its
/// draft / ready / review-requested events (GraphQL nodes, oldest first).
#[derive(Debug, Default)]
pub struct Steps {
    pub is_draft: bool,
    pub reviews: Vec<Value>,
    pub events: Vec<Value>,
}

/// Whether a pull request was a draft, from its opening on: a draft when opened, then
/// switched at each `(time, draft)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Drafts {
    pub opened: bool,
    pub turns: Vec<(Time, bool)>,
}

impl Drafts {
    /// Never switched: `draft` all along (what the REST object says, when no step was read).
    pub fn constant(draft: bool) -> Self {
        Drafts {
            opened: draft,
            turns: Vec::new(),
        }
    }

    /// From the events: a pull request whose first draft event is a ready-for-review was
    /// opened as a draft; one whose first is a conversion to draft was not; without either,
    /// it is what it is now.
    pub fn of(steps: &Steps, ep: &str) -> anyhow::Result<Self> {
        let mut turns = Vec::new();
        for e in &steps.events {
            let draft = match e["__typename"].as_str() {
                Some("ReadyForReviewEvent") => false,
                Some("ConvertToDraftEvent") => true,
                _ => continue,
            };
            turns.push((field_time(e, "createdAt", ep)?, draft));
        }
        turns.sort();
        let opened = turns.first().map_or(steps.is_draft, |t| !t.1);
        Ok(Drafts { opened, turns })
    }

    /// Whether it was a draft at `t`.
    pub fn at(&self, t: Time) -> bool {
        self.turns
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(self.opened, |t| t.1)
    }
}

/// The query of a batch: each pull request under its alias, with both connections.
fn batch_query(numbers: &[u64]) -> String {
    let prs: Vec<String> = numbers
        .iter()
        .map(|n| format!("pr{n}: pullRequest(number: {n}) {{ ...steps }}"))
        .collect();
    format!(
        "query($owner: String!, $name: String!) {{ repository(owner: $owner, name: $name) {{ {} }} }} \
         fragment steps on PullRequest {{ number isDraft {} {} }} {REVIEW} {EVENT}",
        prs.join(" "),
        reviews_field(None),
        events_field(None)
    )
}

/// The query of one pull request's further pages: the connections with a cursor.
fn follow_up_query(n: u64, reviews: Option<&str>, events: Option<&str>) -> String {
    let mut fields = vec!["number isDraft".to_string()];
    if let Some(c) = reviews {
        fields.push(reviews_field(Some(c)));
    }
    if let Some(c) = events {
        fields.push(events_field(Some(c)));
    }
    format!(
        "query($owner: String!, $name: String!) {{ repository(owner: $owner, name: $name) {{ pr{n}: pullRequest(number: {n}) {{ {} }} }} }} {REVIEW} {EVENT}",
        fields.join(" ")
    )
}

const PAGE_INFO: &str = "pageInfo { hasNextPage endCursor }";
const REVIEW: &str = "fragment review on PullRequestReview { databaseId state submittedAt author { login __typename } commit { oid } }";
const EVENT: &str = "fragment event on PullRequestTimelineItems { __typename \
    ... on ReadyForReviewEvent { createdAt } ... on ConvertToDraftEvent { createdAt } \
    ... on ReviewRequestedEvent { createdAt requestedReviewer { __typename \
    ... on User { login } ... on Bot { login } ... on Mannequin { login } ... on Team { slug name } } } }";

fn after(cursor: Option<&str>) -> String {
    cursor
        .map(|c| format!(", after: {}", Value::from(c)))
        .unwrap_or_default()
}

fn reviews_field(cursor: Option<&str>) -> String {
    format!(
        "reviews(first: {FIRST}{}) {{ {PAGE_INFO} nodes {{ ...review }} }}",
        after(cursor)
    )
}

fn events_field(cursor: Option<&str>) -> String {
    format!(
        "timelineItems(first: {FIRST}{}, itemTypes: [READY_FOR_REVIEW_EVENT, CONVERT_TO_DRAFT_EVENT, REVIEW_REQUESTED_EVENT]) {{ {PAGE_INFO} nodes {{ ...event }} }}",
        after(cursor)
    )
}

/// The steps of the pull requests `numbers` of `full_name`, by number.
pub async fn read(
    client: &Client,
    url: &str,
    full_name: &str,
    numbers: &[u64],
) -> anyhow::Result<HashMap<u64, Steps>> {
    let (owner, name) = full_name
        .split_once('/')
        .with_context(|| format!("{full_name:?} is not OWNER/NAME"))?;
    let vars = json!({"owner": owner, "name": name});
    let mut out = HashMap::new();
    for batch in numbers.chunks(BATCH) {
        let what = format!("{full_name} pull requests {}", list(batch));
        let repo = post(client, url, &batch_query(batch), &vars, &what).await?;
        for &n in batch {
            let node = pull(&repo, n, url)?;
            let mut steps = Steps {
                is_draft: node["isDraft"].as_bool().unwrap_or(false),
                ..Steps::default()
            };
            let mut reviews = page(node, "reviews", &mut steps.reviews, url)?;
            let mut events = page(node, "timelineItems", &mut steps.events, url)?;
            // The rare pull request with more than a page of either: its own queries.
            while reviews.is_some() || events.is_some() {
                let q = follow_up_query(n, reviews.as_deref(), events.as_deref());
                let repo = post(client, url, &q, &vars, &format!("{full_name} #{n}")).await?;
                let node = pull(&repo, n, url)?;
                if reviews.is_some() {
                    reviews = page(node, "reviews", &mut steps.reviews, url)?;
                }
                if events.is_some() {
                    events = page(node, "timelineItems", &mut steps.events, url)?;
                }
            }
            out.insert(n, steps);
        }
    }
    Ok(out)
}

fn list(numbers: &[u64]) -> String {
    match numbers {
        [one] => format!("#{one}"),
        [first, .., last] => format!("#{first}…#{last}"),
        [] => String::new(),
    }
}

/// One GraphQL request: `data.repository`, or an error naming what was asked and every error
/// GitHub gave (its message and the path of the field).
async fn post(
    client: &Client,
    url: &str,
    query: &str,
    variables: &Value,
    what: &str,
) -> anyhow::Result<Value> {
    let body = json!({"query": query, "variables": variables});
    let mut answer = client.post_json(url, &body).await?;
    if let Some(errors) = answer["errors"].as_array().filter(|e| !e.is_empty()) {
        let errors: Vec<String> = errors
            .iter()
            .map(|e| {
                let path: Vec<String> = e["path"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                    .collect();
                let message = e["message"].as_str().unwrap_or("no message");
                match path.is_empty() {
                    true => message.to_string(),
                    false => format!("{}: {message}", path.join(".")),
                }
            })
            .collect();
        bail!(
            "POST {url} (the GraphQL query of {what}) answered errors: {}",
            errors.join("; ")
        );
    }
    match answer["data"]["repository"].take() {
        Value::Object(m) => Ok(Value::Object(m)),
        _ => bail!("POST {url} (the GraphQL query of {what}): no data.repository in the answer"),
    }
}

fn pull<'a>(repo: &'a Value, n: u64, url: &str) -> anyhow::Result<&'a Value> {
    match repo.get(format!("pr{n}")) {
        Some(v) if v.is_object() => Ok(v),
        _ => bail!("POST {url}: no pull request #{n} (pr{n}) in the answer"),
    }
}

/// A connection's nodes appended to `into`; the cursor of its next page, if there is one.
fn page(
    node: &Value,
    connection: &str,
    into: &mut Vec<Value>,
    url: &str,
) -> anyhow::Result<Option<String>> {
    let c = &node[connection];
    let ep = format!("POST {url} {connection}");
    let Some(nodes) = c["nodes"].as_array() else {
        bail!("{ep}: no nodes in {}", super::brief(node));
    };
    into.extend(nodes.iter().filter(|n| !n.is_null()).cloned());
    if c["pageInfo"]["hasNextPage"] == Value::Bool(true) {
        return Ok(Some(field_str(c, "pageInfo.endCursor", &ep)?.to_string()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graphql_url_of_an_api_url() {
        assert_eq!(
            graphql_url("https://api.github.com"),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            graphql_url("https://ghe.example.com/api/v3/"),
            "https://ghe.example.com/api/graphql"
        );
        assert_eq!(
            graphql_url("http://127.0.0.1:9/x"),
            "http://127.0.0.1:9/x/graphql"
        );
    }

    #[test]
    fn a_pull_request_made_ready_first_was_opened_as_a_draft() {
        let t = |s: &str| format!("2024-03-01T{s}:00Z");
        let steps = Steps {
            is_draft: false,
            reviews: vec![],
            events: vec![
                json!({"__typename": "ReviewRequestedEvent", "createdAt": t("10:12")}),
                json!({"__typename": "ReadyForReviewEvent", "createdAt": t("10:10")}),
                json!({"__typename": "ConvertToDraftEvent", "createdAt": t("10:30")}),
            ],
        };
        let d = Drafts::of(&steps, "ep").unwrap();
        assert!(d.opened);
        assert!(d.at(t("10:05").parse().unwrap()));
        assert!(!d.at(t("10:10").parse().unwrap()));
        assert!(d.at(t("10:31").parse().unwrap()));
        let none = Steps {
            is_draft: true,
            ..Steps::default()
        };
        assert_eq!(Drafts::of(&none, "ep").unwrap(), Drafts::constant(true));
    }

    #[test]
    fn a_batch_asks_for_each_pull_request_under_its_alias() {
        let q = batch_query(&[2, 30]);
        assert!(q.contains("pr2: pullRequest(number: 2)"), "{q}");
        assert!(q.contains("pr30: pullRequest(number: 30)"), "{q}");
        assert!(q.contains("reviews(first: 100)"), "{q}");
        let q = follow_up_query(2, None, Some("Y3Vy"));
        assert!(
            q.contains("timelineItems(first: 100, after: \"Y3Vy\""),
            "{q}"
        );
        assert!(!q.contains("reviews("), "{q}");
    }
}
