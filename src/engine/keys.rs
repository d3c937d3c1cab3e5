//! Where the engine keeps each kind of state in the store. One place, so that the layout (and
//! the DynamoDB item shapes) can be read at a glance.
//!
//! | key | holds |
//! |---|---|
//! | `item#<item key>` | an item's facts: every work event about it, deduplicated, in event-time order, each with the tags of the deliveries that brought it (redelivery detection) |
//! | `scope#<scope>` / `s#<item key>` | an item's summary (times, results, commits, parents, labels, exported generations) and its ledger: the metric contributions applied for it |
//! | `scope#<scope>` / `p#<after>` | a push: commits that reached a branch |
//! | `scope#<scope>` / `l#<owner key>` | a ledger on its own, as versions before it moved into the summary wrote it: read, removed when it next changes |
//! | `pending` / `<due time>#<scope>` | a scope with facts to settle once the time has come; its version is the writing delivery's tag, so a drainer removes only the marker it read |
//! | `outbox` / `<time>#<scope>` | batches not yet exported (spans and points tracked apart) |
//! | `metric` / `<series id>` | a metric series' cumulative state |
//! | `sync` / `<source>#<repository>` | the scheduled sync's cursor of one repository (where the next sync starts reading) and the deliveries it healed so far ([`crate::sync`]; the engine never reads it) |
//! | `backfill#<source>#<scope>` / `run` | a backfill's run over one repository (project, service): its window, start and whether it finished; an unfinished one is resumed ([`crate::backfill::RunRecord`]; TTL 30 days; written through [`crate::backfill::Records`], the engine never reads these three) |
//! | `backfill#<source>#<scope>` / `r#<resource>` | where that run stands in one resource (`pull_requests`, `workflow_runs`, …): done, or the key of the last item delivered ([`crate::backfill::ResourceCursor`]) |
//! | `etag#<source>#<scope>` / `<resource>` | the validator of one resource URL (a list's first page, a repository object, a run's jobs): its URL, `ETag` and the window it was delivered for, sent back as `If-None-Match` ([`crate::backfill::Validator`]; under 1 KB but a repository object's 16 KB at most; TTL 30 days) |
//!
//! A scope is `repo#<owner/name>` for a repository's items and pushes, or `item#<item key>` for
//! an item that names no repository.

use crate::store::Key;

pub fn item(key: &str) -> Key {
    Key::one(format!("item#{key}"))
}
pub fn scope_pk(scope: &str) -> String {
    format!("scope#{scope}")
}
pub fn summary(scope: &str, item_key: &str) -> Key {
    Key::new(scope_pk(scope), format!("s#{item_key}"))
}
pub fn push(scope: &str, after: &str) -> Key {
    Key::new(scope_pk(scope), format!("p#{}", after.to_ascii_lowercase()))
}
pub fn ledger(scope: &str, owner: &str) -> Key {
    Key::new(scope_pk(scope), format!("l#{owner}"))
}
pub const PENDING: &str = "pending";
pub fn pending(due: crate::model::Time, scope: &str) -> Key {
    Key::new(PENDING, format!("{}#{scope}", time_sk(due)))
}
pub const OUTBOX: &str = "outbox";
pub fn outbox_item(at: crate::model::Time, scope: &str) -> Key {
    Key::new(OUTBOX, format!("{}#{scope}", time_sk(at)))
}
pub const METRIC: &str = "metric";
pub fn series(id: &str) -> Key {
    Key::new(METRIC, id)
}

pub const SYNC: &str = "sync";
/// The scheduled sync's record of one repository of one source (lower-case `owner/name`).
pub fn sync_cursor(source: &str, repository: &str) -> Key {
    Key::new(
        SYNC,
        format!("{source}#{}", repository.to_ascii_lowercase()),
    )
}

/// A time as a sort key: fixed width, so string order is time order.
pub fn time_sk(t: crate::model::Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
