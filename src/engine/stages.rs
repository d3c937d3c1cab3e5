//! Where a merged change's time went: its stages, one rule in one place (docs/metrics.md
//! "Change stages").
//!
//! | stage | from | to |
//! |---|---|---|
//! | `coding` | the first commit (a branch push before the change opened; else the opening) | ready for review: the opening, or for a change opened as a draft its first *ready* step |
//! | `pickup` | ready for review | the first review by a person other than the author, at or after ready |
//! | `review` | that first review | the merge |
//! | `deploy` | the merge | the end of the first successful production deployment that shipped it |
//!
//! A stage exists only when both of its ends are known and it lasts longer than zero: a change
//! merged without a review has no pickup and no review stage (not two zero-length ones), a
//! change never deployed has no deploy stage. Reviews by bots and by the author, and reviews of
//! a draft before it was ready, are shown as span events but start no stage. Reviews after the
//! merge are late news of a closed generation: they change nothing. Everything is read from the
//! generation's steps, so the stages are a function of the set of facts, whatever their order.

use crate::model::{ChangeStep, ReviewerKind, StepKind, Time};

/// A stage's name: the `valuestream.change.stage` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    Coding,
    Pickup,
    Review,
    Deploy,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Coding => "coding",
            StageName::Pickup => "pickup",
            StageName::Review => "review",
            StageName::Deploy => "deploy",
        }
    }
}

/// One stage of a change's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    pub name: StageName,
    pub start: Time,
    pub end: Time,
}

impl Stage {
    pub fn millis(&self) -> i64 {
        (self.end - self.start).num_milliseconds()
    }
}

/// What the stage rule reads of one merged generation of a change.
#[derive(Clone, Copy, Debug)]
pub struct ChangeTimes<'a> {
    pub opened: Time,
    pub merged: Time,
    /// The first commit, when one earlier than the opening is known.
    pub first_commit: Option<Time>,
    /// The generation's steps, in time order.
    pub steps: &'a [ChangeStep],
    /// The end of the first successful production deployment that shipped it.
    pub deployed: Option<Time>,
}

/// When the change was ready for review: its opening, or, opened as a draft, its first ready
/// step (none known: no ready time).
pub fn ready(t: &ChangeTimes<'_>) -> Option<Time> {
    let opened_as_draft = t
        .steps
        .iter()
        .any(|s| s.kind == StepKind::Draft && s.time <= t.opened);
    if !opened_as_draft {
        return Some(t.opened);
    }
    t.steps
        .iter()
        .find(|s| s.kind == StepKind::Ready && s.time >= t.opened && s.time <= t.merged)
        .map(|s| s.time)
}

/// The first review by a person other than the author, at or after `ready`, up to the merge.
pub fn first_review(t: &ChangeTimes<'_>, ready: Option<Time>) -> Option<Time> {
    let from = ready?;
    t.steps
        .iter()
        .find(|s| {
            s.kind == StepKind::Review
                && s.reviewer == Some(ReviewerKind::Human)
                && s.time >= from
                && s.time <= t.merged
        })
        .map(|s| s.time)
}

