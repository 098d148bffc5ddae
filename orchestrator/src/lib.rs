//! vtab-orch orchestrator: suite parsing, the content-hashed DAG, the store, the scheduler,
//! the node executors, datasets and the report. Reads top-down in the order below.
pub mod datasets;
pub mod exec;
pub mod fetch;
pub mod graph;
pub mod hash;
pub mod nodes;
pub mod plan;
pub mod report;
pub mod sched;
pub mod store;
pub mod suite;
