//! DynamoDB store (issue 3: not built yet).

use super::{Key, Order, Record, Store, StoreError, StoreResult, Write};
use async_trait::async_trait;

pub struct DynamoStore;

impl DynamoStore {
    pub async fn connect(_table: &str) -> StoreResult<Self> {
        Err(StoreError::Backend(
            "the DynamoDB store is not built yet".into(),
        ))
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get_many(&self, _keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        unimplemented!()
    }
    async fn query(
        &self,
        _pk: &str,
        _from: &str,
        _to: &str,
        _limit: usize,
        _order: Order,
    ) -> StoreResult<Vec<Record>> {
        unimplemented!()
    }
    async fn commit(&self, _writes: Vec<Write>) -> StoreResult<()> {
        unimplemented!()
    }
}

/// Creates the table with TTL enabled.
pub async fn create_table(_table: &str) -> StoreResult<()> {
    Err(StoreError::Backend(
        "the DynamoDB store is not built yet".into(),
    ))
}
