//! Rollout pacing: a change that rolls worker pods (a new worker image, new resources, a rotated
//! Secret) reaches at most `--worker-rollout-max-concurrent` flows at a time, so a bad image
//! stops a few flows, not the plant. A flow takes a slot when the operator applies a changed pod
//! template to its existing Deployment, and gives it back when the Deployment reports the
//! rollout complete, or when the flow goes. A stuck rollout keeps its slot: that is the point.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use millrace_crds::IntegrationFlow;

/// How many flows may roll at once: a number, or a percentage of the flows the operator
/// manages (rounded up, at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxConcurrent {
    /// At most this many.
    Count(usize),
    /// At most this percentage of the flows.
    Percent(u32),
}

impl Default for MaxConcurrent {
    fn default() -> Self {
        MaxConcurrent::Percent(10)
    }
}

impl FromStr for MaxConcurrent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a count (like 5) or a percentage (like 10%)");
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(MaxConcurrent::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(MaxConcurrent::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for MaxConcurrent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxConcurrent::Count(n) => write!(f, "{n}"),
            MaxConcurrent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl MaxConcurrent {
    /// The number of slots for `flows` managed flows.
    pub fn slots(&self, flows: usize) -> usize {
        match self {
            MaxConcurrent::Count(n) => *n,
            MaxConcurrent::Percent(p) => (flows * *p as usize).div_ceil(100).max(1),
        }
    }
}

/// A rollout that has to wait for a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Flows rolling now.
    pub rolling: usize,
    /// Slots.
    pub slots: usize,
    /// The setting the slots come from.
    pub max: MaxConcurrent,
}

impl std::fmt::Display for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the new pod template waits for a rollout slot: {} of {} flows are rolling out (workerRollout.maxConcurrent {}); the workers keep running the previous revision",
            self.rolling, self.slots, self.max
        )
    }
}

/// The flows rolling now.
#[derive(Debug, Default)]
pub struct Rollouts {
    max: MaxConcurrent,
    rolling: Mutex<HashSet<ObjectRef<IntegrationFlow>>>,
}

impl Rollouts {
    /// Pacing with `max`.
    pub fn new(max: MaxConcurrent) -> Self {
        Self {
            max,
            rolling: Mutex::default(),
        }
    }

    /// Takes a slot for `flow` (kept if it holds one already), or says why it must wait.
    pub fn admit(&self, flow: &ObjectRef<IntegrationFlow>, flows: usize) -> Result<(), Queued> {
        let mut rolling = self.rolling.lock().unwrap_or_else(|e| e.into_inner());
        let slots = self.max.slots(flows);
        if rolling.contains(flow) || rolling.len() < slots {
            rolling.insert(flow.clone());
            return Ok(());
        }
        Err(Queued {
            rolling: rolling.len(),
            slots,
            max: self.max,
        })
    }

    /// Gives `flow`'s slot back (its rollout completed, or the flow went).
    pub fn done(&self, flow: &ObjectRef<IntegrationFlow>) {
        self.rolling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(flow);
    }

    /// How many flows roll now.
    pub fn rolling(&self) -> usize {
        self.rolling.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(name: &str) -> ObjectRef<IntegrationFlow> {
        ObjectRef::new(name).within("plant")
    }

    #[test]
    fn settings_parse_and_give_slots() {
        assert_eq!("10%".parse(), Ok(MaxConcurrent::Percent(10)));
        assert_eq!("3".parse(), Ok(MaxConcurrent::Count(3)));
        for bad in ["0", "0%", "101%", "ten", "-1", ""] {
            assert!(bad.parse::<MaxConcurrent>().is_err(), "{bad}");
        }
        let ten = MaxConcurrent::Percent(10);
        assert_eq!(ten.slots(0), 1);
        assert_eq!(ten.slots(5), 1);
        assert_eq!(ten.slots(11), 2);
        assert_eq!(ten.slots(1_000), 100);
        assert_eq!(MaxConcurrent::Count(3).slots(1_000), 3);
        assert_eq!(MaxConcurrent::default().to_string(), "10%");
    }

    #[test]
    fn slots_are_taken_kept_and_given_back() {
        let r = Rollouts::new(MaxConcurrent::Count(2));
        assert!(r.admit(&flow("a"), 10).is_ok());
        assert!(r.admit(&flow("b"), 10).is_ok());
        let q = r.admit(&flow("c"), 10).unwrap_err();
        assert_eq!((q.rolling, q.slots), (2, 2));
        assert!(q.to_string().contains("workerRollout.maxConcurrent 2"));
        // A flow that holds a slot keeps it on its next pass.
        assert!(r.admit(&flow("a"), 10).is_ok());
        r.done(&flow("a"));
        assert!(r.admit(&flow("c"), 10).is_ok());
        assert_eq!(r.rolling(), 2);
    }
}
