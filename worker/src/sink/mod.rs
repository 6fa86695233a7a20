//! Destinations: AMQP exchanges and HTTP endpoints.

pub mod amqp;
pub mod http;

use crate::pipeline::DeadLetterReason;

/// How one delivery attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Retrying cannot help (HTTP 4xx other than 408/429, a request that cannot be built).
    #[error("{reason}: {detail}")]
    Permanent {
        /// Class for the DLQ.
        reason: DeadLetterReason,
        /// What happened.
        detail: String,
    },
    /// Retrying may help (5xx, 408, 429, timeouts, connection trouble, broker nack/return).
    #[error("transient: {detail}")]
    Transient {
        /// What happened.
        detail: String,
    },
}

impl DeliveryError {
    /// A transient failure.
    pub fn transient(detail: impl Into<String>) -> Self {
        Self::Transient {
            detail: detail.into(),
        }
    }

    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DeliveryError::Permanent { reason, .. } => reason.as_str(),
            DeliveryError::Transient { .. } => "transient",
        }
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        match self {
            DeliveryError::Permanent { detail, .. } | DeliveryError::Transient { detail } => detail,
        }
    }
}
