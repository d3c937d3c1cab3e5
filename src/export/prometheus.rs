//! `GET /metrics`: every stored metric series in the Prometheus text exposition format 0.0.4,
//! under exactly the names the OpenTelemetry Collector's `prometheus` and
//! `prometheusremotewrite` exporters give the same OTLP points (default settings:
//! `add_metric_suffixes` on, `resource_to_telemetry_conversion` off). So the dashboards in
//! `dashboards/` read the same series whether Prometheus scrapes `valuestream serve` or receives
//! the Lambda's points through a collector. The translation, as the collector does it:
//!
//! - metric name: split into words at every character that is not an ASCII letter or digit
//!   (dots, dashes, underscores…), joined with `_`; a name starting with a digit gets a `_`;
//! - unit: `s` adds the word `seconds` (unless the name already has it), other UCUM units map to
//!   their Prometheus words, a `{annotation}` unit adds nothing, `x/y` adds `x_per_y`;
//! - monotonic counters end in `_total`; histograms expose `_bucket{le="…"}` (cumulative counts,
//!   ending with `le="+Inf"`), `_sum` and `_count`;
//! - label names: every character that is not an ASCII letter, digit or `_` becomes `_`, a leading
//!   digit gets `key_`, a leading single `_` gets `key`; labels that collide after this are
//!   merged with their values joined by `;` in key order;
//! - label values escaped (`\\`, `\"`, `\n`); `# HELP` (the catalogue description) and
//!   `# TYPE` once per family; no timestamps (the scrape time is the sample time).

