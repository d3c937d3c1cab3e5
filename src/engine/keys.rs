//! Where the engine keeps each kind of state in the store. One place, so that the layout (and
//! the DynamoDB item shapes) can be read at a glance.
//!
//! | key | holds |
//! |---|---|
//! | `item#<item key>` | an item's span state, open or last closed generation |
//! | `delivery#<source>#<id>` | a delivery that was applied (redelivery detection) |
//! | `sha#<repo>#<sha>`, `branch#<repo>#<branch>` | the change whose head (or merge) commit / branch this is |
//! | `branchfirst#<repo>#<branch>` | the earliest commit time pushed to a branch |
//! | `push#<repo>#<after>` | the direct-commit changes one default-branch push landed |
//! | `landed#<repo>` / `<time>#<id>` | changes in landing order on the default branch |
//! | `env#<repo>#<environment>` | the environment's last successful deployment and failure streak |
//! | `deploys#<repo>` / `<time>#<key>` | finished deployments, for incidents to find their cause |
//! | `cfail#<deployment key>` | a deployment already counted as a change failure |
//! | `outbox` / `<source>#<delivery>` | batches not yet exported; `outbox-flag`: an export failed |
//! | `metric` / `<series id>` | a metric series' cumulative state |

use crate::model::Repo;
use crate::store::Key;

pub fn item(key: &str) -> Key {
    Key::one(format!("item#{key}"))
}
pub fn delivery(source: &str, id: &str) -> Key {
    Key::one(format!("delivery#{source}#{id}"))
}
pub fn sha(repo: &Repo, sha: &str) -> Key {
    Key::one(format!("sha#{}#{}", repo.0, sha.to_ascii_lowercase()))
}
pub fn branch(repo: &Repo, branch: &str) -> Key {
    Key::one(format!("branch#{}#{}", repo.0, branch))
}
pub fn branch_first(repo: &Repo, branch: &str) -> Key {
    Key::one(format!("branchfirst#{}#{}", repo.0, branch))
}
pub fn push(repo: &Repo, after: &str) -> Key {
    Key::one(format!("push#{}#{}", repo.0, after.to_ascii_lowercase()))
}
pub fn landed_pk(repo: &Repo) -> String {
    format!("landed#{}", repo.0)
}
pub fn env(repo: &Repo, environment: &str) -> Key {
    Key::one(format!(
        "env#{}#{}",
        repo.0,
        environment.to_ascii_lowercase()
    ))
}
pub fn deploys_pk(repo: &Repo) -> String {
    format!("deploys#{}", repo.0)
}
pub fn change_failure(deployment_key: &str) -> Key {
    Key::one(format!("cfail#{deployment_key}"))
}
pub const OUTBOX: &str = "outbox";
pub fn outbox_item(source: &str, delivery: &str) -> Key {
    Key::new(OUTBOX, format!("{source}#{delivery}"))
}
pub fn outbox_flag() -> Key {
    Key::one("outbox-flag")
}
pub const METRIC: &str = "metric";
pub fn series(id: &str) -> Key {
    Key::new(METRIC, id)
}

/// A time as a sort key: fixed width, so string order is time order.
pub fn time_sk(t: crate::model::Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
