//! `GET /metrics`: the stored metric series in Prometheus text format (issue 6).

use crate::store::{Store, StoreError};

pub async fn render(_store: &dyn Store) -> Result<String, StoreError> {
    Ok(String::new())
}
