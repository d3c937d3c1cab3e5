//! The DynamoDB store (production, and `serve` when `VALUESTREAM_TABLE` is set).
//!
//! One table, string keys `pk` (HASH) and `sk` (RANGE). Each record is one item:
//!
//! | attribute | type | holds |
//! |---|---|---|
//! | `pk`, `sk` | S | the record's [`Key`] |
//! | `v` | N | the record's version (conditions compare it) |
//! | `ttl` | N | epoch seconds after which the record no longer exists (DynamoDB TTL deletes it later) |
//! | `d` | S | the record's data, as JSON (records of less than 600 bytes of data) |
//! | `z` | B | the record's data, as DEFLATE-compressed JSON (larger records, when smaller) |
//!
//! DynamoDB's TTL deletes expired items only eventually (typically within days), so every read
//! treats `ttl <= now` as absent and every condition says the same: `Absent` holds over an
//! expired item, `Version` does not.
//!
//! Requests: `get_many` is one BatchGetItem per 100 keys (plus retries of unprocessed keys),
//! `query` is one Query per page, and `commit` is one PutItem/DeleteItem (a single write) or one
//! TransactWriteItems (several, at most 100). Reads are strongly consistent, so a writer sees the
//! versions its conditions will be checked against. Nothing here scans the table.
//!
//! Every wait is bounded ([`bounded`]): a DynamoDB that accepts connections but never answers
//! turns into [`StoreError::Backend`] saying it timed out, which the router answers with 503.

use super::{
    now_epoch, Cond, Data, Key, KeyRange, Limits, Order, Record, Store, StoreError, StoreResult,
    Write,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType,
    KeysAndAttributes, Put, ReturnValue, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

/// Keys per BatchGetItem request (DynamoDB's limit).
const BATCH_GET_MAX: usize = 100;
/// Writes per TransactWriteItems request (DynamoDB's limit).
const TRANSACT_MAX: usize = 100;
/// What one DynamoDB request takes at most ([`Store::limits`]).
pub const LIMITS: Limits = Limits {
    writes_per_commit: TRANSACT_MAX,
    keys_per_get: BATCH_GET_MAX,
    data_bytes: MAX_DATA_BYTES,
    commit_bytes: TRANSACT_BYTES_MAX,
};
/// Bytes of all the items of one TransactWriteItems request (DynamoDB's limit).
const TRANSACT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest `d` attribute accepted. A DynamoDB item is at most 400 KB including attribute names
/// and the key; this leaves room for those.
pub const MAX_DATA_BYTES: usize = 350 * 1024;
/// Rounds of retrying BatchGetItem's unprocessed keys before giving up.
const UNPROCESSED_RETRIES: u32 = 8;
/// Largest page a query asks for.
const QUERY_PAGE_MAX: usize = 1000;

const PK: &str = "pk";
const SK: &str = "sk";
const VERSION: &str = "v";
const TTL: &str = "ttl";
const DATA: &str = "d";
/// The record's data as DEFLATE-compressed JSON (binary), in place of `d` when that is smaller.
const DATA_DEFLATED: &str = "z";
/// Data of at least this many bytes is stored compressed: below it an item fits in 1 KB (1 WCU)
/// anyway.
const DEFLATE_FROM: usize = 600;
/// Largest data a compressed attribute may inflate to (a bound against a corrupt item).
const INFLATE_MAX: usize = 4 * MAX_DATA_BYTES;

pub struct DynamoStore {
    client: Client,
    table: String,
    requests: AtomicU64,
    read_units: AtomicU64,
    write_units: AtomicU64,
    /// Capacity per partition key, when asked for ([`DynamoStore::count_partitions`]).
    partitions: std::sync::Mutex<Option<HashMap<String, Capacity>>>,
}

/// Capacity units consumed so far, computed from item sizes as DynamoDB bills on-demand tables:
/// a write 1 WCU per started KB of the item (its names and values), twice inside a transaction;
/// a strongly consistent read 1 RCU per started 4 KB of each item (BatchGetItem, absent items
/// 1), of the page (Query, at least 1). A delete is billed by the size of the item it removes:
/// a `DeleteItem` asks for the old item (`ALL_OLD`, which costs no capacity) and counts its size,
/// at least 1 WCU; a delete inside a transaction is counted as 2 (the engine deletes only small
/// records there: wake-up markers and ledgers). A put over a larger item is counted by the new
/// item's size (DynamoDB bills the larger; the engine's records grow, except an outbox batch
/// written back after a failed export).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub read_units: u64,
    pub write_units: u64,
}

