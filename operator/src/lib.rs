//! The Millrace operator: kube-rs controllers that turn EventContracts, PartnerConnections and
//! IntegrationFlows into RabbitMQ topology, worker configuration and worker pods.
//!
//! Each reconcile follows one pipeline: dereference → validate (no API calls) → build desired
//! objects (`millrace-render`, pure) → apply → update status.

pub mod backoff;
pub mod broker;
pub mod context;
pub mod controllers;
pub mod error;
pub mod http;
pub mod metrics;
pub mod rollouts;
pub mod run;
pub mod secrets;