use crate::model::series::{self as metrics, MetricKind, Series};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What kind of family a health metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthKind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample of a health family: its labels (bounded values: sources, answers, signals,
/// operations; never a delivery ID, item key or repository) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSample {
    pub labels: Vec<(&'static str, String)>,
    pub value: HealthValue,
    /// Over OTLP, the start of a counter or histogram that is not the process's: a series kept
    /// in the store (the sync's healed counter) starts when its record was created. `None`: the
    /// process start (or no start, for a gauge).
    pub start_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HealthValue {
    /// A counter's total or a gauge's value.
    Number(f64),
    /// Bucket counts (not cumulative, one per bound plus the overflow), sum and count.
    Histogram {
        bounds: &'static [f64],
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// One family of valuestream's own health (`valuestream_health_*`, `valuestream_settle_failures_total`).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthFamily {
    /// The full Prometheus name (a counter's ends in `_total`; a histogram's has no suffix).
    pub name: &'static str,
    /// The OTLP name and unit: the collector's translation of the two ([`prometheus_name`]) is
    /// `name`, so the dashboards read the same series scraped or sent over OTLP.
    pub otel_name: &'static str,
    pub unit: &'static str,
    pub help: &'static str,
    pub kind: HealthKind,
    pub samples: Vec<HealthSample>,
}

/// valuestream's own health, after the delivery series (docs/metrics.md, "valuestream's own
/// health"): families in the order given, samples in the order given.
pub fn render_health(families: &[HealthFamily]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(
            out,
            "# TYPE {} {}",
            f.name,
            match f.kind {
                HealthKind::Counter => "counter",
                HealthKind::Gauge => "gauge",
                HealthKind::Histogram => "histogram",
            }
        );
        for s in &f.samples {
            let labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            match &s.value {
                HealthValue::Number(v) => {
                    sample(&mut out, f.name, &labels, None, &format_float(*v))
                }
                HealthValue::Histogram {
                    bounds,
                    counts,
                    sum,
                    count,
                } => {
                    let mut cumulative = 0u64;
                    for (i, bound) in bounds.iter().enumerate() {
                        cumulative += counts.get(i).copied().unwrap_or(0);
                        sample(
                            &mut out,
                            &format!("{}_bucket", f.name),
                            &labels,
                            Some(&format_float(*bound)),
                            &cumulative.to_string(),
                        );
                    }
                    sample(
                        &mut out,
                        &format!("{}_bucket", f.name),
                        &labels,
                        Some("+Inf"),
                        &count.to_string(),
                    );
                    sample(
                        &mut out,
                        &format!("{}_sum", f.name),
                        &labels,
                        None,
                        &format_float(*sum),
                    );
                    sample(
                        &mut out,
                        &format!("{}_count", f.name),
                        &labels,
                        None,
                        &count.to_string(),
                    );
                }
            }
        }
    }
    out
}

/// The exposition text of `series`, grouped into families by Prometheus name.
pub fn render_series(series: &[Series]) -> String {
    // family name → (kind, help, samples of every series)
    let mut families: BTreeMap<String, (MetricKind, String, Vec<&Series>)> = BTreeMap::new();
    for s in series {
        let def = metrics::CATALOGUE.iter().find(|d| d.name == s.name);
        let unit = def.map_or("", |d| d.unit);
        let help = def.map_or("", |d| d.description);
        let family = prometheus_name(&s.name, unit, s.kind);
        families
            .entry(family)
            .or_insert_with(|| (s.kind, help.to_string(), Vec::new()))
            .2
            .push(s);
    }
    let mut out = String::new();
    for (family, (kind, help, members)) in &families {
        let _ = writeln!(out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(
            out,
            "# TYPE {family} {}",
            match kind {
                MetricKind::Counter => "counter",
                MetricKind::Histogram => "histogram",
            }
        );
        let mut members = members.clone();
        members.sort_by_cached_key(|s| label_pairs(&s.labels));
        for s in members {
            let labels = label_pairs(&s.labels);
            match s.kind {
                MetricKind::Counter => {
                    sample(&mut out, family, &labels, None, &s.count.to_string());
                }
                MetricKind::Histogram => {
                    let mut cumulative = 0u64;
                    for (i, bound) in metrics::BUCKETS.iter().enumerate() {
                        cumulative += s.buckets.get(i).copied().unwrap_or(0);
                        sample(
                            &mut out,
                            &format!("{family}_bucket"),
                            &labels,
                            Some(&format_float(*bound)),
                            &cumulative.to_string(),
                        );
                    }
                    // +Inf is the total count, whatever the stored buckets say.
                    sample(
                        &mut out,
                        &format!("{family}_bucket"),
                        &labels,
                        Some("+Inf"),
                        &s.count.to_string(),
                    );
                    sample(
                        &mut out,
                        &format!("{family}_sum"),
                        &labels,
                        None,
                        &format_float(s.sum),
                    );
                    sample(
                        &mut out,
                        &format!("{family}_count"),
                        &labels,
                        None,
                        &s.count.to_string(),
                    );
                }
            }
        }
    }
    out
}

fn sample(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let le_pair = le.map(|v| ("le".to_string(), v.to_string()));
        for (k, v) in labels.iter().chain(le_pair.iter()) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// The Prometheus name of an OTLP metric (the family name: histograms add `_bucket`, `_sum`,
/// `_count` to it).
pub fn prometheus_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| !is_name_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), p.trim()),
        None => (unit.trim(), ""),
    };
    let annotation = |u: &str| u.contains(['{', '}']);
    let mut main = if main.is_empty() || annotation(main) {
        String::new()
    } else {
        clean_unit(unit_word(main))
    };
    let mut per = if per.is_empty() || annotation(per) {
        String::new()
    } else {
        clean_unit(&format!("per_{}", per_unit_word(per)))
    };
    if words.contains(&main) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        per = per.trim_end_matches('_').to_string();
        if words.contains(&per) {
            per.clear();
        }
    }
    if !per.is_empty() {
        main = main.trim_end_matches('_').to_string();
    }
    words.extend([main, per].into_iter().filter(|w| !w.is_empty()));
    if kind == MetricKind::Counter {
        words.retain(|w| w != "total");
        words.push("total".into());
    }
    let mut out = words.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Characters a metric name keeps (`[a-zA-Z0-9:]`); the others separate words.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// A Prometheus label name for an OTLP attribute key.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