/// An item's size as DynamoDB counts it: attribute names plus values (numbers approximated by
/// their decimal digits).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, v)| {
            name.len()
                + match v {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum()
}

fn units(bytes: usize, unit: usize) -> u64 {
    bytes.div_ceil(unit).max(1) as u64
}

/// Longest wait for a TCP (and TLS) connection to DynamoDB.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one attempt of an operation (one HTTP request and its answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts per operation, the first included (the SDK retries throttling, 5xx, timeouts and
/// connection failures with jittered exponential backoff).
pub const MAX_ATTEMPTS: u32 = 3;

/// The SDK's timeouts and retries on a client configuration: connect [`CONNECT_TIMEOUT`], each
/// attempt [`ATTEMPT_TIMEOUT`], the whole operation (retries and backoff included)
/// `operation_timeout` (`VALUESTREAM_DYNAMODB_TIMEOUT_MS`), at most [`MAX_ATTEMPTS`] attempts.
/// A DynamoDB that accepts connections and never answers therefore costs a delivery at most
/// `operation_timeout`, and the sender gets a 503 it can retry.
pub fn bounded(
    builder: aws_sdk_dynamodb::config::Builder,
    operation_timeout: Duration,
) -> aws_sdk_dynamodb::config::Builder {
    let attempt = ATTEMPT_TIMEOUT.min(operation_timeout);
    builder
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT.min(attempt))
                .operation_attempt_timeout(attempt)
                .operation_timeout(operation_timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(1)),
        )
}

fn backend_sdk<E, R>(what: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let timed_out = match &e {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => d.is_timeout(),
        _ => false,
    };
    if timed_out {
        StoreError::Backend(format!(
            "DynamoDB {what} timed out: no answer within the time VALUESTREAM_DYNAMODB_TIMEOUT_MS \
             allows ({})",
            DisplayErrorContext(&e)
        ))
    } else {
        StoreError::Backend(format!("DynamoDB {what}: {}", DisplayErrorContext(&e)))
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key_item(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(&key.pk)), (SK.to_string(), s(&key.sk))])
}

fn record_item(record: &Record) -> StoreResult<HashMap<String, AttributeValue>> {
    let data = std::str::from_utf8(record.data.as_bytes())
        .map_err(|e| StoreError::Backend(format!("record data is not UTF-8 text: {e}")))?;
    if data.len() > MAX_DATA_BYTES {
        return Err(StoreError::Backend(format!(
            "record {}/{} holds {} bytes of data, more than the {MAX_DATA_BYTES} bytes a DynamoDB \
             item (at most 400 KB) can take; it was not written",
            record.key.pk,
            record.key.sk,
            data.len()
        )));
    }
    let mut item = key_item(&record.key);
    item.insert(VERSION.into(), n(record.version));
    item.insert(TTL.into(), n(record.expires_at));
    // Write units are per started KB of the item: JSON facts shrink 3-5x under DEFLATE.
    let deflated = (data.len() >= DEFLATE_FROM)
        .then(|| miniz_oxide::deflate::compress_to_vec(data.as_bytes(), 6))
        .filter(|z| z.len() < data.len());
    match deflated {
        Some(z) => item.insert(DATA_DEFLATED.into(), AttributeValue::B(Blob::new(z))),
        None => item.insert(DATA.into(), s(data)),
    };
    Ok(item)
}

fn str_attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> StoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::Backend(format!(
            "DynamoDB item has no string attribute {name:?}: not a valuestream record"
        ))),
    }
}

fn num_attr<T: std::str::FromStr>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> StoreResult<T> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
            StoreError::Backend(format!(
                "DynamoDB item attribute {name:?} is not a whole number: {v}"
            ))
        }),
        _ => Err(StoreError::Backend(format!(
            "DynamoDB item has no number attribute {name:?}: not a valuestream record"
        ))),
    }
}

