//! How the engine changes metric series, exactly, in a serverless world.
//!
//! Every metric series is a record in the store (partition `metric`, keyed by [`series_id`])
//! holding its cumulative state, a [`Series`] (defined with the catalogue in `model::series`):
//! a counter's total, or a histogram's bucket counts, count and sum. A delivery only records
//! facts; the drain that settles a scope derives each owner's contributions again as
//! [`Tally`]s, and [`tally_diff`] against the ledger of what was applied before gives what the
//! series take ([`Series::apply_tally`]), in the settlement's own transaction: a redelivery or a
//! second settlement changes nothing, and concurrent drainers conflict and retry instead of
//! colliding. Each update stamps the series' new cumulative value with its fixed start time and
//! a sample time that strictly increases, so a backend that receives points out of order (or
//! twice) still sees one monotonic series and the latest point is the exact total. Readers (the
//! `/metrics` exposition, the correlations) take the stored series from [`stored`].

pub use crate::model::series::LabelStr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::model::attr::metric::*;
pub use crate::model::series::{
    def, time_ns, Labels, MetricDef, MetricKind, Series, BUCKETS, CATALOGUE,
};

/// The store sort key of a series: name and labels, stable across processes.
pub fn series_id(name: &str, labels: &Labels) -> String {
    let mut s = String::from(name);
    s.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&v.replace('\\', "\\\\").replace(',', "\\,"));
    }
    s.push('}');
    s
}

impl Series {
    pub fn new(name: &str, labels: Labels, now_ns: u64) -> Self {
        let kind = def(name).kind;
        Series {
            name: name.to_string(),
            kind,
            labels,
            start_ns: now_ns,
            time_ns: now_ns,
            count: 0,
            sum: 0.0,
            sum_ms: 0,
            buckets: if kind == MetricKind::Histogram {
                vec![0; BUCKETS.len() + 1]
            } else {
                Vec::new()
            },
        }
    }

    /// Applies the difference of two tallies of one item's observations (see
    /// [`tally_diff`]) as one update at `now_ns`.
    pub fn apply_tally(&mut self, d: &Tally, now_ns: u64) {
        self.count = (self.count as i64 + d.count).max(0) as u64;
        if self.kind == MetricKind::Histogram {
            if self.sum_ms == 0 && self.sum != 0.0 {
                self.sum_ms = (self.sum * 1000.0).round() as i64;
            }
            self.sum_ms += d.sum_ms;
            self.sum = self.sum_ms as f64 / 1000.0;
            if self.buckets.len() != BUCKETS.len() + 1 {
                self.buckets.resize(BUCKETS.len() + 1, 0);
            }
            for (i, n) in &d.buckets {
                if let Some(b) = self.buckets.get_mut(*i) {
                    *b = (*b as i64 + n).max(0) as u64;
                }
            }
        }
        self.time_ns = now_ns.max(self.time_ns + 1);
    }

    /// Adds (`sign` 1) or takes back (`sign` -1) one contribution at `now_ns`: a counter's
    /// increment in whole units, or a histogram observation in milliseconds.
    pub fn apply(&mut self, value: i64, sign: i64, now_ns: u64) {
        match self.kind {
            MetricKind::Counter => {
                self.count = (self.count as i64 + sign * value.max(0)).max(0) as u64;
            }
            MetricKind::Histogram => {
                self.count = (self.count as i64 + sign).max(0) as u64;
                if self.sum_ms == 0 && self.sum != 0.0 {
                    self.sum_ms = (self.sum * 1000.0).round() as i64;
                }
                self.sum_ms += sign * value;
                self.sum = self.sum_ms as f64 / 1000.0;
                let i = bucket_of(value);
                if self.buckets.len() != BUCKETS.len() + 1 {
                    self.buckets.resize(BUCKETS.len() + 1, 0);
                }
                self.buckets[i] = (self.buckets[i] as i64 + sign).max(0) as u64;
            }
        }
        self.time_ns = now_ns.max(self.time_ns + 1);
    }
}

