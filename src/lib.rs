//! valuestream: software-delivery webhooks in, OpenTelemetry traces and DORA metrics out.
//!
//! - [`sources`] verify and translate each vendor's deliveries into the [`model`];
//! - the [`engine`] turns normalized events into finished spans and metric points, keeping its
//!   state in a [`store`];
//! - [`export`] sends them over OTLP (or prints them);
//! - [`analysis`] answers questions over the stored metric state (correlations);
//! - [`http`] is the one router that both [`entrypoints`] (Lambda and the CLI) serve.

pub mod analysis;
pub mod config;
pub mod engine;
pub mod entrypoints;
pub mod export;
pub mod http;
pub mod model;
pub mod replay;
pub mod secrets;
pub mod sources;
pub mod store;
