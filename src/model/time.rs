//! The one time rule every source's translation obeys, checked in one place (the HTTP layer,
//! after translation, before the pipeline): every time in a normalized [`Input`] lies in a sane
//! window, from [`earliest`] (2000-01-01T00:00:00Z) to one day after now, and a work item does
//! not end before it starts.
//!
//! Payload times outside the window are not facts about software delivery: a year-1 creation
//! would add two thousand years to a duration histogram, a year-9999 close cannot be written as
//! OTLP nanoseconds (they end in 2262), a negative epoch is a sender bug. Such a delivery is
//! refused (400) with a reason that names the normalized field (`start`, `end`, `at`,
//! `span_events[0].time`, `time`, `commits[2].time`) and the item, and nothing is stored.

use super::{Input, Time};
use chrono::{TimeDelta, TimeZone, Utc};

/// How far ahead of the receiver's clock a payload time may be (senders' clocks drift).
pub const MAX_AHEAD: TimeDelta = TimeDelta::days(1);

/// The earliest accepted payload time: 2000-01-01T00:00:00Z.
pub fn earliest() -> Time {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// Why a delivery's times break the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// A time outside 2000-01-01 ..= now + 1 day.
    #[error(
        "{field} {time} of {item} is outside the accepted window {from} ..= {to} \
         (2000-01-01 to one day from now)"
    )]
    OutOfWindow {
        item: String,
        field: String,
        time: String,
        from: String,
        to: String,
    },
    /// A work item that ends before it starts.
    #[error("{end_field} {end} of {item} is before its {start_field} {start}")]
    EndBeforeStart {
        item: String,
        start_field: String,
        start: String,
        end_field: String,
        end: String,
    },
}

/// `start`, or `start (created_at)` when the source named the payload field.
fn label(normalized: &str, payload: &str) -> String {
    if payload.is_empty() {
        normalized.to_string()
    } else {
        format!("{normalized} ({payload})")
    }
}

