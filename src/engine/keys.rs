//! Where the engine keeps each kind of state in the store. One place, so that the layout (and
//! the DynamoDB item shapes) can be read at a glance.
//!
//! | key | holds |
//! |---|---|
//! | `item#<item key>` | an item's facts: every work event about it, deduplicated, in event-time order, each with the tags of the deliveries that brought it (redelivery detection) |
//! | `scope#<scope>#<n>` / `s#<item key>` | an item's summary (times, results, commits, parents, labels, exported generations) and its ledger: the metric contributions applied for it; a repository's are spread over [`SCOPE_SHARDS`] partitions by a hash of the item key (an item's scope has one partition, `scope#<scope>`) |
//! | `scope#<scope>#<n>` / `p#<after>` | a push: commits that reached a branch (shard: a hash of `after`) |
//! | `scope#<scope>` / `s#…`, `p#…` | a repository's summaries and pushes as versions before the shards wrote them: read and merged with the shards' ([`scope_partitions`]); a summary moves to its shard when a settlement next writes it |
//! | `scope#repo#<repository>#0` / `c#` | the repository's checkpoint: the cut before which its records are sealed, and which sealed records later settlements read ([`super::seal`]) |
//! | `sealed#repo#<repository>#<n>` / `s#…`, `p#…` | sealed summaries and pushes: settled records from before the cut, read by key (the checkpoint's, the lookups') or whole when a late fact reaches before the cut |
//! | `sealed#repo#<repository>#<n>` / `h#<sha>`, `b#<branch>` | which sealed records name a commit or a branch (shard: a hash of the sort key) |
//! | `scope#<scope>` / `l#<owner key>` | a ledger on its own, as versions before it moved into the summary wrote it: read, removed when it next changes |
//! | `pending#<shard>` / `<due time>#<scope>` | a scope with facts to settle once the time has come, in one of [`PENDING_SHARDS`] partitions ([`pending_shard`]: a hash of the sort key); its version is the writing delivery's tag, so a drainer removes only the marker it read. Markers that versions before the shards wrote under plain `pending` are still read and removed ([`PENDING_LEGACY`]) |
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

/// What a scope partition gathers: a repository's items and pushes, or one item that names no
/// repository. Its text (`repo#<owner/name>`, `item#<item key>`) is in the stored keys; it is
/// written by [`std::fmt::Display`] and read by [`Scope::parse`], here only. Scopes order as
/// their texts do (`item#…` before `repo#…`, then by name): the variants are declared in that
/// order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Item(String),
    Repo(String),
}

impl Scope {
    const REPO: &'static str = "repo#";
    const ITEM: &'static str = "item#";

    /// The scope of an item: its repository's, else its own.
    pub fn of(repo: Option<&crate::model::Repo>, item_key: &str) -> Scope {
        match repo {
            Some(r) => Scope::Repo(r.0.clone()),
            None => Scope::Item(item_key.to_string()),
        }
    }

    /// The scope a stored text names (`None`: neither form).
    pub fn parse(text: &str) -> Option<Scope> {
        if let Some(name) = text.strip_prefix(Self::REPO) {
            Some(Scope::Repo(name.to_string()))
        } else {
            let key = text.strip_prefix(Self::ITEM)?;
            Some(Scope::Item(key.to_string()))
        }
    }

    /// Whether it is a repository's scope.
    pub fn is_repo(&self) -> bool {
        matches!(self, Scope::Repo(_))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Repo(name) => write!(f, "{}{name}", Self::REPO),
            Scope::Item(key) => write!(f, "{}{key}", Self::ITEM),
        }
    }
}

