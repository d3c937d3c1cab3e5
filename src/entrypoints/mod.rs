//! The two hosts of the one router: the Lambda function and the command line.

pub mod cli;
pub mod lambda;

use crate::config::Config;
use crate::store::{dynamodb::DynamoStore, embedded::EmbeddedStore, Store};
use std::path::Path;
use std::sync::Arc;

/// DynamoDB when `VALUESTREAM_TABLE` is set; otherwise the embedded store in `data_dir` (or in
/// memory when there is none).
pub async fn open_store(
    config: &Config,
    data_dir: Option<&Path>,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(table) = &config.table {
        let timeout = std::time::Duration::from_millis(config.dynamodb_timeout_ms);
        return Ok(Arc::new(DynamoStore::connect(table, timeout).await?));
    }
    Ok(match data_dir {
        Some(dir) => Arc::new(EmbeddedStore::open(dir)?),
        None => Arc::new(EmbeddedStore::in_memory()?),
    })
}

pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().without_time().try_init()
    } else {
        builder.compact().try_init()
    };
}
