//! valuestream: software-delivery webhooks in, OpenTelemetry traces and DORA metrics out.
//!
//! - [`sources`] verify and translate each vendor's deliveries into the [`model`];
//! - the [`engine`] turns normalized events into finished spans and metric points, keeping its
//!   state in a [`store`];
//! - [`export`] sends them over OTLP (or prints them);
//! - the [`pipeline`] wires engine, store and exporter (with the outbox) from the configuration;
//! - [`analysis`] answers questions over the stored metric state (correlations);
//! - [`backfill`] reads senders' APIs into deliveries, and [`sync`] re-reads them on a schedule
//!   to heal lost webhook deliveries;
//! - [`grafana`] installs the dashboards into a Grafana (`valuestream grafana install`);
//! - [`http`] is the one router that both [`entrypoints`] (Lambda and the CLI) serve.

pub mod analysis;
pub mod backfill;
pub mod config;
pub mod engine;
pub mod entrypoints;
pub mod export;
pub mod grafana;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod replay;
pub mod secrets;
pub mod sources;
pub mod store;
pub mod sync;
