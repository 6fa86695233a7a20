//! Confirmed AMQP publishing: persistent, mandatory, on a confirm channel, with a bounded
//! window of unconfirmed messages. A nack, a return or a closed channel is a failure.
//!
//! The same publisher carries deliveries to AMQP routes and the worker's own retries and
//! dead-letters. It (re)connects lazily, with backoff, so a broker outage turns into transient
//! failures rather than a stuck worker.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use millrace_broker::tls::{AmqpConnector, verification_hint};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use super::DeliveryError;

/// Largest number of unconfirmed publishes per publisher.
pub const DEFAULT_WINDOW: usize = 1024;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

struct State {
    connection: Option<Connection>,
    channel: Option<Channel>,
    next_attempt: Instant,
    backoff: Duration,
}

/// A lazily connected confirm channel to one broker.
pub struct ConfirmPublisher {
    broker: AmqpConnector,
    name: String,
    state: Mutex<State>,
    window: Arc<Semaphore>,
}

/// A published message whose confirm is still due.
pub struct PendingConfirm {
    confirm: lapin::PublisherConfirm,
    exchange: String,
    routing_key: String,
    _permit: OwnedSemaphorePermit,
}

impl PendingConfirm {
    /// Waits for the broker's answer. Only an ack without a return is success.
    pub async fn wait(self) -> Result<(), DeliveryError> {
        let exchange = &self.exchange;
        let routing_key = &self.routing_key;
        match self.confirm.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(DeliveryError::transient(format!(
                "returned by the broker ({} {}): no queue is bound to exchange {exchange:?} with key {routing_key:?}",
                returned.reply_code, returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => Err(DeliveryError::transient(format!(
                "nacked by the broker on exchange {exchange:?}"
            ))),
            Ok(Confirmation::NotRequested) => {
                Err(DeliveryError::transient("channel is not in confirm mode"))
            }
            Err(e) => Err(DeliveryError::transient(format!(
                "channel closed before the confirm on exchange {exchange:?}: {e}"
            ))),
        }
    }
}

/// Longest wait for a broker connection. A broker that is still starting can accept the TCP
/// connection and never finish the AMQP handshake; without a bound, that would hang the worker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens an AMQP connection to `uri`, without TLS settings, named `name` (shown in the
/// management UI), failing after [`CONNECT_TIMEOUT`].
pub async fn connect(uri: &str, name: &str) -> Result<Connection, lapin::Error> {
    connect_to(&AmqpConnector::plain(uri), name).await
}

/// Opens an AMQP connection to `broker`, with its TLS settings, named `name` (shown in the
/// management UI), failing after [`CONNECT_TIMEOUT`].
pub async fn connect_to(broker: &AmqpConnector, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, broker.connect(properties)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no AMQP handshake within {}s", CONNECT_TIMEOUT.as_secs()),
        )
        .into()),
    }
}

fn short(s: &str, what: &str) -> Result<ShortString, DeliveryError> {
    ShortString::try_new(s).map_err(|_| DeliveryError::Permanent {
        reason: crate::pipeline::DeadLetterReason::InvalidRequest,
        detail: format!("{what} is longer than 255 bytes"),
    })
}

impl ConfirmPublisher {
    /// A publisher for `broker`; nothing connects until the first publish.
    pub fn new(broker: AmqpConnector, name: String, window: usize) -> Self {
        Self {
            broker,
            name,
            state: Mutex::new(State {
                connection: None,
                channel: None,
                next_attempt: Instant::now(),
                backoff: MIN_BACKOFF,
            }),
            window: Arc::new(Semaphore::new(window.max(1))),
        }
    }

    async fn channel(&self) -> Result<Channel, DeliveryError> {
        let mut state = self.state.lock().await;
        if let Some(channel) = &state.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        state.channel = None;
        let now = Instant::now();
        if now < state.next_attempt {
            return Err(DeliveryError::transient(format!(
                "broker connection {} is down; reconnecting",
                self.name
            )));
        }
        match self.open(&mut state).await {
            Ok(channel) => {
                state.backoff = MIN_BACKOFF;
                state.channel = Some(channel.clone());
                Ok(channel)
            }
            Err(e) => {
                state.next_attempt = now + state.backoff;
                state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                // A refused certificate is explained by what to set instead.
                let e = verification_hint(&e, "spec.amqp.tls").unwrap_or_else(|| e.to_string());
                tracing::warn!(connection = %self.name, error = %e, "broker publisher connection failed");
                Err(DeliveryError::transient(format!(
                    "connecting to broker {}: {e}",
                    self.name
                )))
            }
        }
    }

    async fn open(&self, state: &mut State) -> Result<Channel, lapin::Error> {
        let usable = state
            .connection
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if !usable {
            if let Some(old) = state.connection.take() {
                let _ = old.close(200, "reconnecting".into()).await;
            }
            state.connection = Some(connect_to(&self.broker, &self.name).await?);
        }
        let Some(connection) = state.connection.as_ref() else {
            return Err(
                lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into(),
            );
        };
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Publishes and waits for the broker's confirm. Only an ack without a return is success.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), DeliveryError> {
        self.start_publish(exchange, routing_key, body, properties)
            .await?
            .wait()
            .await
    }

    /// Sends a message and returns once it is on the wire, without waiting for the confirm.
    /// Messages started one after another from one task keep their order on the channel.
    pub async fn start_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, DeliveryError> {
        let exchange_name = short(exchange, "exchange name")?;
        let key = short(routing_key, "routing key")?;
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DeliveryError::transient("publisher is shutting down"))?;
        let channel = self.channel().await?;
        let confirm = channel
            .basic_publish(
                exchange_name,
                key,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .map_err(|e| DeliveryError::transient(format!("publishing to {exchange:?}: {e}")))?;
        Ok(PendingConfirm {
            confirm,
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            _permit: permit,
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        state.channel = None;
        if let Some(c) = state.connection.take() {
            let _ = c.close(200, "shutting down".into()).await;
        }
    }
}
