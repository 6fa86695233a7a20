//! Destinations: AMQP exchanges and HTTP endpoints.

pub mod amqp;
pub mod http;

use std::time::Duration;

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
        /// How long the destination asked the worker to wait before the next attempt (an HTTP
        /// `Retry-After` on 429 or 503), already capped by the sink; `None` when it did not say.
        retry_after: Option<Duration>,
    },
}

impl DeliveryError {
    /// A transient failure.
    pub fn transient(detail: impl Into<String>) -> Self {
        Self::Transient {
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The wait the destination asked for before the next attempt, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Transient { retry_after, .. } => *retry_after,
            DeliveryError::Permanent { .. } => None,
        }
    }

    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DeliveryError::Permanent { reason, .. } => reason.as_str(),
            DeliveryError::Transient { .. } => "transient",
        }
    }

    /// The detail as logs may carry it: without the destination's own words, which may echo
    /// the event (the dead-letter keeps them).
    pub fn loggable(&self) -> &str {
        crate::pipeline::reason::loggable(None, self.detail())
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        match self {
            DeliveryError::Permanent { detail, .. } | DeliveryError::Transient { detail, .. } => {
                detail
            }
        }
    }
}
