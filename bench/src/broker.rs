//! The local RabbitMQ as the bench sees it: a throwaway vhost, connections into it, quorum queues
//! bound to exchanges, and the queue depths that tell how far a run has got.

use anyhow::{Context, Result, bail};
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Where the broker listens.
#[derive(Clone, Debug)]
pub struct BrokerAddress {
    /// AMQP `host:port`.
    pub amqp: String,
    /// Management API base URL.
    pub management: String,
    /// User (also used for the management API).
    pub user: String,
    /// Password.
    pub password: String,
}

/// A vhost that lives as long as one bench run.
pub struct BenchVhost {
    address: BrokerAddress,
    http: reqwest::Client,
    name: String,
}

impl BenchVhost {
    /// Creates vhost `name` and gives the bench user every permission on it.
    pub async fn create(address: BrokerAddress, name: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the management API client")?;
        let vhost = Self {
            address,
            http,
            name,
        };
        vhost
            .management_put(&format!("vhosts/{}", vhost.name), serde_json::json!({}))
            .await?;
        vhost
            .management_put(
                &format!("permissions/{}/{}", vhost.name, vhost.address.user),
                serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
            )
            .await?;
        Ok(vhost)
    }

    async fn management_put(&self, path: &str, body: serde_json::Value) -> Result<()> {
        let url = format!("{}/api/{path}", self.address.management);
        let response = self
            .http
            .put(&url)
            .basic_auth(&self.address.user, Some(&self.address.password))
            .json(&body)
            .send()
            .await
            .with_context(|| {
                format!(
                    "the RabbitMQ management API at {} is not reachable; start the broker with `make env-up`",
                    self.address.management
                )
            })?;
        if !response.status().is_success() {
            bail!(
                "PUT {url} answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Deletes the vhost and everything in it.
    pub async fn delete(&self) -> Result<()> {
        let url = format!("{}/api/vhosts/{}", self.address.management, self.name);
        self.http
            .delete(&url)
            .basic_auth(&self.address.user, Some(&self.address.password))
            .send()
            .await
            .with_context(|| format!("DELETE {url}"))?
            .error_for_status()?;
        Ok(())
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An AMQP URI for this vhost (the name needs no escaping: the bench picks it).
    pub fn uri(&self) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            self.address.user, self.address.password, self.address.amqp, self.name
        )
    }

    /// Opens a named connection to the vhost.
    pub async fn connect(&self, purpose: &str) -> Result<Connection> {
        connect(&self.uri(), purpose).await
    }
}

/// Opens a connection, naming it so that it can be told apart in the management UI.
pub async fn connect(uri: &str, purpose: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("millrace-bench {purpose}")));
    Connection::connect(uri, properties).await.with_context(|| {
        format!("cannot connect to RabbitMQ for {purpose}; start the broker with `make env-up`")
    })
}

/// Arguments of a quorum queue.
pub fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// Declares a durable exchange of `kind`.
pub async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {name}"))
}

/// Declares quorum queue `queue` and, when `exchange` is given, binds it there with `routing_key`.
pub async fn declare_quorum_queue(
    channel: &Channel,
    queue: &str,
    binding: Option<(&str, &str)>,
) -> Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            quorum_arguments(),
        )
        .await
        .with_context(|| format!("declaring quorum queue {queue}"))?;
    if let Some((exchange, routing_key)) = binding {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {queue} to {exchange}"))?;
    }
    Ok(())
}

/// Ready messages and consumers of an existing queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready for delivery (quorum queues do not count unacknowledged ones here).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Reads a queue's depth with a passive declare.
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<QueueDepth> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("queue {queue} does not exist"))?;
    Ok(QueueDepth {
        messages: q.message_count(),
        consumers: q.consumer_count(),
    })
}

/// Empties a queue.
pub async fn purge(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .with_context(|| format!("purging {queue}"))?;
    Ok(())
}
