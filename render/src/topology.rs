//! A flow's RabbitMQ topology as data: the plan as a document (for `millrace render --topology`)
//! and the changes between two plans that the broker cannot apply in place.

use millrace_crds::worker_config::FlowConfig;
use millrace_topology::{ArgumentValue, QueueRole, TopologyPlan, plan};
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

/// Changes from `live` to `wanted` that RabbitMQ cannot apply to existing queues: a queue
/// argument that differs (the broker refuses a redeclaration with `406 PRECONDITION_FAILED`),
/// a queue that is no longer wanted (its messages would be stranded), and a binding that is
/// no longer wanted. Each line says what changes and what it means.
pub fn migration_warnings(live: &TopologyPlan, wanted: &TopologyPlan) -> Vec<String> {
    let mut warnings = Vec::new();
    let partitions = |p: &TopologyPlan| {
        p.queues
            .iter()
            .filter(|q| matches!(q.role, QueueRole::Partition(_)))
            .count()
    };
    let (before, after) = (partitions(live), partitions(wanted));
    if before != after {
        warnings.push(format!(
            "partitions change from {before} to {after}: the broker cannot re-split queued messages; the operator must migrate the partition queues"
        ));
    }
    for old in &live.queues {
        match wanted.queues.iter().find(|q| q.name == old.name) {
            Some(new) => {
                let keys: std::collections::BTreeSet<&String> =
                    old.arguments.keys().chain(new.arguments.keys()).collect();
                for key in keys {
                    let (a, b) = (old.arguments.get(key), new.arguments.get(key));
                    if a != b {
                        let show = |v: Option<&ArgumentValue>| {
                            v.map(|v| argument(v).to_string())
                                .unwrap_or_else(|| "unset".into())
                        };
                        warnings.push(format!(
                            "queue {}: argument {key} changes from {} to {}: the broker cannot change it in place; the operator must migrate the queue",
                            old.name,
                            show(a),
                            show(b)
                        ));
                    }
                }
            }
            None => warnings.push(format!(
                "queue {} is no longer wanted: messages on it must be drained before it goes",
                old.name
            )),
        }
    }
    for b in &live.bindings {
        if !wanted.bindings.contains(b) {
            warnings.push(format!(
                "binding {} -> {} with key {:?} is no longer wanted and must be removed",
                b.exchange, b.queue, b.routing_key
            ));
        }
    }
    warnings
}
