//! AMQP access for the operator: topology declarations, queue sampling and reachability probes.
//! The operator never reads or writes message payloads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use millrace_broker::tls::{AmqpConnector, TlsOptions, verification_hint};
use millrace_crds::naming::FlowNames;
use millrace_topology::TopologyPlan;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Upper bound of retry tiers a flow can have; deletion removes this many tier names.
pub const MAX_RETRY_TIERS: usize = 64;

/// Timeout of one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a PartnerConnection declares the TLS settings of its broker.
const TLS_FIELD: &str = "spec.amqp.tls";

/// Open AMQP connections, one per broker URI and TLS settings, reused across reconciles.
#[derive(Default)]
pub struct Brokers {
    connections: Mutex<HashMap<BrokerKey, Connection>>,
    /// The TLS settings of each broker URI, as the connection controller last read them from a
    /// PartnerConnection (`spec.amqp.tls`); topology connections to that URI use them.
    tls: std::sync::Mutex<HashMap<String, TlsOptions>>,
}

/// What a shared connection is made with: connections with other TLS settings are not reused.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BrokerKey {
    uri: String,
    tls: TlsOptions,
}

/// Figures of a flow's queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready in the main queue (or all partitions).
    pub backlog: u64,
    /// Messages in the DLQ.
    pub dead_letters: u64,
    /// Consumers on the main queue (or all partitions).
    pub consumers: u32,
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

fn broker_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Broker(format!("{what}: {e}"))
}

async fn connect(broker: &AmqpConnector) -> Result<Connection> {
    let attempt = broker.connect(ConnectionProperties::default());
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        // Clients and URI parsers echo the URI they were given: never let credentials through.
        // A refused certificate is explained by what to set instead.
        Ok(Err(e)) => Err(Error::Broker(format!(
            "connect: {}",
            verification_hint(&e, TLS_FIELD).unwrap_or_else(|| broker.redact(&e.to_string()))
        ))),
        Err(_) => Err(Error::Broker(format!(
            "connect: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

impl Brokers {
    /// Remembers the TLS settings that connections to `uri` are made with.
    pub fn set_tls(&self, uri: &str, tls: TlsOptions) {
        let mut known = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if tls.is_empty() {
            known.remove(uri);
        } else {
            known.insert(uri.to_string(), tls);
        }
    }

    /// A fresh channel on the broker at `uri`, with the TLS settings remembered for it,
    /// reconnecting when the connection was lost.
    pub async fn channel(&self, uri: &str) -> Result<Channel> {
        let key = BrokerKey {
            uri: uri.to_string(),
            tls: (self.tls.lock().unwrap_or_else(|p| p.into_inner()))
                .get(uri)
                .cloned()
                .unwrap_or_default(),
        };
        let mut conns = self.connections.lock().await;
        if let Some(conn) = conns.get(&key)
            && conn.status().connected()
            && let Ok(ch) = conn.create_channel().await
        {
            return Ok(ch);
        }
        let broker = AmqpConnector::new(uri, &key.tls)
            .map_err(|e| Error::Broker(format!("connect: {} {e}", e.field(TLS_FIELD))))?;
        let conn = connect(&broker).await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| broker_error("open channel", e))?;
        conns.insert(key, conn);
        Ok(ch)
    }

    /// Declares every exchange, queue and binding of `plan` (idempotent).
    pub async fn declare(&self, uri: &str, plan: &TopologyPlan) -> Result<()> {
        millrace_broker::declare_tolerant(
            || self.channel(uri),
            |e| broker_error("declare", e),
            plan,
        )
        .await
        .map(drop)
    }

    /// Deletes every queue and exchange a flow can own: its derived names, plus `extra` (the
    /// retry queues of its plans and its retiring queues). Deleting a name that does not exist
    /// is harmless, so the retry tiers of earlier releases (`<base>.retry.<n>`) are removed up
    /// to [`MAX_RETRY_TIERS`].
    pub async fn delete_flow(
        &self,
        uri: &str,
        names: &FlowNames,
        partitions: u32,
        extra: &[String],
    ) -> Result<()> {
        let ch = self.channel(uri).await?;
        let mut queues = vec![
            names.main_queue(),
            names.dead_letter_queue(),
            names.archive_stream(),
        ];
        queues.extend((0..MAX_RETRY_TIERS).map(|t| format!("{}.retry.{t}", names.base)));
        queues.extend((0..partitions).map(|i| names.partition_queue(i)));
        queues.extend(extra.iter().cloned());
        for q in queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| broker_error(&format!("delete queue {q}"), e))?;
        }
        for x in [names.exchange(), names.partition_exchange()] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|e| broker_error(&format!("delete exchange {x}"), e))?;
        }
        let _ = ch.close(200, "done".into()).await;
        Ok(())
    }

    /// Removes the bindings from partner exchanges to the flow's main queue and archive, so
    /// that nothing new arrives while the queues and their messages stay (deletion policy
    /// Retain). A queue or exchange that is already gone is not an error. Returns how many
    /// bindings were removed.
    pub async fn unbind_sources(
        &self,
        uri: &str,
        names: &FlowNames,
        sources: &[(String, String)],
    ) -> Result<usize> {
        let mut removed = 0;
        for (exchange, key) in sources {
            for queue in [names.main_queue(), names.archive_stream()] {
                // The broker closes a channel on a missing queue: one channel per binding.
                let ch = self.channel(uri).await?;
                let result = ch
                    .queue_unbind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        key.as_str().into(),
                        FieldTable::default(),
                    )
                    .await;
                match result {
                    Ok(()) => {
                        removed += 1;
                        let _ = ch.close(200, "done".into()).await;
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(broker_error(
                            &format!("unbind {queue} from {exchange} with key {key}"),
                            e,
                        ));
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Samples message and consumer counts with passive declarations. A missing queue reads as
    /// an error, since the topology should exist.
    pub async fn counts(
        &self,
        uri: &str,
        main_queues: &[String],
        dlq: &str,
    ) -> Result<QueueCounts> {
        let mut counts = QueueCounts::default();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let ch = self.channel(uri).await?;
        for q in main_queues {
            let queue = ch
                .queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .map_err(|e| broker_error(&format!("queue {q}"), e))?;
            counts.backlog += u64::from(queue.message_count());
            counts.consumers += queue.consumer_count();
        }
        let queue = ch
            .queue_declare(dlq.into(), passive, FieldTable::default())
            .await
            .map_err(|e| broker_error(&format!("queue {dlq}"), e))?;
        counts.dead_letters = u64::from(queue.message_count());
        let _ = ch.close(200, "done".into()).await;
        Ok(counts)
    }
}

/// Connects to `broker` (a URI with its TLS settings) and closes again; returns the round-trip
/// time.
pub async fn probe(broker: &AmqpConnector) -> Result<Duration> {
    let start = Instant::now();
    let conn = connect(broker).await?;
    let elapsed = start.elapsed();
    let _ = conn.close(200, "probe".into()).await;
    Ok(elapsed)
}
