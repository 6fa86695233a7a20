//! What changes between the topology a flow runs on (`live`) and the one its spec now wants,
//! sorted by how it can be carried out. Pure: the operator carries it out, the CLI's `diff`
//! prints it.
//!
//! RabbitMQ cannot change a queue's arguments in place: redeclaring with others fails with
//! `406 PRECONDITION_FAILED`. So every change is one of three kinds:
//! - **in place:** new queues and bindings are declared, bindings that are no longer wanted are
//!   removed ([`Migration::unbind`]);
//! - **a new generation:** a queue that is no longer wanted is retired ([`Migration::retire`]):
//!   nothing new reaches it, what it holds is moved on (or expires on its own), and it is
//!   deleted once empty. Retry queues are named by their delay and partitions by their index,
//!   so a changed delay or partition count is always a new queue, never a changed one;
//! - **refused:** an argument of a queue that keeps its name changes
//!   ([`Migration::blocked`]), which the broker cannot do; the old topology keeps working and
//!   the change needs a person ([`ArgumentChange::advice`]).

use std::collections::BTreeSet;

use crate::plan::{ArgumentValue, BindingSpec, QueueRole, TOLERATED_ARGUMENTS, TopologyPlan};

/// What happens to the messages of a retired queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Moved, one by one with publisher confirms, to the flow's partition exchange, which
    /// hashes them onto the partitions that remain (a retired partition).
    ToPartitions,
    /// Left until it is empty: a retry queue's messages return to the main queue when their
    /// delay is over, so the queue empties on its own.
    WaitUntilEmpty,
    /// Dropped with the queue: the archive holds copies of events that were delivered.
    Discard,
}

impl Drain {
    /// How a retired queue of `role` is emptied.
    pub fn for_role(role: QueueRole) -> Self {
        match role {
            QueueRole::Partition(_) => Drain::ToPartitions,
            QueueRole::Archive => Drain::Discard,
            // A main queue and a DLQ keep their names in every plan; should one ever be
            // retired, it is kept until a consumer or a person has emptied it.
            QueueRole::RetryTier(_) | QueueRole::Main | QueueRole::DeadLetter => {
                Drain::WaitUntilEmpty
            }
        }
    }

    /// A stable name, for status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Drain::ToPartitions => "MoveToPartitions",
            Drain::WaitUntilEmpty => "WaitUntilEmpty",
            Drain::Discard => "Discard",
        }
    }

    /// The inverse of [`Drain::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Drain::ToPartitions, Drain::WaitUntilEmpty, Drain::Discard]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A queue that the wanted plan no longer has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retirement {
    /// Queue name.
    pub queue: String,
    /// How its messages are emptied.
    pub drain: Drain,
}

/// A queue argument that changes while the queue keeps its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgumentChange {
    /// Queue name.
    pub queue: String,
    /// What the queue is for.
    pub role: QueueRole,
    /// The argument (`x-single-active-consumer`, `x-max-age`, ...).
    pub argument: String,
    /// Its value on the live queue (`None`: unset).
    pub from: Option<ArgumentValue>,
    /// Its wanted value (`None`: unset).
    pub to: Option<ArgumentValue>,
}

fn show(v: Option<&ArgumentValue>) -> String {
    match v {
        Some(ArgumentValue::Str(s)) => format!("{s:?}"),
        Some(ArgumentValue::Int(i)) => i.to_string(),
        Some(ArgumentValue::Bool(b)) => b.to_string(),
        None => "unset".into(),
    }
}

impl ArgumentChange {
    /// What changes, in a sentence.
    pub fn describe(&self) -> String {
        format!(
            "queue {}: argument {} changes from {} to {}, which the broker cannot change on an existing queue",
            self.queue,
            self.argument,
            show(self.from.as_ref()),
            show(self.to.as_ref())
        )
    }

