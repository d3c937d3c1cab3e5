//! Migration of store files written by older redb releases: redb 2 wrote file format v2, which
//! today's redb no longer opens. redb 2.6 (linked under the name `redb2`) upgrades such a file in
//! place to format v3; the records themselves are unchanged.

use super::backend;
use crate::store::StoreResult;
use std::path::Path;

/// Upgrades the file at `path` to the current file format (a no-op when it already is).
pub(super) fn upgrade_file(path: &Path) -> StoreResult<()> {
    let mut db = redb2::Database::open(path).map_err(backend)?;
    let upgraded = db.upgrade().map_err(backend)?;
    drop(db);
    if upgraded {
        tracing::info!(file = %path.display(), "store file migrated to the current redb format");
    }
    Ok(())
}