/// The stages of one merged generation, in order.
pub fn stages(t: &ChangeTimes<'_>) -> Vec<Stage> {
    let ready = ready(t);
    let review = first_review(t, ready);
    let coding_from = t.first_commit.map_or(t.opened, |f| f.min(t.opened));
    let spans = [
        (StageName::Coding, Some(coding_from), ready),
        (StageName::Pickup, ready, review),
        (StageName::Review, review, Some(t.merged)),
        (StageName::Deploy, Some(t.merged), t.deployed),
    ];
    spans
        .into_iter()
        .filter_map(|(name, start, end)| {
            let (start, end) = (start?, end?);
            (end > start).then_some(Stage { name, start, end })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReviewState;

    fn at(min: i64) -> Time {
        "2024-06-03T10:00:00Z".parse::<Time>().unwrap() + chrono::TimeDelta::minutes(min)
    }

    fn step(kind: StepKind, min: i64) -> ChangeStep {
        ChangeStep::new(kind, at(min))
    }

    fn review(min: i64, who: ReviewerKind) -> ChangeStep {
        ChangeStep::review(at(min), ReviewState::Commented, who)
    }

    struct Case {
        name: &'static str,
        first_commit: Option<i64>,
        steps: Vec<ChangeStep>,
        deployed: Option<i64>,
        /// (stage, from minute, to minute)
        want: Vec<(&'static str, i64, i64)>,
    }

    /// Opened at minute 0, merged at minute 100.
    fn cases() -> Vec<Case> {
        use ReviewerKind::{Author, Bot, Human};
        use StepKind::{Draft, Ready, ReviewRequested};
        vec![
            Case {
                name: "the four stages",
                first_commit: Some(-60),
                steps: vec![review(30, Human)],
                deployed: Some(160),
                want: vec![
                    ("coding", -60, 0),
                    ("pickup", 0, 30),
                    ("review", 30, 100),
                    ("deploy", 100, 160),
                ],
            },
            Case {
                name: "no review at all: no pickup, no review stage",
                first_commit: Some(-60),
                steps: vec![],
                deployed: Some(160),
                want: vec![("coding", -60, 0), ("deploy", 100, 160)],
            },
            Case {
                name: "no commit known before the opening: no zero-length coding",
                first_commit: None,
                steps: vec![review(30, Human)],
                deployed: None,
                want: vec![("pickup", 0, 30), ("review", 30, 100)],
            },
            Case {
                name: "a change never deployed has no deploy stage",
                first_commit: Some(-10),
                steps: vec![review(30, Human)],
                deployed: None,
                want: vec![("coding", -10, 0), ("pickup", 0, 30), ("review", 30, 100)],
            },
            Case {
                name: "opened as a draft: coding lasts until ready",
                first_commit: None,
                steps: vec![step(Draft, 0), step(Ready, 40), review(50, Human)],
                deployed: None,
                want: vec![("coding", 0, 40), ("pickup", 40, 50), ("review", 50, 100)],
            },
            Case {
                name: "a draft reviewed before ready: pickup starts at ready",
                first_commit: None,
                steps: vec![
                    step(Draft, 0),
                    review(10, Human),
                    step(Ready, 40),
                    review(70, Human),
                ],
                deployed: None,
                want: vec![("coding", 0, 40), ("pickup", 40, 70), ("review", 70, 100)],
            },
            Case {
                name: "a draft reviewed only before ready: no pickup, no review",
                first_commit: None,
                steps: vec![step(Draft, 0), review(10, Human), step(Ready, 40)],
                deployed: None,
                want: vec![("coding", 0, 40)],
            },
            Case {
                name: "re-requested reviews: the first review ends pickup",
                first_commit: None,
                steps: vec![
                    step(ReviewRequested, 5),
                    review(20, Human),
                    step(ReviewRequested, 50),
                    review(80, Human),
                ],
                deployed: None,
                want: vec![("pickup", 0, 20), ("review", 20, 100)],
            },
            Case {
                name: "bot and author reviews start no stage",
                first_commit: None,
                steps: vec![review(5, Bot), review(8, Author), review(60, Human)],
                deployed: None,
                want: vec![("pickup", 0, 60), ("review", 60, 100)],
            },
            Case {
                name: "converted to draft after opening ready: ready is the opening",
                first_commit: None,
                steps: vec![step(Draft, 10), step(Ready, 30), review(60, Human)],
                deployed: None,
                want: vec![("pickup", 0, 60), ("review", 60, 100)],
            },
            Case {
                name: "a review at the merge itself: review stage of zero length left out",
                first_commit: None,
                steps: vec![review(100, Human)],
                deployed: None,
                want: vec![("pickup", 0, 100)],
            },
        ]
    }

    #[test]
    fn stage_known_answers() {
        for c in cases() {
            let t = ChangeTimes {
                opened: at(0),
                merged: at(100),
                first_commit: c.first_commit.map(at),
                steps: &c.steps,
                deployed: c.deployed.map(at),
            };
            let got: Vec<(&str, Time, Time)> = stages(&t)
                .iter()
                .map(|s| (s.name.as_str(), s.start, s.end))
                .collect();
            let want: Vec<(&str, Time, Time)> = c
                .want
                .iter()
                .map(|(n, a, b)| (*n, at(*a), at(*b)))
                .collect();
            assert_eq!(got, want, "{}", c.name);
        }
    }
}