/// The record an item holds, or `None` when it has expired (public for tests that read the
/// table directly: record data may be stored DEFLATE-compressed).
pub fn decode(item: &HashMap<String, AttributeValue>, now: i64) -> StoreResult<Option<Record>> {
    let expires_at: i64 = num_attr(item, TTL)?;
    if expires_at <= now {
        return Ok(None);
    }
    let key = Key::new(str_attr(item, PK)?, str_attr(item, SK)?);
    let data = match item.get(DATA_DEFLATED) {
        Some(AttributeValue::B(z)) => {
            miniz_oxide::inflate::decompress_to_vec_with_limit(z.as_ref(), INFLATE_MAX)
                .map_err(|e| {
                    StoreError::Backend(format!(
                        "record {}/{} holds compressed data that does not inflate: {e}",
                        key.pk, key.sk
                    ))
                })
                .and_then(|json| {
                    Data::from_json(json).map_err(|e| {
                        StoreError::Backend(format!(
                            "record {}/{} holds data that is not JSON: {e}",
                            key.pk, key.sk
                        ))
                    })
                })?
        }
        _ => Data::from_json(str_attr(item, DATA)?.to_owned()).map_err(|e| {
            StoreError::Backend(format!(
                "record {}/{} holds data that is not JSON: {e}",
                key.pk, key.sk
            ))
        })?,
    };
    Ok(Some(Record {
        version: num_attr(item, VERSION)?,
        expires_at,
        data,
        key,
    }))
}

/// A write's precondition as a condition expression, its names and its values.
struct Condition {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn condition(cond: Cond, now: i64) -> Option<Condition> {
    match cond {
        Cond::Any => None,
        // No item, or only an expired one that TTL has not deleted yet.
        Cond::Absent => Some(Condition {
            expression: "attribute_not_exists(#pk) OR #ttl <= :now".into(),
            names: HashMap::from([("#pk".into(), PK.into()), ("#ttl".into(), TTL.into())]),
            values: HashMap::from([(":now".into(), n(now))]),
        }),
        Cond::Version(v) => Some(Condition {
            expression: "#v = :v AND #ttl > :now".into(),
            names: HashMap::from([("#v".into(), VERSION.into()), ("#ttl".into(), TTL.into())]),
            values: HashMap::from([(":v".into(), n(v)), (":now".into(), n(now))]),
        }),
    }
}

fn cond_of(write: &Write) -> Cond {
    match write {
        Write::Put { cond, .. } | Write::Delete { cond, .. } => *cond,
    }
}

/// Whether a cancelled transaction failed on a condition or on a concurrent transaction (both
/// mean: another writer got there first; read again and retry).
fn cancelled_by_conflict(reasons: &[String], message: &str) -> bool {
    let conflict = |code: &str| code == "ConditionalCheckFailed" || code == "TransactionConflict";
    if reasons.is_empty() {
        // Servers that send no structured reasons still list them in the message.
        return message.contains("ConditionalCheckFailed")
            || message.contains("TransactionConflict");
    }
    reasons.iter().any(|r| conflict(r))
}

impl DynamoStore {
    /// A store on `table`, with the standard AWS configuration from the environment (region,
    /// credentials, and `AWS_ENDPOINT_URL_DYNAMODB` for a local DynamoDB-compatible server) and
    /// the [`bounded`] timeouts.
    pub async fn connect(table: &str, operation_timeout: Duration) -> StoreResult<Self> {
        Ok(Self::with_client(
            client_from_env(operation_timeout).await,
            table,
        ))
    }