pub fn item(key: &str) -> Key {
    Key::one(format!("item#{key}"))
}
/// A scope's own partition: the only one of an item's scope, and for a repository the one that
/// versions before [`SCOPE_SHARDS`] wrote every summary and push into (still read, see
/// [`scope_partitions`]).
pub fn scope_pk(scope: &Scope) -> String {
    format!("scope#{scope}")
}
/// Partitions a repository's summaries and pushes are spread over, by a hash of the item key
/// (of the pushed commit for a push). Every delivery writes its item's summary and every
/// settlement rewrites some: under one partition key a repository held about 1,000 / 3.0 ≈ 330
/// deliveries/s before DynamoDB's per-partition limit of 1,000 WCU/s throttled it (docs/cost.md,
/// "Per partition key"); spread over four it holds about 1,300/s, above the API's default
/// throttle (500/s, bursts of 1,000). A settlement reads every shard (and the legacy partition).
pub const SCOPE_SHARDS: u32 = 4;
/// The partition key of shard `n` of a repository's scope.
pub fn scope_shard_pk(scope: &Scope, n: u32) -> String {
    format!("scope#{scope}#{n}")
}
/// Every partition a scope's summaries and pushes may be in: for a repository its shards, then
/// its legacy partition ([`scope_pk`]); for an item's scope, its one partition.
pub fn scope_partitions(scope: &Scope) -> Vec<String> {
    match scope {
        Scope::Repo(_) => (0..SCOPE_SHARDS)
            .map(|n| scope_shard_pk(scope, n))
            .chain([scope_pk(scope)])
            .collect(),
        Scope::Item(_) => vec![scope_pk(scope)],
    }
}
/// Where a record named by `hash_of` lives in `scope`: its repository shard, or the item
/// scope's one partition.
fn scope_home(scope: &Scope, hash_of: &str) -> String {
    match scope {
        Scope::Repo(_) => scope_shard_pk(scope, shard_of(hash_of, SCOPE_SHARDS)),
        Scope::Item(_) => scope_pk(scope),
    }
}
/// An item's summary, in its shard of the scope.
pub fn summary(scope: &Scope, item_key: &str) -> Key {
    Key::new(
        scope_home(scope, item_key),
        ScopeEntry::Summary(item_key).sk(),
    )
}
/// Where versions before the shards kept an item's summary (the scope's own partition): read,
/// and removed when the summary is next written by a settlement.
pub fn legacy_summary(scope: &Scope, item_key: &str) -> Key {
    Key::new(scope_pk(scope), ScopeEntry::Summary(item_key).sk())
}
/// A push, in its shard of the scope (by the commit it moved the branch to).
pub fn push(scope: &Scope, after: &str) -> Key {
    let after = after.to_ascii_lowercase();
    Key::new(scope_home(scope, &after), ScopeEntry::Push(&after).sk())
}
/// The partition key of shard `n` of a repository's sealed history ([`super::seal`]): the
/// summaries and pushes a settlement no longer reads whole, and the lookups that find them.
pub fn sealed_shard_pk(scope: &Scope, n: u32) -> String {
    format!("sealed#{scope}#{n}")
}
/// Every partition of a repository's sealed history (read whole only when a late fact reaches
/// before its checkpoint).
pub fn sealed_partitions(scope: &Scope) -> Vec<String> {
    (0..SCOPE_SHARDS)
        .map(|n| sealed_shard_pk(scope, n))
        .collect()
}
fn sealed_home(scope: &Scope, entry: ScopeEntry<'_>) -> Key {
    let sk = entry.sk();
    Key::new(sealed_shard_pk(scope, shard_of(&sk, SCOPE_SHARDS)), sk)
}
/// A sealed item's summary.
pub fn sealed_summary(scope: &Scope, item_key: &str) -> Key {
    sealed_home(scope, ScopeEntry::Summary(item_key))
}
/// A sealed push.
pub fn sealed_push(scope: &Scope, after: &str) -> Key {
    sealed_home(scope, ScopeEntry::Push(&after.to_ascii_lowercase()))
}
/// The sealed records that name a commit (lower case).
pub fn sealed_sha(scope: &Scope, sha: &str) -> Key {
    sealed_home(scope, ScopeEntry::Sha(&sha.to_ascii_lowercase()))
}
/// The sealed records that name a branch.
pub fn sealed_branch(scope: &Scope, branch: &str) -> Key {
    sealed_home(scope, ScopeEntry::Branch(branch))
}
/// A repository's checkpoint ([`super::seal::Checkpoint`]), in its first shard: read with the
/// live records, written only by settlements.
pub fn checkpoint(scope: &Scope) -> Key {
    Key::new(scope_shard_pk(scope, 0), ScopeEntry::Checkpoint.sk())
}
/// A ledger on its own, as versions before ledgers moved into summaries wrote it (in the
/// scope's own partition).
pub fn ledger(scope: &Scope, owner: &str) -> Key {
    Key::new(scope_pk(scope), ScopeEntry::Ledger(owner).sk())
}

