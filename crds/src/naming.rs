//! Stable, derived names of a flow's RabbitMQ objects and Kubernetes children.
//!
//! Names are `millrace.<namespace>.<flow>[.delay.<delay>ms|.dlq|.archive|.p<i>]`, so an SRE can
//! tell from a queue name which flow owns it, and the same spec always gives the same names. A
//! retry queue is named by its delay: the broker cannot change a queue's `x-message-ttl`, so a
//! changed delay is a new queue (a new generation), and the old one empties on its own. (Retry
//! queues were classic queues named `.retry.<delay>ms` until they became quorum queues; a queue
//! cannot change its type either, so the quorum generation has a name of its own.)

/// Names of every RabbitMQ object that belongs to one flow.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowNames {
    /// The common prefix, `millrace.<namespace>.<flow>`.
    pub base: String,
}

impl FlowNames {
    /// Names for flow `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            base: format!("millrace.{namespace}.{name}"),
        }
    }

    /// The main quorum queue that the source feeds.
    pub fn main_queue(&self) -> String {
        self.base.clone()
    }

    /// The flow's own direct exchange: retries, redrives and HTTP ingress publish here.
    pub fn exchange(&self) -> String {
        self.base.clone()
    }

    /// The retry queue of delay `delay_ms`. Messages wait there for the delay, then return.
    pub fn retry_queue(&self, delay_ms: u64) -> String {
        format!("{}.delay.{delay_ms}ms", self.base)
    }

    /// The dead-letter queue.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.base)
    }

    /// The archive stream kept for replay.
    pub fn archive_stream(&self) -> String {
        format!("{}.archive", self.base)
    }

    /// Partition queue `i` (0-based) of an ordered flow.
    pub fn partition_queue(&self, i: u32) -> String {
        format!("{}.p{i}", self.base)
    }

    /// The consistent-hash exchange that splits an ordered flow across its partitions.
    pub fn partition_exchange(&self) -> String {
        format!("{}.partition", self.base)
    }
}

/// Name of the ConfigMap, Deployment, Service and PDB that run a flow's workers.
pub fn worker_object_name(flow: &str) -> String {
    format!("{flow}-worker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_and_stable() {
        let n = FlowNames::new("plant-berlin", "production-to-inventory");
        assert_eq!(
            n.main_queue(),
            "millrace.plant-berlin.production-to-inventory"
        );
        assert_eq!(
            n.retry_queue(2_000),
            "millrace.plant-berlin.production-to-inventory.delay.2000ms"
        );
        assert_eq!(
            n.dead_letter_queue(),
            "millrace.plant-berlin.production-to-inventory.dlq"
        );
        assert_eq!(
            n.archive_stream(),
            "millrace.plant-berlin.production-to-inventory.archive"
        );
        assert_eq!(
            n.partition_queue(3),
            "millrace.plant-berlin.production-to-inventory.p3"
        );
    }
}
