//! Payload timestamps, parsed once for every source that does not send plain RFC 3339: RFC 3339
//! (`2013-12-03T17:23:34Z`, with an offset or a fraction), an offset without its colon
//! (`2024-03-09T10:00:00.000+0100`), a space for the `T` (`2021-04-28 21:50:00 +0200`) and a
//! trailing ` UTC` (`2016-08-12 15:23:28 UTC`). A time without a zone is refused: guessing the
//! sender's zone would shift every duration. Serde helpers for payload types are in [`de`].

use crate::model::Time;
use chrono::{DateTime, NaiveDateTime, Utc};

/// The time `text` names, in any of the shapes above; `None` when it names none.
pub fn parse(text: &str) -> Option<Time> {
    let s = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Some(naive) = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')) {
        for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(naive.trim_end(), f) {
                return Some(t.and_utc());
            }
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f %z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// Serde helpers: `#[serde(deserialize_with = "timestamp::de::time")]` and
/// `#[serde(default, deserialize_with = "timestamp::de::opt_time")]`.
pub mod de {
    use super::parse;
    use crate::model::Time;
    use serde::{Deserialize, Deserializer};

    fn bad<E: serde::de::Error>(s: &str) -> E {
        E::custom(format!("not a timestamp: {s:?}"))
    }

    /// A required time.
    pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| bad(&s))
    }

    /// An optional time: `null`, `""` and absence are `None`.
    pub fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse(&s).map(Some).ok_or_else(|| bad(&s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn utc(s: &str) -> Time {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_every_shape_and_refuses_zoneless_times() {
        for (text, want) in [
            ("2013-12-03T17:23:34Z", "2013-12-03T17:23:34Z"),
            ("2016-08-12 15:23:28 UTC", "2016-08-12T15:23:28Z"),
            ("2021-04-28 21:50:00 +0200", "2021-04-28T19:50:00Z"),
            ("2012-01-03T23:36:29+02:00", "2012-01-03T21:36:29Z"),
            ("2023-01-10T13:50:05.123Z", "2023-01-10T13:50:05.123Z"),
            ("2023-01-10 13:50:05.5 UTC", "2023-01-10T13:50:05.5Z"),
            ("2021-04-28 21:50:00 -05:30", "2021-04-29T03:20:00Z"),
            ("2021-04-28T21:50:00.250+0200", "2021-04-28T19:50:00.25Z"),
            ("2024-03-09T10:00:00.000+0100", "2024-03-09T09:00:00Z"),
            ("2024-03-04T09:15:02.113+0100", "2024-03-04T08:15:02.113Z"),
            (" 2024-03-09T09:00:00.000Z ", "2024-03-09T09:00:00Z"),
        ] {
            assert_eq!(parse(text), Some(utc(want)), "{text}");
        }
        for text in ["yesterday", "2024-03-09", "2021-04-28 21:50:00", ""] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn serde_helpers_accept_absence_and_refuse_garbage_by_value() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "de::time")]
            at: Time,
            #[serde(default, deserialize_with = "de::opt_time")]
            maybe: Option<Time>,
        }
        let t: T = serde_json::from_value(
            serde_json::json!({"at": "2016-08-12 15:23:28 UTC", "maybe": ""}),
        )
        .unwrap();
        assert_eq!((t.at, t.maybe), (utc("2016-08-12T15:23:28Z"), None));
        let t: T =
            serde_json::from_value(serde_json::json!({"at": "2016-08-12T15:23:28Z"})).unwrap();
        assert_eq!(t.maybe, None);
        let err = serde_json::from_value::<T>(serde_json::json!({"at": "soon"}))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not a timestamp: \"soon\""),
            "{err}"
        );
        assert!(serde_json::from_value::<T>(
            serde_json::json!({"at": "2016-08-12T15:23:28Z", "maybe": "later"})
        )
        .is_err());
    }
}
