//! AMQP sources: consumers of a flow's queues, with manual acks and prefetch, that reconnect
//! with backoff after losing the broker and drain on shutdown.
//!
//! Three kinds of consumer exist:
//! - **pipeline** on the main queue of an unordered flow: messages are handled concurrently
//!   (up to the prefetch) and failures retried through delay tiers;
//! - **splitter** on the main queue of an ordered flow (single active consumer): it computes
//!   each message's partition key and republishes it, in order, to the partition exchange;
//! - **partition** on each partition queue (single active consumer): messages are handled one
//!   at a time and failures retried in place, so a key's order is never broken.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{FieldTable, ShortString};
use millrace_topology::PARTITION_KEY_HEADER;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::acks::{Ack, AckWindow};
use crate::flow::FlowRuntime;
use crate::headers;
use crate::metrics::Metrics;
use crate::process::{Disposition, RetryMode, handle};
use crate::retry::Arrival;
use crate::sink::DeliveryError;
use crate::sink::amqp::{PendingConfirm, connect_to};

/// What a consumer does with its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerKind {
    /// Concurrent pipeline with retry tiers.
    Pipeline,
    /// Ordered flow: split the main queue into partitions.
    Splitter,
    /// Ordered flow: one partition, sequential, retries in place.
    Partition,
}

/// Settings shared by every consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Declare the flow's topology before consuming.
    pub declare_topology: bool,
    /// Longest wait for in-flight messages on shutdown.
    pub drain_timeout: Duration,
}

/// Consumes `queue` until `shutdown`, reconnecting after failures. `ready` is true exactly
/// while the consumer is registered with the broker.
pub async fn run_consumer(
    rt: Arc<FlowRuntime>,
    queue: String,
    kind: ConsumerKind,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let result = session(&rt, &queue, kind, &settings, &shutdown, &ready).await;
        ready.store(false, Ordering::SeqCst);
        match result {
            Ok(()) => break,
            Err(e) => {
                rt.metrics
                    .broker_connection_failures
                    .get_or_create(&Metrics::flow(&rt.label))
                    .inc();
                let hint = millrace_broker::tls::verification_hint(&e, "spec.amqp.tls");
                tracing::warn!(flow = %rt.label, queue = %queue, error = %e, hint = hint.as_deref().unwrap_or_default(), retry_in_ms = backoff.as_millis() as u64, "consumer lost the broker; reconnecting");
                let jitter =
                    Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 4));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::info!(flow = %rt.label, queue = %queue, "consumer stopped");
}

/// Why a consumer session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The broker refused or dropped something.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// Declaring the topology failed.
    #[error("topology: {0}")]
    Topology(#[from] millrace_broker::TopologyError),
    /// The broker cancelled the consumer (queue deleted, node down).
    #[error("the broker cancelled the consumer")]
    Cancelled,
}

impl SessionError {
    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SessionError::Broker(_) => "broker",
            SessionError::Topology(e) => e.metric_label(),
            SessionError::Cancelled => "cancelled",
        }
    }
}