fn text(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Checks one time against the window ending at `latest`.
fn in_window(item: &str, field: &str, t: Time, latest: Time) -> Result<(), TimeError> {
    let from = earliest();
    if t < from || t > latest {
        return Err(TimeError::OutOfWindow {
            item: item.to_string(),
            field: field.to_string(),
            time: text(t),
            from: text(from),
            to: text(latest),
        });
    }
    Ok(())
}

/// Checks every time of one input against the rule, `now` being the receiver's clock.
pub fn check_input(input: &Input, now: Time) -> Result<(), TimeError> {
    let latest = now + MAX_AHEAD;
    match input {
        Input::Work(w) => {
            let item = format!("{} {}", w.kind.as_str(), w.key);
            let start_field = label("start", w.time_fields[0]);
            let end_field = label("end", w.time_fields[1]);
            if let Some(s) = w.start {
                in_window(&item, &start_field, s, latest)?;
            }
            if let Some(e) = w.end {
                in_window(&item, &end_field, e, latest)?;
            }
            if let Some(a) = w.at {
                in_window(&item, "at", a, latest)?;
            }
            for (i, ev) in w.span_events.iter().enumerate() {
                in_window(
                    &item,
                    &format!("span_events[{i}].time ({})", ev.name),
                    ev.time,
                    latest,
                )?;
            }
            if let (Some(s), Some(e)) = (w.start, w.end) {
                if e < s {
                    return Err(TimeError::EndBeforeStart {
                        item,
                        start_field,
                        start: text(s),
                        end_field,
                        end: text(e),
                    });
                }
            }
        }
        Input::Push(p) => {
            let item = format!("push {}@{} ({})", p.repo.0, p.branch, p.after);
            in_window(&item, "time", p.time, latest)?;
            for (i, c) in p.commits.iter().enumerate() {
                in_window(&item, &format!("commits[{i}].time"), c.time, latest)?;
            }
        }
    }
    Ok(())
}

/// Checks every input of a delivery; the first broken rule is the answer.
pub fn check(inputs: &[Input], now: Time) -> Result<(), TimeError> {
    inputs.iter().try_for_each(|i| check_input(i, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Commit, Kind, Push, Repo, SpanEvent, WorkEvent};

    fn t(s: &str) -> Time {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn now() -> Time {
        t("2026-01-01T00:00:00Z")
    }

    fn work(start: Option<&str>, end: Option<&str>) -> Input {
        let mut w = WorkEvent::new(
            Kind::Issue,
            "github/issue/o/r/1".into(),
            "ISSUE #1".into(),
            Action::Close,
        );
        w.start = start.map(t);
        w.end = end.map(t);
        Input::Work(w)
    }

    #[test]
    fn times_inside_the_window_pass() {
        let ok = work(Some("2000-01-01T00:00:00Z"), Some("2026-01-01T23:59:59Z"));
        assert_eq!(check(&[ok], now()), Ok(()));
        assert_eq!(check(&[work(None, None)], now()), Ok(()));
        // Equal start and end: a zero-length span is allowed.
        let zero = work(Some("2024-01-01T00:00:00Z"), Some("2024-01-01T00:00:00Z"));
        assert_eq!(check(&[zero], now()), Ok(()));
    }

    #[test]
    fn every_field_outside_the_window_is_named() {
        let e = check(&[work(Some("1999-12-31T23:59:59Z"), None)], now()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("start 1999-12-31T23:59:59Z of issue github/issue/o/r/1"),
            "{msg}"
        );
        let e = check(&[work(None, Some("2026-01-02T00:00:01Z"))], now()).unwrap_err();
        assert!(e.to_string().starts_with("end 2026-01-02T00:00:01Z"), "{e}");
        let Input::Work(mut named) = work(None, Some("1999-01-01T00:00:00Z")) else {
            unreachable!()
        };
        named.time_fields = ["created_at", "closed_at"];
        let e = check(&[Input::Work(named)], now()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("end (closed_at) 1999-01-01T00:00:00Z of issue"),
            "{e}"
        );
        let e = check(&[work(None, Some("9999-12-31T23:59:59.999999999Z"))], now()).unwrap_err();
        assert!(
            e.to_string().contains("end 9999-12-31T23:59:59.999999999Z"),
            "{e}"
        );

        let Input::Work(mut w) = work(Some("2024-01-01T00:00:00Z"), None) else {
            unreachable!()
        };
        w.span_events.push(SpanEvent {
            name: "acknowledged".into(),
            time: t("1970-01-01T00:00:00Z"),
            attributes: Default::default(),
        });
        let e = check(&[Input::Work(w)], now()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("span_events[0].time (acknowledged) 1970"),
            "{e}"
        );
    }

    #[test]
    fn an_end_before_its_start_is_refused() {
        let e = check(
            &[work(
                Some("2024-01-02T00:00:00Z"),
                Some("2024-01-01T00:00:00Z"),
            )],
            now(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "end 2024-01-01T00:00:00Z of issue github/issue/o/r/1 is before its start \
             2024-01-02T00:00:00Z"
        );
    }

    #[test]
    fn push_and_commit_times_are_checked() {
        let push = |time: &str, commit: &str| {
            Input::Push(Push {
                repo: Repo::new("o/r"),
                branch: "main".into(),
                to_default_branch: true,
                before: None,
                after: "abc".into(),
                time: t(time),
                commits: vec![
                    Commit {
                        sha: "a".into(),
                        time: t("2024-01-01T00:00:00Z"),
                        message: String::new(),
                        merges: false,
                    },
                    Commit {
                        sha: "b".into(),
                        time: t(commit),
                        message: String::new(),
                        merges: false,
                    },
                ],
                attributes: Default::default(),
            })
        };
        assert_eq!(
            check(
                &[push("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z")],
                now()
            ),
            Ok(())
        );
        let e = check(
            &[push("2024-01-01T00:00:00Z", "1969-12-31T23:59:59Z")],
            now(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("commits[1].time 1969-12-31T23:59:59Z of push o/r@main"),
            "{e}"
        );
        let e = check(
            &[push("3000-01-01T00:00:00Z", "2024-01-01T00:00:00Z")],
            now(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("time 3000-01-01T00:00:00Z of push"),
            "{e}"
        );
    }
}
