//! Step 4a: change a flow's topology without losing a message. The live topology is the plan of
//! the config the workers run (the live ConfigMap); the wanted one is the plan of the new
//! render. `millrace_topology::migration` sorts the difference:
//! - argument changes on a queue that keeps its name are refused (`MigrationRequired`) while
//!   that queue exists, and nothing is applied: the old topology and workers keep running;
//! - otherwise bindings that are no longer wanted are removed, the wanted topology is declared,
//!   and queues that are no longer wanted are retired: recorded in `status.retiringQueues`
//!   *before* the workers get the new config, so a restart cannot forget them, then emptied
//!   ([`drain`]) and deleted once empty and unused.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use millrace_broker::drain::{self, Removal};
use millrace_crds::flow::{IntegrationFlowStatus, RetiringQueue};
use millrace_crds::naming::worker_object_name;
use millrace_crds::worker_config::{CONFIG_MAP_KEY, FlowConfig, WorkerConfig};
use millrace_topology::{Drain, Migration, TopologyPlan, migration, plan};

use super::super::now;
use crate::context::Context;
use crate::error::{Error, Result};

/// Most messages moved off one retired queue in one pass; the rest wait for the next.
const MOVE_LIMIT: usize = 10_000;

/// The plan of the config the workers run now, read from the live ConfigMap; `None` for a new
/// flow or a config this operator cannot read.
pub async fn live_plan(ctx: &Context, ns: &str, flow: &str) -> Result<Option<TopologyPlan>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let Some(cm) = api.get_opt(&worker_object_name(flow)).await? else {
        return Ok(None);
    };
    let config = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_MAP_KEY))
        .and_then(|text| serde_json::from_str::<WorkerConfig>(text).ok());
    Ok(config
        .and_then(|c| c.flows.into_iter().next())
        .map(|f: FlowConfig| plan(&f)))
}

/// The changes from `live` to `wanted`; argument changes on queues that no longer exist on the
/// broker are dropped, since declaring them creates them as wanted.
pub async fn judge(
    ctx: &Context,
    uri: &str,
    live: Option<&TopologyPlan>,
    wanted: &TopologyPlan,
) -> Result<Migration> {
    let Some(live) = live else {
        return Ok(Migration::default());
    };
    let mut m = migration(live, wanted);
    let mut blocked = Vec::new();
    for change in m.blocked {
        let ch = ctx.brokers.channel(uri).await?;
        let exists = drain::queue_state(&ch, &change.queue)
            .await
            .map_err(|e| Error::Broker(e.to_string()))?
            .is_some();
        if exists {
            blocked.push(change);
        }
    }
    m.blocked = blocked;
    Ok(m)
}

/// The refusal message of a blocked migration.
pub fn refusal(m: &Migration) -> String {
    let items: Vec<String> = m
        .blocked
        .iter()
        .map(|c| format!("{}; {}", c.describe(), c.advice()))
        .collect();
    format!(
        "the change is not applied, and the workers keep running the previous revision: {}",
        items.join("; ")
    )
}

/// Adds the queues `m` retires to `retiring`, and drops those `wanted` has again (a partition
/// that comes back keeps its messages and is consumed again). Returns whether it changed.
pub fn record(retiring: &mut Vec<RetiringQueue>, m: &Migration, wanted: &TopologyPlan) -> bool {
    let before = retiring.clone();
    for r in &m.retire {
        if !retiring.iter().any(|q| q.name == r.queue) {
            retiring.push(RetiringQueue {
                name: r.queue.clone(),
                drain: r.drain.as_str().to_string(),
                messages: 0,
                since: now(),
            });
        }
    }
    retiring.retain(|q| !wanted.queues.iter().any(|w| w.name == q.name));
    *retiring != before
}

/// Removes the bindings that are no longer wanted (before the wanted plan is declared).
pub async fn unbind(ctx: &Context, uri: &str, m: &Migration) -> Result<()> {
    for b in &m.unbind {
        let ch = ctx.brokers.channel(uri).await?;
        drain::unbind(&ch, b)
            .await
            .map_err(|e| Error::Broker(e.to_string()))?;
        let _ = ch.close(200, "done".into()).await;
    }
    Ok(())
}

/// Empties and deletes what it can of `status.retiringQueues`: a retired partition's messages
/// move to the remaining partitions (or to the main queue, for a flow no longer ordered), a
/// retry queue waits for its messages to come due, an archive goes with its copies. A queue
/// is deleted only when empty and without consumers. What remains stays listed, with its
/// message count; a queue whose step fails stays listed too, for the next pass.
pub async fn drain(
    ctx: &Context,
    uri: &str,
    wanted: &TopologyPlan,
    status: &mut IntegrationFlowStatus,
) {
    let target = match wanted
        .exchanges
        .iter()
        .find(|x| x.name == wanted.names.partition_exchange())
    {
        Some(x) => (x.name.clone(), String::new()),
        None => (String::new(), wanted.names.main_queue()),
    };
    let mut kept = Vec::new();
    for mut q in std::mem::take(&mut status.retiring_queues) {
        match retire_one(ctx, uri, &q, &target).await {
            Ok(Removal::Gone) => tracing::info!(queue = %q.name, "retired queue deleted"),
            Ok(Removal::Kept { messages, .. }) => {
                q.messages = u64::from(messages);
                kept.push(q);
            }
            Err(e) => {
                tracing::warn!(queue = %q.name, error = %e, "emptying a retired queue failed; retrying");
                kept.push(q);
            }
        }
    }
    status.retiring_queues = kept;
}

/// One pass over one retired queue: move its messages on when it has to, then delete it if
/// nothing is left in it.
async fn retire_one(
    ctx: &Context,
    uri: &str,
    q: &RetiringQueue,
    (exchange, key): &(String, String),
) -> Result<Removal> {
    let how = Drain::parse(&q.drain).unwrap_or(Drain::WaitUntilEmpty);
    let broker = |e: drain::DrainError| Error::Broker(e.to_string());
    if how == Drain::ToPartitions {
        let ch = ctx.brokers.channel(uri).await?;
        let moved = drain::move_messages(&ch, &q.name, exchange, key, MOVE_LIMIT).await;
        let _ = ch.close(200, "done".into()).await;
        let moved = moved.map_err(broker)?;
        if moved > 0 {
            tracing::info!(queue = %q.name, moved, "moved the messages of a retired queue");
        }
    }
    let (look, delete) = (
        ctx.brokers.channel(uri).await?,
        ctx.brokers.channel(uri).await?,
    );
    let removal = drain::delete_if_drained(&look, &delete, &q.name, how == Drain::Discard).await;
    for ch in [look, delete] {
        let _ = ch.close(200, "done".into()).await;
    }
    removal.map_err(broker)
}

/// What the TopologyReady message says about the queues still retiring.
pub fn retiring_note(retiring: &[RetiringQueue]) -> Option<String> {
    if retiring.is_empty() {
        return None;
    }
    let items: Vec<String> = retiring
        .iter()
        .map(|q| format!("{} ({}, {} messages)", q.name, q.drain, q.messages))
        .collect();
    Some(format!(
        "{} queue(s) of the previous topology are being emptied before deletion: {}",
        retiring.len(),
        items.join(", ")
    ))
}