async fn session(
    rt: &Arc<FlowRuntime>,
    queue: &str,
    kind: ConsumerKind,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
    ready: &AtomicBool,
) -> Result<(), SessionError> {
    let name = format!("millrace-worker {} {queue}", rt.label);
    let connection = connect_to(&rt.broker, &name).await?;
    if settings.declare_topology {
        millrace_broker::declare_tolerant(
            || async { Ok::<_, SessionError>(connection.create_channel().await?) },
            SessionError::Topology,
            &rt.flow.plan,
        )
        .await?;
    }
    let channel = connection.create_channel().await?;
    // A partition takes one message at a time: when one must be requeued, nothing behind it
    // has been delivered to the worker yet, so it comes back first and the key's order holds.
    let prefetch = match kind {
        ConsumerKind::Partition => 1,
        _ => rt.flow.config.prefetch,
    };
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let queue_name = ShortString::try_new(queue).map_err(|_| {
        lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
            lapin::ChannelState::Error,
            "queue name longer than 255 bytes",
        ))
    })?;
    // Deliveries should not wait for publisher handshakes once messages flow.
    rt.warm_up().await;
    let mut consumer = channel
        .basic_consume(
            queue_name,
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let tag = consumer.tag();
    ready.store(true, Ordering::SeqCst);
    tracing::info!(flow = %rt.label, queue = %queue, kind = ?kind, "consuming");

    // Concurrent pipeline runs; each gives back its delivery's tag and ack handle with the
    // disposition (a requeue's nack it has sent itself).
    let mut tasks: JoinSet<(u64, Acker, Disposition)> = JoinSet::new();
    let mut acks: AckWindow<Acker> = AckWindow::default();
    let mut splits = Splits::default();
    let in_place = RetryMode::InPlace(shutdown.clone());
    // The splitter's messages that its session ends without splitting.
    let mut held: Vec<Delivery> = Vec::new();
    let outcome: Result<(), SessionError> = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(finished) = joined {
                    send_acks(finish(&mut acks, finished)).await;
                }
            }
            Some(split) = splits.pending.next(), if !splits.pending.is_empty() => {
                if let Err((e, delivery)) = splits.settle(rt, split, shutdown).await {
                    held.push(delivery);
                    break Err(e);
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => match kind {
                    ConsumerKind::Pipeline => {
                        let reserved = rt.reserve_bytes(delivery.data.len()).await;
                        let rt = rt.clone();
                        acks.taken(delivery.delivery_tag);
                        tasks.spawn(async move {
                            let d = handle(&rt, &delivery.data, &delivery.properties, arrival(&delivery), &RetryMode::Tiers).await;
                            if d == Disposition::Requeue {
                                settle(&delivery, d).await;
                            }
                            drop(reserved);
                            (delivery.delivery_tag, delivery.acker, d)
                        });
                    }
                    ConsumerKind::Partition => {
                        let d = handle(rt, &delivery.data, &delivery.properties, arrival(&delivery), &in_place).await;
                        settle(&delivery, d).await;
                    }
                    ConsumerKind::Splitter => {
                        let key = partition_key(rt, &delivery).await;
                        // A key with a copy still unconfirmed waits for it, so that the copies
                        // of one key reach their partition in order.
                        let mut failed = None;
                        while splits.keys.holds(&key) {
                            let Some(split) = splits.pending.next().await else { break };
                            if let Err((e, refused)) = splits.settle(rt, split, shutdown).await {
                                failed = Some((e, refused));
                                break;
                            }
                        }
                        if let Some((e, refused)) = failed {
                            held.push(refused);
                            held.push(delivery);
                            break Err(e);
                        }
                        match split(rt, &delivery, &key).await {
                            Ok(p) => splits.push_back(p, delivery, key),
                            Err(e) => {
                                tracing::warn!(flow = %rt.label, error = %e, "splitter could not publish; requeueing");
                                held.push(delivery);
                                break Err(SessionError::Cancelled);
                            }
                        }
                    }
                },
                Some(Err(e)) => break Err(SessionError::Broker(e)),
                None => break Err(SessionError::Cancelled),
            }
        }
    };
    ready.store(false, Ordering::SeqCst);
    let _ = channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await;
    // Drain: in-flight messages finish and are acked; on timeout they are left unacked and
    // the broker redelivers them.
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(finished) = joined {
                send_acks(finish(&mut acks, finished)).await;
            }
        }
        // Splits settle in delivery order: confirmed ones are acked, refused ones held.
        while let Some((confirmed, delivery, _)) = splits.pending.next().await {
            match confirmed {
                Ok(()) => {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
                Err(_) => held.push(delivery),
            }
        }
    };
    if tokio::time::timeout(settings.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(flow = %rt.label, queue = %queue, "drain timed out; unacked messages will be redelivered");
        tasks.abort_all();
    }
    send_acks(acks.flush()).await;
    if kind == ConsumerKind::Splitter {
        requeue_in_order(held, &mut consumer).await;
    }
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    outcome
}

/// Requeues, one by one and in delivery order, the splitter's unsplit messages: those it held,
/// then those the broker had sent ahead. The broker puts requeued messages back in the order of
/// their nacks; leaving them to the channel's close would give up that order.
async fn requeue_in_order(mut held: Vec<Delivery>, consumer: &mut lapin::Consumer) {
    let requeue = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    held.sort_by_key(|d| d.delivery_tag);
    for d in held {
        let _ = d.acker.nack(requeue).await;
    }
    // After the cancel, the stream yields what was already sent, then ends.
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let _ = d.acker.nack(requeue).await;
    }
}

/// The partition key of a delivery. A flow whose programs may loop computes it within its
/// time budget; past the budget the key hashes the body, and the partition consumer then
/// dead-letters the message with `transform_budget_exceeded`.
async fn partition_key(rt: &FlowRuntime, delivery: &Delivery) -> String {
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.to_string());
    if !rt.flow.may_loop() {
        return rt
            .flow
            .partition_key(&delivery.data, content_type.as_deref());
    }
    let flow = rt.flow.clone();
    let body = delivery.data.clone();
    match rt
        .budget
        .run(move || flow.partition_key(&body, content_type.as_deref()))
        .await
    {
        Ok(key) => key,
        Err(_) => crate::pipeline::envelope::content_id(&delivery.data),
    }
}

type SplitConfirm = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Result<(), DeliveryError>, Delivery, String)> + Send>,
>;

/// Partition keys with a split copy not yet confirmed, with how many.
#[derive(Default)]
struct KeysInFlight(std::collections::HashMap<String, usize>);

