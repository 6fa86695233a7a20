//! Why a message ends in the dead-letter queue: a small, fixed set of classes.

/// The bounded reason class carried in the `x-millrace-reason` header and the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The body is not JSON.
    InvalidJson,
    /// The body is not UTF-8.
    InvalidUtf8,
    /// The body is empty.
    EmptyBody,
    /// The body is larger than the worker's limit.
    PayloadTooLarge,
    /// The content type is not JSON.
    UnsupportedContentType,
    /// The CloudEvents type is not the contract's.
    WrongEventType,
    /// The event does not validate against the inbound contract.
    ContractViolation,
    /// A jq program (transform, predicate, idempotency or ordering key) failed at run time.
    JqError,
    /// The transformed event does not validate against the output contract.
    OutputContractViolation,
    /// The destination answered 4xx (other than 408 and 429), or a 1xx it cannot use.
    Http4xx,
    /// The destination answered a redirect. Deliveries never follow one: the credentials would
    /// go to another URL.
    HttpRedirect,
    /// The request could not be built for this event (for example a path placeholder whose
    /// field is missing).
    InvalidRequest,
    /// A transient failure lasted for all of the route's attempts.
    RetriesExhausted,
    /// The broker delivered the message more often than the worker allows
    /// (`--max-redeliveries`): something about it crashes or stalls the worker.
    DeliveryLimitExceeded,
    /// The transform (or another jq program) ran out of its time budget for this message.
    TransformBudgetExceeded,
}

impl DeadLetterReason {
    /// The label and header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::InvalidJson => "invalid_json",
            DeadLetterReason::InvalidUtf8 => "invalid_utf8",
            DeadLetterReason::EmptyBody => "empty_body",
            DeadLetterReason::PayloadTooLarge => "payload_too_large",
            DeadLetterReason::UnsupportedContentType => "unsupported_content_type",
            DeadLetterReason::WrongEventType => "wrong_event_type",
            DeadLetterReason::ContractViolation => "contract_violation",
            DeadLetterReason::JqError => "jq_error",
            DeadLetterReason::OutputContractViolation => "output_contract_violation",
            DeadLetterReason::Http4xx => "http_4xx",
            DeadLetterReason::HttpRedirect => "http_redirect",
            DeadLetterReason::InvalidRequest => "invalid_request",
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::DeliveryLimitExceeded => "delivery_limit_exceeded",
            DeadLetterReason::TransformBudgetExceeded => "transform_budget_exceeded",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message the pipeline refuses for good: it goes to the DLQ on its first attempt.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The class.
    pub reason: DeadLetterReason,
    /// What was wrong, for the `x-millrace-last-error` header and logs (never a secret).
    pub detail: String,
}

impl Rejection {
    /// A rejection of class `reason`.
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// The bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        self.reason.as_str()
    }

    /// The detail as logs may carry it, with no event data. Contract failures name pointers
    /// and keywords only, but a jq error may quote the values it failed on, so logs get only
    /// where it failed (`transform`, `route big predicate`); the dead-letter keeps the whole.
    pub fn loggable(&self) -> &str {
        loggable(Some(self.reason), &self.detail)
    }
}

/// Marks where a delivery failure's detail starts quoting the destination's answer.
pub const ANSWER_EXCERPT: &str = ", saying ";

/// A failure's `detail` as logs may carry it, with no event data: a jq error (which may quote
/// the values it failed on) is cut to where it failed, and a destination's quoted answer (which
/// may echo the event) is left out. Contract failures name pointers and keywords only.
pub fn loggable(reason: Option<DeadLetterReason>, detail: &str) -> &str {
    let detail = detail.split(ANSWER_EXCERPT).next().unwrap_or_default();
    match reason {
        Some(DeadLetterReason::JqError) => detail.split(':').next().unwrap_or_default(),
        _ => detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_get_no_event_values() {
        let jq = Rejection::new(
            DeadLetterReason::JqError,
            "transform: cannot use \"SECRET-LOT\" as number",
        );
        assert_eq!(jq.loggable(), "transform");
        let refused = "erp POST http://erp/api/x: answered 422, saying \"qty 12 for IBAN DE00\"";
        assert_eq!(
            loggable(Some(DeadLetterReason::Http4xx), refused),
            "erp POST http://erp/api/x: answered 422"
        );
        let schema = Rejection::new(
            DeadLetterReason::ContractViolation,
            "does not match contract c/v1: /qty: fails \"type\" (schema /properties/qty/type)",
        );
        assert_eq!(schema.loggable(), schema.detail);
    }
}
