//! RabbitMQ helpers: the partners' exchanges and inbound queues, queue depths, and a
//! non-destructive look into a queue (the flow DLQs).

use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::scenario::{self, System};

/// Opens a connection, giving up after 10 seconds.
pub async fn connect(uri: &str) -> anyhow::Result<Connection> {
    let connect = Connection::connect(uri, ConnectionProperties::default());
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .context("timed out connecting to RabbitMQ")?
        .with_context(|| format!("cannot connect to RabbitMQ at {}", redact(uri)))
}

/// The URI without its password, for messages.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &uri[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..])
        }
        _ => uri.to_string(),
    }
}

/// Declares what the partner systems own: the source exchanges the MES, WMS and TMS publish
/// to, the inbound exchanges flows deliver to, and the WMS/TMS inbound queues bound to them.
/// Idempotent.
pub async fn declare_partner_topology(channel: &Channel) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for exchange in scenario::SOURCE_EXCHANGES {
        channel
            .exchange_declare(
                (*exchange).into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {exchange}"))?;
    }
    for system in [System::Wms, System::Tms] {
        let exchange = system.inbound_exchange();
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {exchange}"))?;
        let queue = system.inbound_queue();
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Messages ready in `queue`, or `None` when it does not exist.
pub async fn queue_depth(connection: &Connection, queue: &str) -> anyhow::Result<Option<u32>> {
    // A passive declare of a missing queue closes the channel, so use a throwaway one.
    let channel = connection.create_channel().await?;
    let result = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match result {
        Ok(q) => {
            let _ = channel.close(200, "OK".into()).await;
            Ok(Some(q.message_count()))
        }
        Err(_) => Ok(None),
    }
}

/// A message seen in a queue.
#[derive(Debug, Clone)]
pub struct Peeked {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Reads up to `limit` messages from `queue` without removing them: they are fetched unacked,
/// then returned to the queue when the channel closes.
pub async fn peek(
    connection: &Connection,
    queue: &str,
    limit: usize,
) -> anyhow::Result<Vec<Peeked>> {
    let channel = connection.create_channel().await?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .with_context(|| format!("reading {queue}"))?
        else {
            break;
        };
        let delivery = message.delivery;
        let mut headers = std::collections::BTreeMap::new();
        if let Some(h) = delivery.properties.headers().as_ref() {
            for (k, v) in h.inner() {
                if let Some(text) = amqp_text(v) {
                    headers.insert(k.as_str().to_string(), text);
                }
            }
        }
        out.push(Peeked {
            body: delivery.data.clone(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_string()),
            headers,
        });
    }
    // Closing the channel returns every unacknowledged message to the queue.
    channel.close(200, "OK".into()).await?;
    Ok(out)
}

fn amqp_text(value: &lapin::types::AMQPValue) -> Option<String> {
    use lapin::types::AMQPValue;
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::ShortInt(n) => Some(n.to_string()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        AMQPValue::Timestamp(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://host/"), "amqp://host/");
    }
}