/// A record of a scope's partition (`scope#<scope>`), named by its sort key: built and parsed
/// here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeEntry<'a> {
    /// `s#<item key>`: an item's summary.
    Summary(&'a str),
    /// `p#<after>`: a push, by the commit it moved the branch to (lower case).
    Push(&'a str),
    /// `l#<owner key>`: a ledger on its own, as older versions wrote it.
    Ledger(&'a str),
    /// `h#<sha>`: which sealed records name a commit.
    Sha(&'a str),
    /// `b#<branch>`: which sealed records name a branch.
    Branch(&'a str),
    /// `c#`: the repository's checkpoint.
    Checkpoint,
}

impl<'a> ScopeEntry<'a> {
    const SUMMARY: &'static str = "s#";
    const PUSH: &'static str = "p#";
    const LEDGER: &'static str = "l#";
    const SHA: &'static str = "h#";
    const BRANCH: &'static str = "b#";
    const CHECKPOINT: &'static str = "c#";

    /// The sort key.
    pub fn sk(self) -> String {
        let (prefix, rest) = match self {
            ScopeEntry::Summary(k) => (Self::SUMMARY, k),
            ScopeEntry::Push(k) => (Self::PUSH, k),
            ScopeEntry::Ledger(k) => (Self::LEDGER, k),
            ScopeEntry::Sha(k) => (Self::SHA, k),
            ScopeEntry::Branch(k) => (Self::BRANCH, k),
            ScopeEntry::Checkpoint => (Self::CHECKPOINT, ""),
        };
        format!("{prefix}{rest}")
    }

    /// The record a sort key names (`None`: a record of no kind known here).
    pub fn parse(sk: &'a str) -> Option<Self> {
        let (prefix, rest) = sk.split_at_checked(2)?;
        match prefix {
            Self::SUMMARY => Some(ScopeEntry::Summary(rest)),
            Self::PUSH => Some(ScopeEntry::Push(rest)),
            Self::LEDGER => Some(ScopeEntry::Ledger(rest)),
            Self::SHA => Some(ScopeEntry::Sha(rest)),
            Self::BRANCH => Some(ScopeEntry::Branch(rest)),
            Self::CHECKPOINT if rest.is_empty() => Some(ScopeEntry::Checkpoint),
            _ => None,
        }
    }
}
/// Partitions the wake-up markers are spread over. Every delivery that changes something writes
/// (or finds) a marker, so under one partition key the whole table's deliveries would share one
/// DynamoDB partition's 1,000 WCU/s (README, "Throttling"); a drain reads every shard.
pub const PENDING_SHARDS: u32 = 16;
/// The one partition of wake-up markers before they were spread over [`PENDING_SHARDS`]: still
/// read (and drained) so that a table written by an older version loses no wake-up.
pub const PENDING_LEGACY: &str = "pending";
/// The partition key of wake-up marker shard `n`.
pub fn pending_shard(n: u32) -> String {
    format!("pending#{n:02}")
}
/// Every partition that may hold wake-up markers: the shards, then the legacy one.
pub fn pending_partitions() -> Vec<String> {
    (0..PENDING_SHARDS)
        .map(pending_shard)
        .chain([PENDING_LEGACY.to_string()])
        .collect()
}
/// A scope's wake-up marker due at `due`. Its shard is a hash of the sort key (due time and
/// scope), so one busy scope's successive markers land on different shards, and a delivery can
/// compute the key of the marker it would write (and read it first).
pub fn pending(due: crate::model::Time, scope: &Scope) -> Key {
    let sk = format!("{}#{scope}", time_sk(due));
    Key::new(pending_shard(shard_of(&sk, PENDING_SHARDS)), sk)
}
/// A stable hash (FNV-1a, 64 bits) of `s`, modulo `n`: the same in every process and version.
pub fn shard_of(s: &str, n: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(n.max(1))) as u32
}
pub const OUTBOX: &str = "outbox";
/// A batch of `scope`'s settlement, named `id` (a hash of its content).
pub fn outbox_item(at: crate::model::Time, scope: &Scope, id: &str) -> Key {
    Key::new(OUTBOX, format!("{}#{scope}#{id}", time_sk(at)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_reads_back_from_its_text() {
        let repo = crate::model::Repo::new("a/b");
        let cases = [
            (Scope::of(Some(&repo), "k"), "repo#a/b"),
            (Scope::of(None, "jira:X-1"), "item#jira:X-1"),
        ];
        for (scope, text) in cases {
            assert_eq!(scope.to_string(), text);
            assert_eq!(Scope::parse(text), Some(scope));
        }
        assert!(Scope::parse("repo#a/b").unwrap().is_repo());
        assert!(!Scope::parse("item#repo#a/b").unwrap().is_repo());
        assert_eq!(Scope::parse("scope#x"), None);
        // Scopes order as their texts: the drain's maps keep the order they had as strings.
        let mut texts = ["repo#b", "item#z", "repo#a/b", "item#a", "repo#a"];
        let mut scopes: Vec<Scope> = texts.iter().map(|t| Scope::parse(t).unwrap()).collect();
        texts.sort();
        scopes.sort();
        let back: Vec<String> = scopes.iter().map(Scope::to_string).collect();
        assert_eq!(back, texts);
    }

    fn repo_ab() -> Scope {
        Scope::Repo("a/b".into())
    }

    #[test]
    fn a_scope_entry_reads_back_from_the_sort_key_it_builds() {
        let item_x = Scope::Item("x".into());
        let cases = [
            (
                repo_ab(),
                summary(&repo_ab(), "github:a/b#1"),
                ScopeEntry::Summary("github:a/b#1"),
            ),
            (
                repo_ab(),
                push(&repo_ab(), "FF00"),
                ScopeEntry::Push("ff00"),
            ),
            (
                item_x.clone(),
                ledger(&item_x, "jira:X-1"),
                ScopeEntry::Ledger("jira:X-1"),
            ),
        ];
        for (scope, key, entry) in cases {
            assert!(scope_partitions(&scope).contains(&key.pk), "{key:?}");
            assert_eq!(ScopeEntry::parse(&key.sk), Some(entry), "{}", key.sk);
            assert_eq!(entry.sk(), key.sk);
        }
        assert_eq!(summary(&repo_ab(), "k").sk, "s#k", "the stored layout");
        assert_eq!(
            summary(&repo_ab(), "k").pk,
            format!("scope#repo#a/b#{}", shard_of("k", SCOPE_SHARDS)),
            "the stored layout"
        );
        assert_eq!(legacy_summary(&repo_ab(), "k").pk, "scope#repo#a/b");
        assert_eq!(
            summary(&Scope::Item("jira:X-1".into()), "jira:X-1").pk,
            "scope#item#jira:X-1",
            "an item's scope is not spread"
        );
        assert_eq!(ScopeEntry::parse("x#1"), None);
        assert_eq!(
            scope_partitions(&repo_ab()),
            [
                "scope#repo#a/b#0",
                "scope#repo#a/b#1",
                "scope#repo#a/b#2",
                "scope#repo#a/b#3",
                "scope#repo#a/b"
            ]
        );
        assert_eq!(ScopeEntry::parse("s"), None);
        assert_eq!(ScopeEntry::parse("s#"), Some(ScopeEntry::Summary("")));
    }
}