/// The labels of a series, translated and merged as the collector does, sorted by name.
fn label_pairs(labels: &metrics::Labels) -> Vec<(String, String)> {
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    // `labels` iterates in key order, as the collector sorts before merging collisions.
    for (k, v) in labels {
        let name = label_name(k);
        if name.is_empty() {
            continue;
        }
        merged
            .entry(name)
            .and_modify(|existing| {
                existing.push(';');
                existing.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    merged.into_iter().collect()
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// A unit word as the collector cleans it: other characters become `_`, runs of `_` one, and a
/// leading `_` goes.
fn clean_unit(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        let c = if is_name_char(c) { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_start_matches('_').to_string()
}

/// A float as Prometheus writes it: shortest round-trip form, `+Inf`, `-Inf`, `NaN`.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust's Display is the shortest representation that round-trips, without exponent.
        format!("{v}")
    }
}

fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::series::{Labels, CATALOGUE};

    /// Every catalogue entry, with the names docs/metrics.md lists and the dashboards query.
    #[test]
    fn every_catalogue_name_translates_as_the_collector_does() {
        let expected = [
            (
                "valuestream.issue.duration",
                "valuestream_issue_duration_seconds",
            ),
            (
                "valuestream.change.duration",
                "valuestream_change_duration_seconds",
            ),
            (
                "cicd.pipeline.run.duration",
                "cicd_pipeline_run_duration_seconds",
            ),
            (
                "valuestream.task.duration",
                "valuestream_task_duration_seconds",
            ),
            (
                "valuestream.deployment.duration",
                "valuestream_deployment_duration_seconds",
            ),
            (
                "valuestream.incident.duration",
                "valuestream_incident_duration_seconds",
            ),
            ("valuestream.deployments", "valuestream_deployments_total"),
            (
                "valuestream.change.lead_time",
                "valuestream_change_lead_time_seconds",
            ),
            (
                "valuestream.change_failures",
                "valuestream_change_failures_total",
            ),
            (
                "valuestream.time_to_restore",
                "valuestream_time_to_restore_seconds",
            ),
            (
                "valuestream.deployment.recovery_time",
                "valuestream_deployment_recovery_time_seconds",
            ),
            (
                "valuestream.deployment.rework",
                "valuestream_deployment_rework_total",
            ),
            (
                "valuestream.change.stage.duration",
                "valuestream_change_stage_duration_seconds",
            ),
        ];
        assert_eq!(
            CATALOGUE.len(),
            expected.len(),
            "a new catalogue entry needs its Prometheus name here, in docs/metrics.md and maybe in dashboards/"
        );
        for def in CATALOGUE {
            let want = expected
                .iter()
                .find(|(n, _)| *n == def.name)
                .unwrap_or_else(|| panic!("{} has no expected Prometheus name", def.name))
                .1;
            assert_eq!(
                prometheus_name(def.name, def.unit, def.kind),
                want,
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn name_rules_of_the_translator() {
        use MetricKind::*;
        // Unit words are not repeated; `total` moves to the end once.
        assert_eq!(
            prometheus_name("http.server.request.duration.seconds", "s", Histogram),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            prometheus_name("jobs.total.done", "{job}", Counter),
            "jobs_done_total"
        );
        assert_eq!(prometheus_name("a..b__c-d", "", Histogram), "a_b_c_d");
        assert_eq!(
            prometheus_name("net.io", "By/s", Counter),
            "net_io_bytes_per_second_total"
        );
        assert_eq!(
            prometheus_name("2xx.responses", "1", Counter),
            "_2xx_responses_total"
        );
        assert_eq!(
            prometheus_name("queue.size", "{message}/s", Histogram),
            "queue_size_per_second"
        );
        assert_eq!(
            prometheus_name("ns:thing", "ms", Histogram),
            "ns:thing_milliseconds"
        );
    }

    #[test]
    fn label_names_of_the_translator() {
        assert_eq!(
            label_name("deployment.environment.name"),
            "deployment_environment_name"
        );
        assert_eq!(label_name("valuestream.source"), "valuestream_source");
        assert_eq!(
            label_name("cicd.pipeline.task.name"),
            "cicd_pipeline_task_name"
        );
        assert_eq!(label_name("http-method"), "http_method");
        assert_eq!(label_name("9lives"), "key_9lives");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn counters_and_histograms_in_text_format() {
        let mut deployments = Series::new(
            "valuestream.deployments",
            labels(&[
                ("valuestream.source", "github"),
                ("deployment.environment.name", "production"),
                ("valuestream.repository", "a \"quoted\\\" repo\nname"),
            ]),
            1,
        );
        deployments.apply(1, 1, 2);
        deployments.apply(1, 1, 3);
        let mut lead = Series::new(
            "valuestream.change.lead_time",
            labels(&[("valuestream.source", "github")]),
            1,
        );
        for v in [4_200_000, 10_200_000, 18_600_000, 25_800_000] {
            lead.apply(v, 1, 5);
        }
        let mut other = Series::new(
            "valuestream.deployments",
            labels(&[
                ("valuestream.source", "gitlab"),
                ("deployment.environment.name", "staging"),
            ]),
            1,
        );
        other.apply(1, 1, 9);
        let text = render_series(&[lead, deployments, other]);
        let expected_counter = "# HELP valuestream_deployments_total Finished deployments, by environment and result.\n\
# TYPE valuestream_deployments_total counter\n\
valuestream_deployments_total{deployment_environment_name=\"production\",valuestream_repository=\"a \\\"quoted\\\\\\\" repo\\nname\",valuestream_source=\"github\"} 2\n\
valuestream_deployments_total{deployment_environment_name=\"staging\",valuestream_source=\"gitlab\"} 1\n";
        assert!(text.ends_with(expected_counter), "{text}");
        let hist: Vec<&str> = text
            .lines()
            .take_while(|l| !l.contains("deployments_total"))
            .collect();
        assert_eq!(hist[0], "# HELP valuestream_change_lead_time_seconds Lead time for changes: production deployment finish minus the change's first commit (or PR creation), one point per change.");
        assert_eq!(
            hist[1],
            "# TYPE valuestream_change_lead_time_seconds histogram"
        );
        let buckets: Vec<(&str, &str)> = hist[2..]
            .iter()
            .filter(|l| l.starts_with("valuestream_change_lead_time_seconds_bucket"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (le, l.rsplit(' ').next().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), metrics::BUCKETS.len() + 1);
        let at = |le: &str| buckets.iter().find(|(l, _)| *l == le).unwrap().1;
        assert_eq!(at("3600"), "0");
        assert_eq!(at("7200"), "1");
        assert_eq!(at("14400"), "2");
        assert_eq!(at("28800"), "4");
        assert_eq!(at("31536000"), "4");
        assert_eq!(buckets.last().unwrap(), &("+Inf", "4"));
        assert!(hist.contains(
            &"valuestream_change_lead_time_seconds_sum{valuestream_source=\"github\"} 58800"
        ));
        assert!(hist.contains(
            &"valuestream_change_lead_time_seconds_count{valuestream_source=\"github\"} 4"
        ));
        assert_eq!(
            text.matches("# TYPE").count(),
            2,
            "one TYPE per family, however many series: {text}"
        );
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let after_labels = l.rsplit_once('}').map_or(l, |(_, rest)| rest);
            assert_eq!(
                after_labels.split_whitespace().count(),
                if l.contains('{') { 1 } else { 2 },
                "a value and no timestamp: {l}"
            );
        }
    }

    #[test]
    fn health_families_in_text_format() {
        let families = [
            HealthFamily {
                name: "valuestream_health_deliveries_total",
                otel_name: "valuestream.health.deliveries",
                unit: "{delivery}",
                help: "Deliveries.",
                kind: HealthKind::Counter,
                samples: vec![HealthSample {
                    labels: vec![
                        ("source", "github".into()),
                        ("answer", "refused_401".into()),
                    ],
                    value: HealthValue::Number(3.0),
                    start_ns: None,
                }],
            },
            HealthFamily {
                name: "valuestream_health_settle_oldest_due_age_seconds",
                otel_name: "valuestream.health.settle.oldest_due_age",
                unit: "s",
                help: "Age.",
                kind: HealthKind::Gauge,
                samples: vec![HealthSample {
                    labels: vec![],
                    value: HealthValue::Number(1.5),
                    start_ns: None,
                }],
            },
            HealthFamily {
                name: "valuestream_health_drain_duration_seconds",
                otel_name: "valuestream.health.drain.duration",
                unit: "s",
                help: "Drains.",
                kind: HealthKind::Histogram,
                samples: vec![HealthSample {
                    labels: vec![],
                    value: HealthValue::Histogram {
                        bounds: &[0.1, 1.0],
                        counts: vec![2, 0, 1],
                        sum: 2.25,
                        count: 3,
                    },
                    start_ns: None,
                }],
            },
        ];
        assert_eq!(
            render_health(&families),
            "# HELP valuestream_health_deliveries_total Deliveries.\n\
# TYPE valuestream_health_deliveries_total counter\n\
valuestream_health_deliveries_total{source=\"github\",answer=\"refused_401\"} 3\n\
# HELP valuestream_health_settle_oldest_due_age_seconds Age.\n\
# TYPE valuestream_health_settle_oldest_due_age_seconds gauge\n\
valuestream_health_settle_oldest_due_age_seconds 1.5\n\
# HELP valuestream_health_drain_duration_seconds Drains.\n\
# TYPE valuestream_health_drain_duration_seconds histogram\n\
valuestream_health_drain_duration_seconds_bucket{le=\"0.1\"} 2\n\
valuestream_health_drain_duration_seconds_bucket{le=\"1\"} 2\n\
valuestream_health_drain_duration_seconds_bucket{le=\"+Inf\"} 3\n\
valuestream_health_drain_duration_seconds_sum 2.25\n\
valuestream_health_drain_duration_seconds_count 3\n"
        );
    }

    #[test]
    fn colliding_labels_merge_and_floats_format() {
        let pairs = label_pairs(&labels(&[("a.b", "1"), ("a_b", "2")]));
        assert_eq!(pairs, vec![("a_b".to_string(), "1;2".to_string())]);
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(86400.0), "86400");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(render_series(&[]), "");
    }
}
