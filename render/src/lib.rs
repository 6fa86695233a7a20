//! Every pure decision that turns Millrace resources into what the cluster and the broker
//! receive. The operator dereferences objects from the API, calls this crate, and applies what
//! it returns; the CLI reads the same objects from files and calls the same functions. So an
//! offline `millrace validate` or `millrace render` gives the cluster's verdict and the cluster's
//! bytes.
//!
//! The crate does no I/O: no kube client, no async runtime, no network.
//!
//! | module | decides |
//! |---|---|
//! | [`references`] | what a flow references, and the [`Catalog`] of referenced objects |
//! | [`contract`] | how schemas compile, and the verdict on a contract's versions |
//! | [`jq`] | whether a jq program compiles with the variables the worker provides |
//! | [`flow`] | the judgement of a flow: Accepted, ContractsResolved, ConnectionsReady, and its render |
//! | [`worker_config`] | the flow's WorkerConfig |
//! | [`objects`] | its ConfigMap, Deployment, Service and PDB |
//! | [`digest`] | revision, release digest, canonical JSON, the applied-hash stamp |
//! | [`release`] | whether a promoted flow still has the release digest it was promoted with |
//! | [`settings`] | the operator-wide settings that shape objects, read from the chart's values |
//! | [`topology`] | the flow's RabbitMQ plan (from `millrace-topology`) and changes the broker cannot apply in place |

pub mod contract;
pub mod digest;
pub mod flow;
pub mod jq;
pub mod objects;
pub mod references;
pub mod release;
pub mod settings;
pub mod topology;
pub mod worker_config;

pub use digest::{APPLIED_HASH_ANNOTATION, canonical_json, digest, release_digest, stamp};
pub use flow::{FlowJudgement, Verdict, judge_flow};
pub use objects::{CONFIG_HASH_ANNOTATION, FLOW_LABEL, RenderedFlow, WORKER_PORT, render};
pub use references::{Catalog, ConnectionEntry, ContractEntry, Readiness};
pub use release::{promotion_id, verify_release};
pub use settings::RenderSettings;
pub use topology::{migration_warnings, plan_document, topology_plan};
pub use worker_config::{FlowInputs, ResolvedContract, secret_env_name, worker_config};
