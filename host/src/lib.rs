//! braid runs multi-step API workflows whose steps are sandboxed WebAssembly
//! components.
//!
//! Bird's-eye view: a request (CLI, later HTTP) names a [`workflow::Workflow`];
//! the [`scheduler`] runs its DAG, handing each step attempt to a
//! [`scheduler::StepExecutor`]; the [`sandbox`] executes an attempt in a fresh
//! wasmtime store and instance, where the step reaches the host only through
//! the [`capabilities`] (claims, telemetry, outbound HTTP); the [`store`] keeps
//! claims; the [`report`] says what happened. One W3C trace ([`trace`]) follows
//! the run through every step, API call, claim and event.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod bench;
pub mod bindings;
pub mod capabilities;
pub mod check;
pub mod contract;
pub mod db;
pub mod journal;
pub mod metrics;
pub mod otel;
pub mod postgres;
pub mod recovery;
pub mod registry;
pub mod report;
pub mod sample_api;
pub mod sandbox;
pub mod scaffold;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod tls;
pub mod toolchain;
pub mod trace;
pub mod workflow;