    /// A store on `table` through an already configured client.
    pub fn with_client(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            requests: AtomicU64::new(0),
            read_units: AtomicU64::new(0),
            write_units: AtomicU64::new(0),
            partitions: std::sync::Mutex::new(None),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn count(&self) {
        self.requests.fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn consume(&self, read_units: u64, write_units: u64) {
        self.read_units
            .fetch_add(read_units, AtomicOrdering::Relaxed);
        self.write_units
            .fetch_add(write_units, AtomicOrdering::Relaxed);
    }

    /// From now on, also counts capacity per partition key (tests and benches: the per-key
    /// rates of docs/cost.md); off by default, since a table has a partition per item.
    pub fn count_partitions(&self) {
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.get_or_insert_with(HashMap::new);
    }

    /// Capacity units consumed per partition key since [`DynamoStore::count_partitions`].
    pub fn capacity_by_partition(&self) -> HashMap<String, Capacity> {
        let p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.clone().unwrap_or_default()
    }

    /// Counts capacity units against partition `pk`, as well as the table's.
    fn consume_in(&self, pk: &str, read_units: u64, write_units: u64) {
        self.consume(read_units, write_units);
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = p.as_mut() {
            let c = p.entry(pk.to_string()).or_default();
            c.read_units += read_units;
            c.write_units += write_units;
        }
    }

    /// Capacity units consumed so far (see [`Capacity`]).
    pub fn capacity(&self) -> Capacity {
        Capacity {
            read_units: self.read_units.load(AtomicOrdering::Relaxed),
            write_units: self.write_units.load(AtomicOrdering::Relaxed),
        }
    }

    async fn put_one(&self, record: &Record, cond: Cond, now: i64) -> StoreResult<()> {
        let item = record_item(record)?;
        self.consume_in(&record.key.pk, 0, units(item_size(&item), 1024));
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if let Some(c) = condition(cond, now) {
            req = req
                .condition_expression(c.expression)
                .set_expression_attribute_names(Some(c.names))
                .set_expression_attribute_values(Some(c.values));
        }
        self.count();
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_))
                | Some(PutItemError::TransactionConflictException(_)) => StoreError::Conflict,
                _ => backend_sdk("PutItem", e),
            }),
        }
    }

    async fn delete_one(&self, key: &Key, cond: Cond, now: i64) -> StoreResult<()> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .return_values(ReturnValue::AllOld)
            .set_key(Some(key_item(key)));
        if let Some(c) = condition(cond, now) {
            req = req
                .condition_expression(c.expression)
                .set_expression_attribute_names(Some(c.names))
                .set_expression_attribute_values(Some(c.values));
        }
        self.count();
        match req.send().await {
            Ok(out) => {
                let removed = out.attributes().map_or(0, item_size);
                self.consume_in(&key.pk, 0, units(removed, 1024));
                Ok(())
            }
            Err(e) => Err(match e.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_))
                | Some(DeleteItemError::TransactionConflictException(_)) => StoreError::Conflict,
                _ => backend_sdk("DeleteItem", e),
            }),
        }
    }

    async fn transact(&self, writes: &[Write], now: i64) -> StoreResult<()> {
        let mut items = Vec::with_capacity(writes.len());
        for write in writes {
            let c = condition(cond_of(write), now);
            let (expression, names, values) = match c {
                Some(c) => (Some(c.expression), Some(c.names), Some(c.values)),
                None => (None, None, None),
            };
            let item = match write {
                Write::Put { record, .. } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some({
                                let item = record_item(record)?;
                                let wcu = 2 * units(item_size(&item), 1024);
                                self.consume_in(&record.key.pk, 0, wcu);
                                item
                            }))
                            .set_condition_expression(expression)
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(|e| StoreError::Backend(e.to_string()))?,
                    )
                    .build(),
                Write::Delete { key, .. } => TransactWriteItem::builder()
                    .delete({
                        self.consume_in(&key.pk, 0, 2);
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key_item(key)))
                            .set_condition_expression(expression)
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(|e| StoreError::Backend(e.to_string()))?
                    })
                    .build(),
            };
            items.push(item);
        }
        self.count();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) =
                    e.as_service_error()
                {
                    let reasons: Vec<String> = tc
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_string())
                        .collect();
                    if cancelled_by_conflict(&reasons, tc.message().unwrap_or_default()) {
                        return Err(StoreError::Conflict);
                    }
                    return Err(StoreError::Backend(format!(
                        "DynamoDB TransactWriteItems was cancelled (reasons: {}): {}",
                        reasons.join(", "),
                        tc.message().unwrap_or_default()
                    )));
                }
                Err(backend_sdk("TransactWriteItems", e))
            }
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        let now = now_epoch();
        // BatchGetItem refuses duplicate keys: ask for each key once.
        let mut seen = HashSet::new();
        let unique: Vec<&Key> = keys.iter().filter(|k| seen.insert(*k)).collect();
        let mut found: HashMap<Key, Record> = HashMap::new();
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let mut pending = KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().map(|k| key_item(k)).collect()))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            let mut round = 0;
            loop {
                self.count();
                let asked: Vec<(String, String)> = pending
                    .keys()
                    .iter()
                    .filter_map(|k| {
                        Some((
                            str_attr(k, PK).ok()?.to_owned(),
                            str_attr(k, SK).ok()?.to_owned(),
                        ))
                    })
                    .collect();
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| backend_sdk("BatchGetItem", e))?;
                // An absent item still costs a read unit: every key asked for and neither
                // returned nor left unprocessed.
                let mut unanswered: HashSet<(String, String)> = asked.into_iter().collect();
                if let Some(u) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    for k in u.keys() {
                        if let (Ok(pk), Ok(sk)) = (str_attr(k, PK), str_attr(k, SK)) {
                            unanswered.remove(&(pk.to_owned(), sk.to_owned()));
                        }
                    }
                }
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    for item in items {
                        let pk = str_attr(item, PK)?;
                        if let Ok(sk) = str_attr(item, SK) {
                            unanswered.remove(&(pk.to_owned(), sk.to_owned()));
                        }
                        self.consume_in(pk, units(item_size(item), 4096), 0);
                        if let Some(rec) = decode(item, now)? {
                            found.insert(rec.key.clone(), rec);
                        }
                    }
                }
                for (pk, _) in &unanswered {
                    self.consume_in(pk, 1, 0);
                }
                match out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|u| !u.keys().is_empty())
                {
                    Some(rest) => {
                        round += 1;
                        if round > UNPROCESSED_RETRIES {
                            return Err(StoreError::Backend(format!(
                                "DynamoDB BatchGetItem left {} keys unprocessed after {UNPROCESSED_RETRIES} retries (throttled)",
                                rest.keys().len()
                            )));
                        }
                        pending = rest.clone();
                        let backoff = 25u64 << round.min(5);
                        tokio::time::sleep(Duration::from_millis(backoff)).await;
                    }
                    None => break,
                }
            }
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn query(
        &self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        let (from, to) = (range.from(), range.to());
        // A sort key is never empty, so an empty upper bound matches nothing.
        if limit == 0 || to.is_empty() || range.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_epoch();
        let mut values = HashMap::from([(":pk".to_string(), s(pk)), (":to".to_string(), s(to))]);
        // DynamoDB refuses an empty string as a key value: an empty lower bound is no bound.
        let expression = if from.is_empty() {
            "#pk = :pk AND #sk <= :to"
        } else {
            values.insert(":from".into(), s(from));
            "#pk = :pk AND #sk BETWEEN :from AND :to"
        };
        let names = HashMap::from([
            ("#pk".to_string(), PK.into()),
            ("#sk".to_string(), SK.into()),
        ]);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = (limit - out.len()).min(QUERY_PAGE_MAX) as i32;
            self.count();
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(expression)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(order == Order::Ascending)
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend_sdk("Query", e))?;
            self.consume_in(pk, units(resp.items().iter().map(item_size).sum(), 4096), 0);
            for item in resp.items() {
                if let Some(rec) = decode(item, now)? {
                    out.push(rec);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            match resp.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        let now = now_epoch();
        match writes.as_slice() {
            [] => Ok(()),
            [Write::Put { record, cond }] => self.put_one(record, *cond, now).await,
            [Write::Delete { key, cond }] => self.delete_one(key, *cond, now).await,
            many if many.len() > TRANSACT_MAX => Err(StoreError::Backend(format!(
                "a commit of {} writes is more than the {TRANSACT_MAX} one DynamoDB transaction \
                 takes; nothing was written",
                many.len()
            ))),
            many => self.transact(many, now).await,
        }
    }

    /// DynamoDB's: 100 writes per TransactWriteItems, 100 keys per BatchGetItem, a 400 KB item
    /// (less the room its attribute names and key take), 4 MB per transaction.
    fn limits(&self) -> Limits {
        LIMITS
    }

    fn requests(&self) -> u64 {
        self.requests.load(AtomicOrdering::Relaxed)
    }
}

