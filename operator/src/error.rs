//! Reconcile errors, with a bounded category for metrics.

use thiserror::Error;

/// Why a reconcile pass failed. Spec problems are not errors: they become conditions.
#[derive(Debug, Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The broker could not be reached or refused a declaration.
    #[error("broker: {0}")]
    Broker(String),
    /// An object could not be serialized.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The object is missing metadata the operator relies on (name, namespace, uid).
    #[error("object is missing {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Bounded label for `millrace_operator_reconcile_errors_total{category}`.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Finalizer(_) => "finalizer",
            Error::Broker(_) => "broker",
            Error::Serialization(_) => "serialization",
            Error::MissingMetadata(_) => "metadata",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