    /// What a person can do about it.
    pub fn advice(&self) -> String {
        match self.role {
            QueueRole::Main => format!(
                "ordering cannot be switched on or off for a live flow: revert spec.delivery.ordering, or create a new flow with the new setting and delete this one once its queue {} is empty",
                self.queue
            ),
            QueueRole::Archive => format!(
                "revert spec.replay.retention, or delete the stream {} (its archived events go with it) and the operator declares it with the new retention",
                self.queue
            ),
            _ => format!(
                "revert the change, or delete the queue {} once it is empty and the operator declares it anew",
                self.queue
            ),
        }
    }
}

/// The changes from `live` to `wanted`, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    /// Bindings of `live` that `wanted` does not have: removed before `wanted` is declared.
    pub unbind: Vec<BindingSpec>,
    /// Queues of `live` that `wanted` does not have.
    pub retire: Vec<Retirement>,
    /// Argument changes on queues that keep their name: refused.
    pub blocked: Vec<ArgumentChange>,
    /// The number of partitions, before and after, when it changes.
    pub partitions: Option<(usize, usize)>,
}

impl Migration {
    /// `true` when nothing changes but additions.
    pub fn is_empty(&self) -> bool {
        self.unbind.is_empty() && self.retire.is_empty() && self.blocked.is_empty()
    }
}

