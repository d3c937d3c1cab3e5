//! One readable line per finished span on stdout, for `serve` without a collector and for the
//! README demo.

use super::{ExportError, Exporter};
use crate::model::series::Series;
use crate::model::{AttrValue, FinishedSpan};
use async_trait::async_trait;

pub struct Console;

#[async_trait]
impl Exporter for Console {
    async fn export_spans(&self, spans: &[FinishedSpan]) -> Result<(), ExportError> {
        use std::io::Write;
        let mut out = String::new();
        for span in spans {
            out.push_str(&line(span));
            out.push('\n');
        }
        // One write per batch, on the blocking pool: a slow reader of stdout (a terminal, a
        // full pipe) never holds up the async runtime's threads, so never a webhook answer.
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
        })
        .await;
        Ok(())
    }
    async fn export_points(&self, _points: &[Series]) -> Result<(), ExportError> {
        // Points are read from GET /metrics when there is no collector.
        Ok(())
    }
}

/// `2h03m` style duration.
pub fn human(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

pub fn line(span: &FinishedSpan) -> String {
    let result = span
        .attributes
        .get(crate::model::attr::RESULT)
        .and_then(AttrValue::as_str)
        .unwrap_or("-");
    format!(
        "span {:<9} {:<60} {} -> {} ({}) result={} trace={} span={} parent={}{}",
        span.source,
        truncate(&span.name, 60),
        span.start.format("%Y-%m-%dT%H:%M:%SZ"),
        span.end.format("%Y-%m-%dT%H:%M:%SZ"),
        human(span.end - span.start),
        result,
        span.trace_id,
        span.span_id,
        span.parent_span_id.as_deref().unwrap_or("-"),
        if span.links.is_empty() {
            String::new()
        } else {
            format!(" links={}", span.links.len())
        }
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
