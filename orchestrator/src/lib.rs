//! vtab-orch orchestrator: suite parsing, the content-hashed DAG, the store, the scheduler,
//! the node executors, datasets and the report. Reads top-down in the order below.
pub mod datasets;
pub mod estimate;
pub mod exec;
pub mod export;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod hash;
pub mod history;
pub mod identity;
pub mod lease;
pub mod load;
pub mod node;
pub mod nodes;
pub mod numerics;
pub mod plan;
pub mod records;
pub mod report;
pub mod sched;
pub mod store;
pub mod suite;
pub mod suite_log;
pub mod test_hooks;
pub mod work;
pub mod worker;
