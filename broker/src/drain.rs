//! Emptying and removing the queues of an earlier topology (`millrace_topology::Migration`):
//! unbinding, moving messages on, and deleting a queue only once nothing is lost with it.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation};

use millrace_topology::BindingSpec;

/// Why a queue could not be emptied or removed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The broker refused an operation.
    #[error("{what}: {source}")]
    Broker {
        /// What was being done.
        what: String,
        /// Broker error.
        source: Box<lapin::Error>,
    },
    /// A moved message was not taken by the target (nothing bound, or a nack); it stays on
    /// the queue it came from.
    #[error("moving a message from {queue:?} to exchange {exchange:?}: {why}")]
    NotRouted {
        /// Source queue.
        queue: String,
        /// Target exchange.
        exchange: String,
        /// What the broker answered.
        why: String,
    },
}

fn broker(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> DrainError {
    let what = what.into();
    move |source| DrainError::Broker {
        what,
        source: Box::new(source),
    }
}

fn amqp_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Removes one binding. A binding whose queue or exchange is already gone is not an error
/// (the broker then closes `channel`, so use a fresh one per call).
pub async fn unbind(channel: &Channel, b: &BindingSpec) -> Result<(), DrainError> {
    let result = channel
        .queue_unbind(
            b.queue.as_str().into(),
            b.exchange.as_str().into(),
            b.routing_key.as_str().into(),
            FieldTable::default(),
        )
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if amqp_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(broker(format!(
            "unbinding {} from {} with key {:?}",
            b.queue, b.exchange, b.routing_key
        ))(e)),
    }
}

/// Messages ready on `queue` and its consumers; `None` when the queue does not exist.
/// A missing queue closes `channel`: use a fresh one per call.
pub async fn queue_state(channel: &Channel, queue: &str) -> Result<Option<(u32, u32)>, DrainError> {
    let what = format!("looking at queue {queue}");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => Ok(Some((q.message_count(), q.consumer_count()))),
        Err(e) if amqp_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(broker(what)(e)),
    }
}

/// Moves up to `limit` messages from `queue` to `exchange` with `routing_key`, one at a time:
/// each is published (persistent, mandatory, with its properties and headers) and confirmed
/// before the original is acked. A message the target does not take is put back and the move
/// stops with [`DrainError::NotRouted`]. Returns how many were moved.
///
/// It consumes rather than gets, since quorum queues with a single active consumer refuse
/// `basic.get`. While another consumer (a worker not yet on the new config) is the active one,
/// nothing arrives within [`IDLE`] and the move ends with what it has; the next pass goes on.
/// Puts `channel` in confirm mode; unacked messages return to `queue` when it closes.
pub async fn move_messages(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    limit: usize,
) -> Result<usize, DrainError> {
    let what = format!("moving messages from {queue}");
    let Some((ready, _)) = queue_state(channel, queue).await? else {
        return Ok(0);
    };
    let wanted = limit.min(ready as usize);
    if wanted == 0 {
        return Ok(0);
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker(&what))?;
    channel
        .basic_qos(MOVE_PREFETCH, BasicQosOptions::default())
        .await
        .map_err(broker(&what))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "millrace-operator-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker(&what))?;
    let mut moved = 0;
    while moved < wanted {
        let delivery = match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => return Err(broker(&what)(e)),
            Ok(None) | Err(_) => break,
        };
        match publish(channel, exchange, routing_key, &delivery).await {
            Ok(()) => {
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(broker(&what))?;
                moved += 1;
            }
            Err(why) => {
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
                return Err(DrainError::NotRouted {
                    queue: queue.to_string(),
                    exchange: exchange.to_string(),
                    why,
                });
            }
        }
    }
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    Ok(moved)
}

/// How long a move waits for the next message before it ends the pass.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Messages a move holds unacked at a time.
const MOVE_PREFETCH: u16 = 50;

async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &lapin::message::Delivery,
) -> Result<(), String> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &delivery.data,
            delivery.properties.clone().with_delivery_mode(2),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(format!(
            "returned ({} {}): nothing is bound",
            returned.reply_code, returned.reply_text
        )),
        Confirmation::Nack(_) => Err("the broker refused it (nack)".into()),
        Confirmation::NotRequested => Ok(()),
    }
}

/// What [`delete_if_drained`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The queue is gone (deleted now, or already absent).
    Gone,
    /// The queue still holds messages or has consumers, and stays.
    Kept {
        /// Messages ready.
        messages: u32,
        /// Consumers attached.
        consumers: u32,
    },
}

/// Deletes `queue` only when it is empty and has no consumers, so that no message, ready or
/// unacked by a worker that still consumes it, goes with it. With `discard`, deletes it
/// whatever it holds. The check is the look alone: quorum queues support neither `if-empty`
/// nor `if-unused`. It holds because a retired queue is unbound first, so nothing new can
/// reach it, and without consumers no message is unacked on it.
/// `look` and `delete` are two fresh channels (a missing queue closes the one that asked).
pub async fn delete_if_drained(
    look: &Channel,
    delete: &Channel,
    queue: &str,
    discard: bool,
) -> Result<Removal, DrainError> {
    let Some((messages, consumers)) = queue_state(look, queue).await? else {
        return Ok(Removal::Gone);
    };
    if !discard && (messages > 0 || consumers > 0) {
        return Ok(Removal::Kept {
            messages,
            consumers,
        });
    }
    let result = delete
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    match result {
        Ok(_) => Ok(Removal::Gone),
        Err(e) if amqp_code(&e) == Some(404) => Ok(Removal::Gone),
        Err(e) => Err(broker(format!("deleting queue {queue}"))(e)),
    }
}