/// Creates the table (on-demand capacity, keys `pk`/`sk`) and enables TTL on `ttl`, with the
/// standard AWS configuration from the environment. Succeeds when the table already exists.
pub async fn create_table(table: &str, operation_timeout: Duration) -> StoreResult<()> {
    create_table_with(&client_from_env(operation_timeout).await, table).await
}

/// A client with the standard AWS configuration from the environment and [`bounded`] waits.
async fn client_from_env(operation_timeout: Duration) -> Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let conf = bounded(
        aws_sdk_dynamodb::config::Builder::from(&config),
        operation_timeout,
    );
    Client::from_conf(conf.build())
}

/// [`create_table`] through an already configured client.
pub async fn create_table_with(client: &Client, table: &str) -> StoreResult<()> {
    create_if_absent(client, table).await?;
    wait_until_active(client, table).await?;
    enable_ttl(client, table).await
}

/// Sends `CreateTable` (on-demand, keys `pk`/`sk`); a table that exists already is kept.
async fn create_if_absent(client: &Client, table: &str) -> StoreResult<()> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            tracing::info!(table, "the table exists already");
            Ok(())
        }
        Err(e) => Err(backend_sdk("CreateTable", e)),
    }
}

/// Polls `DescribeTable` (backing off to 5 s) until the table is ACTIVE, for 5 minutes at most.
async fn wait_until_active(client: &Client, table: &str) -> StoreResult<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut wait = Duration::from_millis(100);
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| backend_sdk("DescribeTable", e))?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(StoreError::Backend(format!(
                "table {table} is still {status:?} after 5 minutes; it never became ACTIVE"
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Turns TTL on for attribute `ttl`, unless it is on already; TTL on another attribute is an
/// error.
async fn enable_ttl(client: &Client, table: &str) -> StoreResult<()> {
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| backend_sdk("DescribeTimeToLive", e))?;
    let current = ttl.time_to_live_description();
    let status = current.and_then(|d| d.time_to_live_status());
    let attribute = current.and_then(|d| d.attribute_name());
    match status {
        Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling) => {
            if attribute != Some(TTL) {
                return Err(StoreError::Backend(format!(
                    "table {table} has TTL on attribute {attribute:?}; valuestream needs it on {TTL:?}"
                )));
            }
        }
        _ => {
            client
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(TTL)
                        .enabled(true)
                        .build()
                        .map_err(|e| StoreError::Backend(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| backend_sdk("UpdateTimeToLive", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn large_data_is_stored_deflated_and_read_back() {
        let facts: Vec<_> = (0..60)
            .map(|i| json!({"kind": "change", "at": "2024-05-01T10:00:00Z", "n": i, "repo": "octo/hello"}))
            .collect();
        let record = Record {
            key: Key::new("scope#github/change/octo/hello/2", "facts"),
            version: 3,
            expires_at: now_epoch() + 600,
            data: json!(facts).into(),
        };
        let item = record_item(&record).unwrap();
        let plain = record.data.len();
        assert!(!item.contains_key(DATA), "large data is not stored as text");
        let Some(AttributeValue::B(z)) = item.get(DATA_DEFLATED) else {
            panic!("large data is stored compressed: {item:?}")
        };
        assert!(
            z.as_ref().len() * 3 < plain,
            "{} of {plain}",
            z.as_ref().len()
        );
        assert!(
            item_size(&item) < 1024,
            "one write unit, not {}",
            plain / 1024 + 1
        );
        assert_eq!(decode(&item, now_epoch()).unwrap(), Some(record.clone()));
        // Small data stays readable text.
        let small = Record {
            data: json!({"open": true}).into(),
            ..record
        };
        let item = record_item(&small).unwrap();
        assert!(matches!(item.get(DATA), Some(AttributeValue::S(_))));
        assert_eq!(decode(&item, now_epoch()).unwrap(), Some(small));
    }

    #[test]
    fn item_round_trip_and_expiry() {
        let rec = Record {
            key: Key::new("item#a", "_"),
            version: 3,
            expires_at: 2_000,
            data: json!({"x": [1, "é"]}).into(),
        };
        let item = record_item(&rec).unwrap();
        assert_eq!(item.get("ttl"), Some(&AttributeValue::N("2000".into())));
        assert_eq!(item.get("v"), Some(&AttributeValue::N("3".into())));
        assert_eq!(decode(&item, 1_999).unwrap(), Some(rec));
        assert_eq!(decode(&item, 2_000).unwrap(), None, "ttl <= now is absent");
    }

    #[test]
    fn oversized_data_is_refused_with_a_clear_message() {
        let rec = Record {
            key: Key::new("item#big", "_"),
            version: 1,
            expires_at: 2_000,
            data: json!("x".repeat(MAX_DATA_BYTES + 1)).into(),
        };
        match record_item(&rec) {
            Err(StoreError::Backend(m)) => assert!(m.contains("400 KB"), "{m}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    #[test]
    fn conflict_reasons() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(cancelled_by_conflict(
            &r(&["None", "ConditionalCheckFailed"]),
            ""
        ));
        assert!(cancelled_by_conflict(
            &r(&["TransactionConflict", "None"]),
            ""
        ));
        assert!(!cancelled_by_conflict(&r(&["ValidationError", "None"]), ""));
        assert!(cancelled_by_conflict(
            &[],
            "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed]"
        ));
    }
}
