//! Reconcile errors, with a bounded category for metrics.

use kube::runtime::finalizer::Error as FinalizerError;
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
            // A pass inside the finalizer failed for its own reason; only adding or removing
            // the finalizer itself is a finalizer error.
            Error::Finalizer(e) => match e.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.category()
                }
                FinalizerError::AddFinalizer(_) | FinalizerError::RemoveFinalizer(_) => "finalizer",
                FinalizerError::UnnamedObject | FinalizerError::InvalidFinalizer => "metadata",
            },
            Error::Broker(_) => "broker",
            Error::Serialization(_) => "serialization",
            Error::MissingMetadata(_) => "metadata",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_inside_the_finalizer_keeps_its_own_category() {
        let inner = Error::Broker("connection refused".into());
        let wrapped = Error::Finalizer(Box::new(FinalizerError::ApplyFailed(inner)));
        assert_eq!(wrapped.category(), "broker");
        let cleanup = Error::Finalizer(Box::new(FinalizerError::CleanupFailed(
            Error::MissingMetadata("namespace"),
        )));
        assert_eq!(cleanup.category(), "metadata");
        let unnamed = Error::Finalizer(Box::new(FinalizerError::UnnamedObject));
        assert_eq!(unnamed.category(), "metadata");
    }
}
