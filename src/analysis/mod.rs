//! Analyses the service answers itself from its stored metric state, with no trace backend:
//! [`correlations`] (what slow and failing work has in common).

pub mod correlations;