/// Works out the [`Migration`] from `live` to `wanted`.
pub fn migration(live: &TopologyPlan, wanted: &TopologyPlan) -> Migration {
    let partitions = |p: &TopologyPlan| {
        p.queues
            .iter()
            .filter(|q| matches!(q.role, QueueRole::Partition(_)))
            .count()
    };
    let (before, after) = (partitions(live), partitions(wanted));
    let mut m = Migration {
        partitions: (before != after).then_some((before, after)),
        ..Migration::default()
    };
    for old in &live.queues {
        match wanted.queues.iter().find(|q| q.name == old.name) {
            Some(new) => {
                let keys: BTreeSet<&String> =
                    old.arguments.keys().chain(new.arguments.keys()).collect();
                for key in keys {
                    if TOLERATED_ARGUMENTS.contains(&key.as_str()) {
                        continue;
                    }
                    let (from, to) = (old.arguments.get(key), new.arguments.get(key));
                    if from != to {
                        m.blocked.push(ArgumentChange {
                            queue: old.name.clone(),
                            role: new.role,
                            argument: key.clone(),
                            from: from.cloned(),
                            to: to.cloned(),
                        });
                    }
                }
            }
            None => m.retire.push(Retirement {
                queue: old.name.clone(),
                drain: Drain::for_role(old.role),
            }),
        }
    }
    m.unbind = live
        .bindings
        .iter()
        .filter(|b| !wanted.bindings.contains(b))
        .cloned()
        .collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use millrace_crds::worker_config::{FlowConfig, OrderingConfig, SourceConfig};

    fn flow(partitions: Option<u32>, tiers: Vec<u64>, keys: &[&str], retention: u64) -> FlowConfig {
        let mut f = crate::plan::tests::flow(partitions.map(|p| OrderingConfig {
            key: ".id".into(),
            partitions: p,
        }));
        f.namespace = "plant".into();
        f.name = "orders".into();
        f.source = SourceConfig::Amqp {
            connection: "core".into(),
            exchange: "mes.events".into(),
            routing_keys: keys.iter().map(|k| k.to_string()).collect(),
        };
        f.delivery.retry_tiers_ms = tiers;
        f.archive_retention_ms = retention;
        f
    }

    fn between(a: &FlowConfig, b: &FlowConfig) -> Migration {
        migration(&plan(a), &plan(b))
    }

    #[test]
    fn the_same_plan_needs_nothing() {
        let f = flow(Some(4), vec![1_000], &["order.#"], 3_600_000);
        assert!(between(&f, &f).is_empty());
    }

    #[test]
    fn fewer_partitions_retire_and_unbind_the_extra_ones() {
        let m = between(
            &flow(Some(4), vec![], &["order.#"], 0),
            &flow(Some(2), vec![], &["order.#"], 0),
        );
        assert_eq!(m.partitions, Some((4, 2)));
        assert!(m.blocked.is_empty());
        let retired: Vec<_> = m.retire.iter().map(|r| r.queue.as_str()).collect();
        assert_eq!(
            retired,
            ["millrace.plant.orders.p2", "millrace.plant.orders.p3"]
        );
        assert!(m.retire.iter().all(|r| r.drain == Drain::ToPartitions));
        let unbound: Vec<_> = m.unbind.iter().map(|b| b.queue.as_str()).collect();
        assert_eq!(unbound, retired);
        // More partitions again are only additions.
        assert!(
            between(
                &flow(Some(2), vec![], &["order.#"], 0),
                &flow(Some(4), vec![], &["order.#"], 0)
            )
            .retire
            .is_empty()
        );
    }

    #[test]
    fn a_changed_retry_delay_is_a_new_queue_and_the_old_one_expires() {
        let m = between(
            &flow(None, vec![1_000, 2_000], &["order.#"], 0),
            &flow(None, vec![1_000, 5_000], &["order.#"], 0),
        );
        assert!(m.blocked.is_empty(), "{:?}", m.blocked);
        assert_eq!(
            m.retire,
            [Retirement {
                queue: "millrace.plant.orders.delay.2000ms".into(),
                drain: Drain::WaitUntilEmpty
            }]
        );
        assert_eq!(m.unbind.len(), 1);
        assert_eq!(m.unbind[0].routing_key, "retry.2000ms");
    }

    #[test]
    fn queues_of_an_earlier_release_without_the_delivery_guard_are_not_blocked() {
        let wanted = crate::plan(&flow(Some(2), vec![1_000], &["order.#"], 0));
        let mut live = wanted.clone();
        for q in &mut live.queues {
            for key in TOLERATED_ARGUMENTS {
                q.arguments.remove(key);
            }
        }
        let m = migration(&live, &wanted);
        assert!(m.blocked.is_empty(), "{:?}", m.blocked);
        assert!(m.retire.is_empty() && m.unbind.is_empty());
    }

    #[test]
    fn a_removed_routing_key_is_unbound_from_the_main_queue_and_the_archive() {
        let m = between(
            &flow(None, vec![], &["order.#", "legacy.#"], 3_600_000),
            &flow(None, vec![], &["order.#"], 3_600_000),
        );
        assert!(m.retire.is_empty() && m.blocked.is_empty());
        let unbound: Vec<_> = m
            .unbind
            .iter()
            .map(|b| (b.queue.as_str(), b.routing_key.as_str()))
            .collect();
        assert_eq!(
            unbound,
            [
                ("millrace.plant.orders", "legacy.#"),
                ("millrace.plant.orders.archive", "legacy.#")
            ]
        );
    }

    #[test]
    fn ordering_and_retention_changes_are_refused_with_advice() {
        let m = between(
            &flow(None, vec![], &["order.#"], 3_600_000),
            &flow(Some(2), vec![], &["order.#"], 7_200_000),
        );
        let changed: Vec<_> = m
            .blocked
            .iter()
            .map(|c| (c.queue.as_str(), c.argument.as_str()))
            .collect();
        assert_eq!(
            changed,
            [
                ("millrace.plant.orders", "x-single-active-consumer"),
                ("millrace.plant.orders.archive", "x-max-age")
            ]
        );
        assert!(m.blocked[0].advice().contains("spec.delivery.ordering"));
        assert!(m.blocked[1].advice().contains("spec.replay.retention"));
        assert!(m.blocked[1].describe().contains("\"3600s\" to \"7200s\""));
    }

    #[test]
    fn a_dropped_archive_is_discarded() {
        let m = between(
            &flow(None, vec![], &["order.#"], 3_600_000),
            &flow(None, vec![], &["order.#"], 0),
        );
        assert_eq!(m.retire.len(), 1);
        assert_eq!(m.retire[0].drain, Drain::Discard);
    }

    #[test]
    fn drain_names_round_trip() {
        for d in [Drain::ToPartitions, Drain::WaitUntilEmpty, Drain::Discard] {
            assert_eq!(Drain::parse(d.as_str()), Some(d));
        }
    }
}
