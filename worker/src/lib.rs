//! The Millrace worker: the at-least-once data plane of Millrace.
//!
//! It runs the flows of one [`WorkerConfig`](millrace_crds::worker_config::WorkerConfig):
//! consume (AMQP or HTTP ingress) → envelope → validate → transform (jq) → validate output →
//! route → deliver (AMQP or HTTP) → ack. Failures are dead-lettered or retried through delay
//! tiers; ordered flows are split into partitions. See `docs/worker.md`.
//!
//! Embedding (and tests) use [`start`]; the binary wraps [`run`] with config loading, reloads
//! and signals.

pub mod amqp;
pub mod budget;
pub mod config;
pub mod dedupe;
pub mod flow;
pub mod headers;
pub mod metrics;
pub mod partial;
pub mod pipeline;
pub mod process;
pub mod retry;
pub mod runtime;
pub mod server;
pub mod sink;
pub mod source;

pub use config::{ConfigError, SecretResolver};
pub use runtime::{
    DEFAULT_MAX_MESSAGE_BYTES, RunningWorker, WorkerError, WorkerOptions, run, start,
};
