//! Declaring and deleting a flow's RabbitMQ topology (a `millrace_topology::TopologyPlan`) over
//! AMQP, shared by the operator (which owns the topology in clusters) and the worker (which
//! declares it for local runs and tests).

//! Applying and removing a [`TopologyPlan`] on a broker.

pub mod drain;
pub mod tls;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use millrace_topology::{ArgumentValue, ExchangeType, TopologyPlan};

/// Why a topology could not be applied or removed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The broker refused an exchange declaration (a 406 means it exists with another type
    /// or other arguments).
    #[error("declaring exchange {name:?}: {source}")]
    Exchange {
        /// Exchange name.
        name: String,
        /// Broker error.
        source: Box<lapin::Error>,
    },
    /// The broker refused a queue declaration (a 406 means it exists with other arguments:
    /// align the flow or delete the queue).
    #[error("declaring queue {name:?}: {source}")]
    Queue {
        /// Queue name.
        name: String,
        /// Broker error.
        source: Box<lapin::Error>,
    },
    /// The broker refused a binding.
    #[error("binding queue {queue:?} to exchange {exchange:?} with key {key:?}: {source}")]
    Binding {
        /// Queue.
        queue: String,
        /// Exchange.
        exchange: String,
        /// Binding key.
        key: String,
        /// Broker error.
        source: Box<lapin::Error>,
    },
    /// A name or argument does not fit AMQP limits (names are at most 255 bytes).
    #[error("{name:?} is not a valid AMQP name: longer than 255 bytes")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Deleting failed for another reason than a queue holding data.
    #[error("deleting {name:?}: {source}")]
    Delete {
        /// Queue or exchange name.
        name: String,
        /// Broker error.
        source: Box<lapin::Error>,
    },
}

impl TopologyError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TopologyError::Exchange { .. } => "exchange",
            TopologyError::Queue { .. } => "queue",
            TopologyError::Binding { .. } => "binding",
            TopologyError::InvalidName { .. } => "invalid_name",
            TopologyError::Delete { .. } => "delete",
        }
    }
}

fn short(name: &str) -> Result<ShortString, TopologyError> {
    ShortString::try_new(name).map_err(|_| TopologyError::InvalidName {
        name: name.to_string(),
    })
}

fn field_table(
    args: &std::collections::BTreeMap<String, ArgumentValue>,
) -> Result<FieldTable, TopologyError> {
    let mut table = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            ArgumentValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            ArgumentValue::Int(i) => AMQPValue::LongLongInt(*i),
            ArgumentValue::Bool(b) => AMQPValue::Boolean(*b),
        };
        table.insert(short(k)?, value);
    }
    Ok(table)
}

fn exchange_kind(kind: ExchangeType) -> ExchangeKind {
    match kind {
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::ConsistentHash => ExchangeKind::Custom(kind.as_str().to_string()),
    }
}

