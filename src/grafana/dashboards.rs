//! The dashboards of `dashboards/`, embedded in the binary (so `grafana install` works from an
//! installed binary), and their binding to the installed data source: the `$datasource`
//! variable every panel uses is set to it, and `$lookback` to the chosen lookback.
//! `tests/grafana.rs` checks that every `dashboards/*.json` file is in [`DASHBOARDS`].

use super::GrafanaError;
use serde_json::{json, Value};

/// One embedded dashboard file.
pub struct Dashboard {
    /// Its file name under `dashboards/`.
    pub file: &'static str,
    /// The file's text.
    pub json: &'static str,
}

/// Every dashboard of `dashboards/`, by file name.
pub const DASHBOARDS: &[Dashboard] = &[
    Dashboard {
        file: "correlations.json",
        json: include_str!("../../dashboards/correlations.json"),
    },
    Dashboard {
        file: "delivery.json",
        json: include_str!("../../dashboards/delivery.json"),
    },
    Dashboard {
        file: "dora.json",
        json: include_str!("../../dashboards/dora.json"),
    },
    Dashboard {
        file: "health.json",
        json: include_str!("../../dashboards/health.json"),
    },
];

/// The data source a dashboard is bound to.
pub struct Binding<'a> {
    pub datasource_uid: &'a str,
    pub datasource_name: &'a str,
    /// Its type (`prometheus` or `grafana-amazonprometheus-datasource`).
    pub datasource_type: &'a str,
    /// The `$lookback` constant; `None` keeps the file's value.
    pub lookback: Option<&'a str>,
}

/// The dashboard model to post: `id` cleared (Grafana matches by `uid`), the `$datasource`
/// variable's current value set to the data source and its plugin type to the data source's,
/// `$lookback` set when asked.
///
/// The files' variable lists `prometheus`, which Grafana 12 and later read as every Prometheus
/// flavour (the core type and `grafana-amazonprometheus-datasource` alike: `DatasourceSrv.getList`
/// with a `pluginId` of either lists both), so a file-provisioned dashboard follows a data source
/// that Grafana 13 migrated. The installed copy names the installed data source's type, which
/// lists it on every version (a Grafana 11 lists only the exact type).
pub fn bind(d: &Dashboard, b: &Binding) -> Result<Value, GrafanaError> {
    let bad = |reason: &str| GrafanaError::BadDashboard {
        file: d.file,
        reason: reason.to_string(),
    };
    let mut model: Value = serde_json::from_str(d.json).map_err(|e| bad(&e.to_string()))?;
    for key in ["uid", "title"] {
        if !model.get(key).is_some_and(Value::is_string) {
            return Err(bad(&format!("no {key}")));
        }
    }
    model["id"] = Value::Null;
    let vars = model
        .pointer_mut("/templating/list")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("no templating.list"))?;
    let ds = vars
        .iter_mut()
        .find(|v| v["name"] == "datasource" && v["type"] == "datasource")
        .ok_or_else(|| bad("no $datasource variable of type datasource"))?;
    ds["query"] = json!(b.datasource_type);
    ds["current"] = json!({
        "selected": true,
        "text": b.datasource_name,
        "value": b.datasource_uid,
    });
    if let Some(lookback) = b.lookback {
        let lb = vars
            .iter_mut()
            .find(|v| v["name"] == "lookback" && v["type"] == "constant")
            .ok_or_else(|| bad("no $lookback constant"))?;
        lb["query"] = json!(lookback);
        lb["current"] = json!({"selected": false, "text": lookback, "value": lookback});
        lb["options"] = json!([{"selected": false, "text": lookback, "value": lookback}]);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_dashboard_binds() {
        for d in DASHBOARDS {
            let m = bind(
                d,
                &Binding {
                    datasource_uid: "ds-1",
                    datasource_name: "P",
                    datasource_type: "grafana-amazonprometheus-datasource",
                    lookback: Some("30d"),
                },
            )
            .unwrap();
            let vars = m["templating"]["list"].as_array().unwrap();
            let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
            assert_eq!(ds["current"]["value"], "ds-1", "{}", d.file);
            assert_eq!(
                ds["query"], "grafana-amazonprometheus-datasource",
                "{}",
                d.file
            );
            let lb = vars.iter().find(|v| v["name"] == "lookback").unwrap();
            assert_eq!(lb["query"], "30d", "{}", d.file);
            assert!(m["id"].is_null());
        }
    }
}
