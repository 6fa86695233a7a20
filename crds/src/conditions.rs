//! Status conditions in the standard Kubernetes shape, and the one helper that updates them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The text form used in `status.conditions[].status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// `True` when `ok`, else `False`.
    pub fn from_bool(ok: bool) -> Self {
        if ok { Self::True } else { Self::False }
    }
}

/// Sets condition `type_` in `conditions`. The transition time moves only when the status
/// changes, so rewriting the same verdict never makes status look new.
/// Returns true when anything (status, reason, message or generation) changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let status_changed = existing.status != status.as_str();
            let changed = status_changed
                || existing.reason != reason
                || existing.message != message
                || existing.observed_generation != observed_generation;
            if status_changed {
                existing.last_transition_time = now;
                existing.status = status.as_str().to_string();
            }
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.as_str().to_string(),
                reason: reason.to_string(),
                message,
                observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// A status that carries a list of conditions.
pub trait HasConditions {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
    /// The conditions, to change them.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

/// Implements [`HasConditions`] for status types with a `conditions` field.
macro_rules! has_conditions {
    ($($t:ty),*) => {$(
        impl HasConditions for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
        }
    )*};
}

has_conditions!(
    crate::contract::EventContractStatus,
    crate::connection::PartnerConnectionStatus,
    crate::flow::IntegrationFlowStatus
);

/// Finds condition `type_`.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "Pending",
            "wait",
            Some(1),
            at(10)
        ));
        // Same status, new reason: changed, but the transition time stays.
        assert!(set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "NoConsumers",
            "none",
            Some(1),
            at(20)
        ));
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].reason, "NoConsumers");
        // Identical: nothing changed.
        assert!(!set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "NoConsumers",
            "none",
            Some(1),
            at(30)
        ));
        // Status flips: the time moves.
        assert!(set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::True,
            "Ready",
            "ok",
            Some(1),
            at(40)
        ));
        assert_eq!(conds[0].last_transition_time, at(40));
        assert!(is_true(&conds, "Ready"));
        assert_eq!(conds.len(), 1);
    }
}