/// The bucket of a histogram observation in milliseconds: the first bound it does not exceed,
/// or the overflow bucket.
pub fn bucket_of(value_ms: i64) -> usize {
    BUCKETS
        .iter()
        .position(|b| value_ms as f64 <= *b * 1000.0)
        .unwrap_or(BUCKETS.len())
}

/// One item's contributions to one series, summed: a counter's total, or a histogram's
/// observation count, sum and bucket counts. Histograms add up, so the difference of two
/// tallies applied to a series gives exactly what taking back and adding each observation
/// would, whatever their number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tally {
    pub name: LabelStr,
    pub labels: Labels,
    /// Counter total, or histogram observation count.
    pub count: i64,
    /// Histogram sum in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sum_ms: i64,
    /// Histogram bucket index (see [`BUCKETS`]) → observations; only non-zero ones. A sorted
    /// vector (one or two entries per item), written as the JSON object a `BTreeMap` wrote
    /// (never empty when written: `litemap` would write an empty one as `[]`).
    #[serde(default, skip_serializing_if = "Buckets::is_empty")]
    pub buckets: Buckets,
}

/// A tally's bucket counts, in bucket order.
pub type Buckets = litemap::LiteMap<usize, i64>;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Tally {
    pub fn empty(name: &str, labels: &Labels) -> Self {
        Tally {
            name: name.into(),
            labels: labels.clone(),
            count: 0,
            sum_ms: 0,
            buckets: Buckets::new_vec(),
        }
    }

    pub fn add(&mut self, value: i64) {
        match def(&self.name).kind {
            MetricKind::Counter => self.count += value.max(0),
            MetricKind::Histogram => {
                self.count += 1;
                self.sum_ms += value;
                *self.buckets.entry(bucket_of(value)).or_default() += 1;
            }
        }
    }

    fn is_nothing(&self) -> bool {
        self.count == 0 && self.sum_ms == 0 && self.buckets.values().all(|n| *n == 0)
    }
}

/// What to apply to each series to go from `old` to `new` (both in series order): `new`
/// minus `old`, per series; series whose tally did not change are left out.
pub fn tally_diff(old: &[Tally], new: &[Tally]) -> Vec<Tally> {
    let mut by_series: BTreeMap<(&str, &Labels), Tally> = BTreeMap::new();
    for (sign, side) in [(-1, old), (1, new)] {
        for t in side {
            let d = by_series
                .entry((t.name.as_str(), &t.labels))
                .or_insert_with(|| Tally::empty(&t.name, &t.labels));
            d.count += sign * t.count;
            d.sum_ms += sign * t.sum_ms;
            for (i, n) in &t.buckets {
                *d.buckets.entry(*i).or_default() += sign * n;
            }
        }
    }
    by_series
        .into_values()
        .map(|mut d| {
            d.buckets.retain(|_, n| *n != 0);
            d
        })
        .filter(|d| !d.is_nothing())
        .collect()
}

/// More series than any installation has: a read takes the whole partition.
const MAX_SERIES: usize = 1_000_000;

/// The stored series, read through the engine (readers never walk the store's partitions
/// themselves): every series, or those of the metric `name`. A record that cannot be read is
/// logged and skipped, so one bad record never hides the others.
pub async fn stored(
    store: &dyn crate::store::Store,
    name: Option<&str>,
) -> Result<Vec<Series>, crate::store::StoreError> {
    let range = match name {
        Some(n) => crate::store::KeyRange::prefix(&format!("{n}{{")),
        None => crate::store::KeyRange::all(),
    };
    let records = store
        .query(
            super::keys::METRIC,
            range,
            MAX_SERIES,
            crate::store::Order::Ascending,
        )
        .await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        match r.data.decode::<Series>() {
            Ok(s) if name.is_none_or(|n| s.name == n) => out.push(s),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %r.key.sk, error = %e, "unreadable metric series skipped")
            }
        }
    }
    Ok(out)
}
