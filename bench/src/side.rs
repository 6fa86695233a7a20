//! The two sides of the bench and the topology each one works through. Both get the same kinds of
//! exchanges and queues, declared from the same plan (`millrace_topology::plan` of the bench flow):
//! events arrive on a topic exchange bound to a quorum queue (the flow's main queue, with its
//! dead-letter arguments), beside idle retry tiers and a dead-letter queue, and leave through two
//! direct exchanges, each bound to a quorum queue. Neither side has an archive stream.

use anyhow::{Context, Result};
use lapin::{Channel, ExchangeKind};
use millrace_topology::TopologyPlan;

use crate::broker;
use crate::pipeline::{self, Outputs};

/// One side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The bare lapin relay.
    Baseline,
    /// The release `millrace-worker`.
    Pipeline,
}

impl Side {
    /// Both sides, in the order each round runs them.
    pub const BOTH: [Side; 2] = [Side::Baseline, Side::Pipeline];

    /// Short name, also used in queue and exchange names.
    pub fn label(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Pipeline => "pipeline",
        }
    }

    /// What runs on this side.
    pub fn description(self) -> &'static str {
        match self {
            Side::Baseline => "bare lapin relay",
            Side::Pipeline => "millrace-worker",
        }
    }

    /// The topology this side consumes from: the bench flow's plan under this side's names.
    pub fn plan(self, prefetch: u16) -> TopologyPlan {
        let config = pipeline::worker_config(self.label(), &self.outputs(), prefetch);
        millrace_topology::plan(&config.flows[0])
    }

    /// Topic exchange the events are published to.
    pub fn source_exchange(self) -> String {
        pipeline::source_exchange(self.label())
    }

    /// Queue the consumer reads (the flow's main queue).
    pub fn input_queue(self) -> String {
        pipeline::flow_names(self.label()).main_queue()
    }

    /// Dead-letter queue: it must stay empty.
    pub fn dead_letter_queue(self) -> String {
        pipeline::flow_names(self.label()).dead_letter_queue()
    }

    /// The two destinations.
    pub fn outputs(self) -> Outputs {
        Outputs::new(self.label())
    }

    /// Declares the input topology (from the plan) and the two destinations.
    pub async fn declare(self, channel: &Channel, prefetch: u16) -> Result<()> {
        millrace_broker::declare(channel, &self.plan(prefetch))
            .await
            .with_context(|| format!("declaring the {} topology", self.label()))?;
        for exchange in &self.outputs().exchanges {
            broker::declare_exchange(channel, exchange, ExchangeKind::Direct).await?;
            broker::declare_quorum_queue(
                channel,
                exchange,
                Some((exchange, pipeline::OUTPUT_ROUTING_KEY)),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use millrace_topology::{ArgumentValue, QueueRole};

    use super::*;

    /// Kinds of the plan's exchanges and queues, with the names left out.
    fn shape(plan: &TopologyPlan) -> Vec<String> {
        let mut shape: Vec<String> = plan
            .exchanges
            .iter()
            .map(|e| format!("exchange {}", e.kind.as_str()))
            .collect();
        for q in &plan.queues {
            let kind = match q.arguments.get("x-queue-type") {
                Some(ArgumentValue::Str(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            let mut keys: Vec<&str> = q.arguments.keys().map(String::as_str).collect();
            keys.sort_unstable();
            shape.push(format!("{:?} {kind} {keys:?}", q.role));
        }
        shape.push(format!("{} bindings", plan.bindings.len()));
        shape
    }

    #[test]
    fn both_sides_consume_from_the_same_kind_of_topology() {
        let baseline = Side::Baseline.plan(200);
        let pipeline = Side::Pipeline.plan(200);
        assert_eq!(shape(&baseline), shape(&pipeline));
        assert_ne!(Side::Baseline.input_queue(), Side::Pipeline.input_queue());
        assert_eq!(
            baseline.queue(QueueRole::Main).map(|q| q.name.clone()),
            Some(Side::Baseline.input_queue())
        );
    }

    #[test]
    fn neither_side_has_an_archive() {
        for side in Side::BOTH {
            assert!(side.plan(200).queue(QueueRole::Archive).is_none());
        }
    }
}