impl KeysInFlight {
    fn holds(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn hold(&mut self, key: &str) {
        *self.0.entry(key.to_string()).or_default() += 1;
    }

    fn release(&mut self, key: &str) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }
}

/// The splitter's copies on their way to the partitions, in the order of their messages, and
/// the keys they hold.
#[derive(Default)]
struct Splits {
    pending: FuturesOrdered<SplitConfirm>,
    keys: KeysInFlight,
    /// The wait before the next re-send of a refused copy.
    backoff: Duration,
}

/// The first wait before re-sending a refused partition copy; it doubles up to
/// [`SPLIT_BACKOFF_MAX`] while copies keep being refused.
const SPLIT_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const SPLIT_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Splits {
    fn push_back(&mut self, p: PendingConfirm, delivery: Delivery, key: String) {
        self.keys.hold(&key);
        self.pending
            .push_back(Box::pin(async move { (p.wait().await, delivery, key) }));
    }

    /// Settles the oldest copy: its message is acked once the partition confirmed it. A refused
    /// copy (a partition full or gone) is sent again in place, after a growing wait, and keeps
    /// its key held, so no later message of the key overtakes it and nothing is requeued. The
    /// error, with the message, when it cannot even be sent again or the worker stops.
    async fn settle(
        &mut self,
        rt: &FlowRuntime,
        (confirmed, delivery, key): (Result<(), DeliveryError>, Delivery, String),
        shutdown: &CancellationToken,
    ) -> Result<(), (SessionError, Delivery)> {
        let error = match confirmed {
            Ok(()) => {
                self.keys.release(&key);
                self.backoff = Duration::ZERO;
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                return Ok(());
            }
            Err(e) => e,
        };
        self.backoff = self
            .backoff
            .max(SPLIT_BACKOFF_FIRST / 2)
            .saturating_mul(2)
            .min(SPLIT_BACKOFF_MAX);
        rt.metrics
            .settle_retries
            .get_or_create(&Metrics::flow(&rt.label))
            .inc();
        tracing::warn!(flow = %rt.label, error = %error.loggable(), retry_in_ms = self.backoff.as_millis() as u64, "partition refused a copy; sending it again");
        tokio::select! {
            _ = shutdown.cancelled() => {
                self.keys.release(&key);
                return Err((SessionError::Cancelled, delivery));
            }
            _ = tokio::time::sleep(self.backoff) => {}
        }
        match split(rt, &delivery, &key).await {
            Ok(p) => {
                // Still the oldest: it goes back to the front, its key still held.
                self.pending
                    .push_front(Box::pin(async move { (p.wait().await, delivery, key) }));
                Ok(())
            }
            Err(e) => {
                self.keys.release(&key);
                tracing::warn!(flow = %rt.label, error = %e.loggable(), "splitter could not publish; requeueing");
                Err((SessionError::Cancelled, delivery))
            }
        }
    }
}

async fn split(
    rt: &FlowRuntime,
    delivery: &Delivery,
    key: &str,
) -> Result<PendingConfirm, DeliveryError> {
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    headers::set_str(&mut table, PARTITION_KEY_HEADER, key);
    headers::remove(&mut table, headers::DELIVERY_COUNT);
    rt.publisher
        .start_publish(
            &rt.flow.names.partition_exchange(),
            "",
            &delivery.data,
            delivery.properties.clone().with_headers(table),
        )
        .await
}

/// Where the broker says `delivery` came from.
fn arrival(delivery: &Delivery) -> Arrival<'_> {
    Arrival {
        exchange: delivery.exchange.as_str(),
        routing_key: delivery.routing_key.as_str(),
    }
}

/// Records a finished pipeline run in the ack window: the acks due now.
fn finish(
    acks: &mut AckWindow<Acker>,
    (tag, acker, d): (u64, Acker, Disposition),
) -> Vec<Ack<Acker>> {
    match d {
        Disposition::Ack => acks.finished(tag, acker),
        Disposition::Requeue => acks.settled_otherwise(tag),
    }
}

/// Sends acks; one that fails leaves its deliveries to the broker, which redelivers them once
/// the channel is gone.
async fn send_acks(due: Vec<Ack<Acker>>) {
    for ack in due {
        let options = BasicAckOptions {
            multiple: ack.multiple,
        };
        if let Err(e) = ack.handle.ack(options).await {
            tracing::debug!(error = %e, "could not ack; the broker will redeliver");
        }
    }
}

async fn settle(delivery: &Delivery, disposition: Disposition) {
    let result = match disposition {
        Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Disposition::Requeue => {
            // A short pause keeps a broker-less worker from spinning on the same message.
            tokio::time::sleep(Duration::from_millis(200)).await;
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not settle a delivery; the broker will redeliver it");
    }
}
