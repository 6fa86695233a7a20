//! The baseline: the least a correct at-least-once relay can do with lapin. It consumes from a quorum
//! queue, publishes each message to two exchanges (persistent, mandatory, on a confirm channel), and
//! acks the input only once both publishes are confirmed. Messages are pipelined up to the prefetch
//! window, as a real relay would; nothing is parsed, validated or transformed. It consumes and
//! publishes on two connections, acks as soon as a message is settled, and runs on a multi-threaded
//! runtime, like the worker, so the two differ only in what the worker does per message.
//!
//! It runs as its own process (`millrace-bench relay`), so that it is measured the same way as the
//! worker: CPU time and peak RSS from /proc, and sharing the two cores with the broker.

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Confirmation, PublisherConfirm};

use crate::broker;

/// What the relay moves, and where to.
#[derive(Clone, Debug, clap::Args)]
pub struct RelaySpec {
    /// AMQP URI, vhost included.
    #[arg(long)]
    pub uri: String,
    /// Queue to consume.
    #[arg(long)]
    pub queue: String,
    /// Exchanges to publish every message to.
    #[arg(long = "exchange", required = true)]
    pub exchanges: Vec<String>,
    /// Routing key of the publishes.
    #[arg(long)]
    pub routing_key: String,
    /// Unacknowledged messages held at once.
    #[arg(long)]
    pub prefetch: u16,
}

/// Relays until the connection closes or a publish fails.
pub async fn run(spec: RelaySpec) -> Result<()> {
    // Consuming and publishing on connections of their own, as RabbitMQ advises (and as the worker
    // does): flow control on the publisher then never holds up acks.
    let consuming = broker::connect(&spec.uri, "baseline relay (consume)").await?;
    let publishing = broker::connect(&spec.uri, "baseline relay (publish)").await?;
    let consume = consuming.create_channel().await?;
    consume
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    let publish = publishing.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            spec.queue.as_str().into(),
            "baseline-relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {}", spec.queue))?;

    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Settle what is confirmed before taking more: acks go out as soon as they can, so the
            // prefetch window never waits on a settled message.
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => done?,
            delivery = consumer.next() => {
                let Some(delivery) = delivery else { break };
                let delivery = delivery?;
                let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(spec.exchanges.len());
                for exchange in &spec.exchanges {
                    let confirm = publish
                        .basic_publish(
                            exchange.as_str().into(),
                            spec.routing_key.as_str().into(),
                            BasicPublishOptions { mandatory: true, ..Default::default() },
                            &delivery.data,
                            delivery.properties.clone(),
                        )
                        .await?;
                    confirms.push(confirm);
                }
                in_flight.push(async move {
                    for confirm in confirms {
                        match confirm.await? {
                            Confirmation::Ack(None) => {}
                            other => bail!("publish was not confirmed: {other:?}"),
                        }
                    }
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    Ok(())
                });
            }
        }
    }
    Ok(())
}
