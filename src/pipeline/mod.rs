//! The pipeline: the engine, its store and an exporter, with the outbox between them. It is
//! built in one place, [`build`], from the configuration, by every host: Lambda, `serve` and
//! `replay`. Nothing below it (engine, store, export) knows it exists.

pub mod health;
pub mod outbox;

pub use outbox::{Drained, HealthExport, Pipeline};

use crate::config::Config;
use crate::engine::Engine;
use crate::export::{ExportError, Exporter};
use crate::store::{
    dynamodb::DynamoStore, embedded::EmbeddedStore, memory::MemoryStore, Store, StoreError,
};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

/// DynamoDB when `VALUESTREAM_TABLE` is set; otherwise the embedded store in `data_dir`, or the
/// in-memory store when there is none.
pub async fn open_store(
    config: &Config,
    data_dir: Option<&Path>,
) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(table) = &config.table {
        let timeout = std::time::Duration::from_millis(config.dynamodb_timeout_ms);
        return Ok(Arc::new(DynamoStore::connect(table, timeout).await?));
    }
    Ok(match data_dir {
        Some(dir) => Arc::new(EmbeddedStore::open(dir)?),
        None => Arc::new(MemoryStore::new()),
    })
}

/// The pipeline the configuration asks for, sending to `exporter` (callers build it first, with
/// [`crate::export::from_env`] or [`crate::export::from_settings`], so that every setting is
/// checked before anything is opened): the store ([`open_store`]) and the engine over both,
/// waiting `VALUESTREAM_RETRY_SECS` after a failed export.
pub async fn build(
    config: Arc<Config>,
    data_dir: Option<&Path>,
    exporter: Box<dyn Exporter>,
) -> Result<Arc<Pipeline>, PipelineError> {
    let store = open_store(&config, data_dir).await?;
    let retry_secs = config.retry_secs as i64;
    Ok(Arc::new(
        Pipeline::new(Engine::new(store, config), Arc::from(exporter)).with_retry_secs(retry_secs),
    ))
}

impl Pipeline {
    /// Every stored metric series (the `GET /metrics` exposition reads these).
    pub async fn series(&self) -> Result<Vec<crate::engine::metrics::Series>, StoreError> {
        crate::engine::metrics::stored(self.engine.store.as_ref(), None).await
    }
}
