//! A flow's RabbitMQ topology as data: the plan as a document (for `millrace render --topology`)
//! and the changes between two plans that the broker cannot apply in place.

use millrace_crds::worker_config::FlowConfig;
use millrace_topology::{ArgumentValue, Drain, QueueRole, TopologyPlan, migration, plan};
use serde_json::{Value, json};

/// The topology a rendered flow needs: queues, tiers, DLQ, archive and bindings.
pub fn topology_plan(flow: &FlowConfig) -> TopologyPlan {
    plan(flow)
}

fn argument(v: &ArgumentValue) -> Value {
    match v {
        ArgumentValue::Str(s) => json!(s),
        ArgumentValue::Int(i) => json!(i),
        ArgumentValue::Bool(b) => json!(b),
    }
}

fn role(r: QueueRole) -> String {
    match r {
        QueueRole::Main => "main".into(),
        QueueRole::RetryTier(n) => format!("retry-tier-{n}"),
        QueueRole::DeadLetter => "dead-letter".into(),
        QueueRole::Archive => "archive".into(),
        QueueRole::Partition(i) => format!("partition-{i}"),
    }
}

/// The plan as a YAML/JSON document of its own, `kind: TopologyPlan`.
pub fn plan_document(flow: &FlowConfig, plan: &TopologyPlan) -> Value {
    json!({
        "kind": "TopologyPlan",
        "flow": format!("{}/{}", flow.namespace, flow.name),
        "broker": flow.broker,
        "exchanges": plan.exchanges.iter().map(|x| json!({
            "name": x.name,
            "type": x.kind.as_str(),
            "arguments": x.arguments.iter().map(|(k, v)| (k.clone(), argument(v))).collect::<serde_json::Map<_, _>>(),
            "shared": x.shared,
        })).collect::<Vec<_>>(),
        "queues": plan.queues.iter().map(|q| json!({
            "name": q.name,
            "role": role(q.role),
            "arguments": q.arguments.iter().map(|(k, v)| (k.clone(), argument(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "bindings": plan.bindings.iter().map(|b| json!({
            "queue": b.queue,
            "exchange": b.exchange,
            "routingKey": b.routing_key,
        })).collect::<Vec<_>>(),
    })
}

/// What changes from `live` to `wanted` beyond additions, a line each: what the operator
/// migrates (retired queues, removed bindings) and what it refuses (`MigrationRequired`).
pub fn migration_warnings(live: &TopologyPlan, wanted: &TopologyPlan) -> Vec<String> {
    let m = migration(live, wanted);
    let mut warnings = Vec::new();
    if let Some((before, after)) = m.partitions {
        warnings.push(format!(
            "partitions change from {before} to {after}: the operator moves the messages of removed partitions onto the remaining ones; keys move between partitions, so per-key order holds only from the change on"
        ));
    }
    for r in &m.retire {
        let what = match r.drain {
            Drain::ToPartitions => {
                "its messages are moved to the remaining partitions, then it is deleted"
            }
            Drain::WaitUntilEmpty => {
                "it is unbound and deleted once empty (retries still waiting there return to the main queue)"
            }
            Drain::Discard => "it is deleted with its archived events",
        };
        warnings.push(format!("queue {} is no longer wanted: {what}", r.queue));
    }
    for b in &m.unbind {
        warnings.push(format!(
            "binding {} -> {} with key {:?} is no longer wanted and is removed",
            b.exchange, b.queue, b.routing_key
        ));
    }
    for c in &m.blocked {
        warnings.push(format!(
            "{}: the operator refuses it (MigrationRequired) and keeps the old topology; {}",
            c.describe(),
            c.advice()
        ));
    }
    warnings
}