/// Declares every exchange, queue and binding of `plan`. Idempotent: declaring an existing,
/// identical object is a no-op. All objects are durable. A partner's source exchange is
/// declared as a durable topic exchange, so a missing one is created; one that exists with
/// another type fails with [`TopologyError::Exchange`] (and closes `channel`, as AMQP does).
pub async fn declare(channel: &Channel, plan: &TopologyPlan) -> Result<(), TopologyError> {
    for exchange in &plan.exchanges {
        channel
            .exchange_declare(
                short(&exchange.name)?,
                exchange_kind(exchange.kind),
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                field_table(&exchange.arguments)?,
            )
            .await
            .map_err(|source| TopologyError::Exchange {
                name: exchange.name.clone(),
                source: Box::new(source),
            })?;
    }
    for queue in &plan.queues {
        channel
            .queue_declare(
                short(&queue.name)?,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                field_table(&queue.arguments)?,
            )
            .await
            .map_err(|source| TopologyError::Queue {
                name: queue.name.clone(),
                source: Box::new(source),
            })?;
    }
    for binding in &plan.bindings {
        channel
            .queue_bind(
                short(&binding.queue)?,
                short(&binding.exchange)?,
                short(&binding.routing_key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| TopologyError::Binding {
                queue: binding.queue.clone(),
                exchange: binding.exchange.clone(),
                key: binding.routing_key.clone(),
                source: Box::new(source),
            })?;
    }
    tracing::debug!(flow = %plan.names.base, "topology declared");
    Ok(())
}

/// Declares `plan` like [`declare`], on channels from `open`, tolerating queues of an earlier
/// release: when the broker finds a queue inequivalent only in one of
/// [`millrace_topology::TOLERATED_ARGUMENTS`] (the delivery limit and at-least-once
/// dead-lettering, which RabbitMQ cannot add to an existing queue), that queue is declared
/// without them on a fresh channel (a refused declare closes its channel). Any other
/// inequivalence fails as in [`declare`]. Returns the queues declared without their tolerated
/// arguments; their redeliveries are bounded by the worker alone until they are recreated.
/// `map` turns a topology error into the caller's error type.
pub async fn declare_tolerant<Fut, E>(
    mut open: impl FnMut() -> Fut,
    map: impl Fn(TopologyError) -> E,
    plan: &TopologyPlan,
) -> Result<Vec<String>, E>
where
    Fut: std::future::Future<Output = Result<Channel, E>>,
{
    let mut plan = plan.clone();
    let mut reduced = Vec::new();
    loop {
        let channel = open().await?;
        let result = declare(&channel, &plan).await;
        if result.is_ok() {
            let _ = channel.close(200, "declared".into()).await;
        }
        match result {
            Ok(()) => return Ok(reduced),
            Err(e) => match tolerated_inequivalence(&e) {
                Some(queue) if !reduced.contains(&queue) => {
                    if let Some(q) = plan.queues.iter_mut().find(|q| q.name == queue) {
                        for key in millrace_topology::TOLERATED_ARGUMENTS {
                            q.arguments.remove(key);
                        }
                    }
                    tracing::warn!(queue = %queue, "the queue predates the broker-side delivery limit and at-least-once dead-lettering; declared without them (the worker still bounds redeliveries); delete and recreate it to get them");
                    reduced.push(queue);
                }
                _ => return Err(map(e)),
            },
        }
    }
}

/// The queue of a declare refused only because an existing queue lacks (or has other values
/// of) one of the tolerated arguments.
fn tolerated_inequivalence(e: &TopologyError) -> Option<String> {
    let TopologyError::Queue { name, source } = e else {
        return None;
    };
    let text = source.to_string();
    millrace_topology::TOLERATED_ARGUMENTS
        .iter()
        .any(|arg| text.contains(&format!("inequivalent arg '{arg}'")))
        .then(|| name.clone())
}

/// What [`delete`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Queues and exchanges that were deleted (or were already absent).
    pub deleted: Vec<String>,
    /// Queues kept because they still hold messages (only with `only_if_empty`).
    pub kept_non_empty: Vec<String>,
}

/// Removes the flow's queues and its own exchanges; partner exchanges are never deleted.
///
/// With `only_if_empty`, a queue that still holds messages is kept and listed in
/// [`DeleteReport::kept_non_empty`] (this is the `Retain` deletion policy), and the flow's
/// exchanges are kept too when any queue was kept, so the remaining queues still receive
/// redrives. A fresh channel is opened per queue, because the broker closes the channel that
/// asked to delete a non-empty queue with `if-empty`.
pub async fn delete(
    connection: &Connection,
    plan: &TopologyPlan,
    only_if_empty: bool,
) -> Result<DeleteReport, TopologyError> {
    let mut report = DeleteReport::default();
    for queue in &plan.queues {
        let channel =
            connection
                .create_channel()
                .await
                .map_err(|source| TopologyError::Delete {
                    name: queue.name.clone(),
                    source: Box::new(source),
                })?;
        let result = channel
            .queue_delete(
                short(&queue.name)?,
                QueueDeleteOptions {
                    if_empty: only_if_empty,
                    ..Default::default()
                },
            )
            .await;
        match result {
            Ok(_) => {
                report.deleted.push(queue.name.clone());
                let _ = channel.close(200, "done".into()).await;
            }
            Err(e) if only_if_empty && is_precondition_failed(&e) => {
                report.kept_non_empty.push(queue.name.clone());
            }
            Err(source) => {
                return Err(TopologyError::Delete {
                    name: queue.name.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    if report.kept_non_empty.is_empty() {
        let channel =
            connection
                .create_channel()
                .await
                .map_err(|source| TopologyError::Delete {
                    name: plan.names.base.clone(),
                    source: Box::new(source),
                })?;
        for exchange in plan.exchanges.iter().filter(|e| !e.shared) {
            channel
                .exchange_delete(short(&exchange.name)?, ExchangeDeleteOptions::default())
                .await
                .map_err(|source| TopologyError::Delete {
                    name: exchange.name.clone(),
                    source: Box::new(source),
                })?;
            report.deleted.push(exchange.name.clone());
        }
        let _ = channel.close(200, "done".into()).await;
    }
    Ok(report)
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_id() == 406,
        _ => false,
    }
}
