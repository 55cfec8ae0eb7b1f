//! ufence's fleet side: what runs beside the processes under ufence, never inside them.
//! [`triage`] groups a fleet's JSON reports by bug; the exporter's scraping of control files and
//! its Prometheus metrics live in [`runtime`] and [`metrics`].

pub mod exporter;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod runtime;
pub mod simulate;
pub mod time;
pub mod triage;
