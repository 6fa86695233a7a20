//! Confirmed AMQP publishing: persistent, mandatory, on confirm channels, with a bounded
//! window of unconfirmed messages. A nack, a return, a closed channel or a confirm that does not
//! come in time is a failure.
//!
//! The same publisher carries deliveries to AMQP routes and the worker's own retries and
//! dead-letters. It (re)connects lazily, with backoff, so a broker outage turns into transient
//! failures rather than a stuck worker.
//!
//! Every exchange gets a connection and confirm channel of its own (see [`Lane`] for why not
//! only a channel). The broker answers a publish to a missing exchange by closing the channel
//! (404), which fails every unconfirmed publish on it; that failure stays with the routes of
//! that exchange, and the channel is reopened on its next publish. A lane is opened by the
//! first publish that needs it while the others wait on the same attempt; no lock is held
//! across the opening, so a publish on a healthy lane never waits for another exchange's
//! reconnect.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use millrace_broker::tls::{AmqpConnector, verification_hint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::DeliveryError;

/// Largest number of unconfirmed publishes per publisher.
pub const DEFAULT_WINDOW: usize = 1024;

/// Default longest wait for a publish to be written and confirmed.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How a publisher treats its broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublisherSettings {
    /// Largest number of unconfirmed publishes.
    pub window: usize,
    /// Longest wait for a publish to be written and confirmed. A broker in a memory or disk
    /// alarm blocks publishing connections without closing them; past this wait the publish is
    /// a transient failure (retried like any other) and its channel is replaced.
    pub confirm_timeout: Duration,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        }
    }
}

/// A broker connection or channel, opened on first use and shared by many publishes.
enum Link<T> {
    /// Opened, and usable when last looked at.
    Open(T),
    /// Being opened by the publish that first needed it; the others wait on the same attempt.
    Opening(Shared<BoxFuture<'static, Result<T, String>>>),
    /// Neither: the next publish opens it.
    Closed,
}

/// The connection and confirm channel that carry the publishes to one exchange.
///
/// Each exchange has a connection of its own, not only a channel: the broker answers a publish
/// to a missing exchange by closing the channel (404), and publishes still queued for that
/// channel when the client acknowledges the close reach the broker on a channel it no longer
/// knows, which it treats as a connection error (504). Only separate connections keep that
/// away from the other exchanges.
struct Lane {
    connection: Option<Arc<Connection>>,
    channel: Link<Channel>,
    /// Earliest next connection attempt after a failed one.
    next_attempt: Instant,
    backoff: Duration,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            connection: None,
            channel: Link::Closed,
            next_attempt: Instant::now(),
            backoff: MIN_BACKOFF,
        }
    }
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
}

struct Inner {
    broker: AmqpConnector,
    name: String,
    confirm_timeout: Duration,
    /// Held only for bookkeeping, never across an await.
    state: Mutex<State>,
}

/// A lazily connected publisher to one broker, with a confirm channel per exchange.
pub struct ConfirmPublisher {
    inner: Arc<Inner>,
    window: Arc<Semaphore>,
}

/// A published message whose confirm is still due.
pub struct PendingConfirm {
    confirm: lapin::PublisherConfirm,
    channel: Channel,
    publisher: Arc<Inner>,
    deadline: tokio::time::Instant,
    exchange: String,
    routing_key: String,
    _permit: OwnedSemaphorePermit,
}

impl PendingConfirm {
    /// Waits for the broker's answer, until the publisher's confirm timeout. Only an ack
    /// without a return is success. A confirm that does not come in time also replaces the
    /// channel, since a channel the broker stopped answering on cannot be trusted again.
    pub async fn wait(self) -> Result<(), DeliveryError> {
        let limit = self.publisher.confirm_timeout;
        match confirmed(
            self.confirm,
            self.deadline,
            limit,
            &self.exchange,
            &self.routing_key,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Unconfirmed::Refused(e)) => Err(e),
            Err(Unconfirmed::TimedOut(e)) => {
                tracing::warn!(connection = %self.publisher.name, exchange = %self.exchange, error = %e.detail(), "publish not confirmed in time; reopening its channel");
                self.publisher.discard(&self.exchange, &self.channel);
                Err(e)
            }
        }
    }
}

/// Why a publish was not confirmed.
#[derive(Debug)]
enum Unconfirmed {
    /// The broker answered, or the channel closed: the channel needs nothing more.
    Refused(DeliveryError),
    /// No answer in time: the channel is stuck.
    TimedOut(DeliveryError),
}

/// Waits for `confirm` until `deadline` and says what its answer means.
async fn confirmed(
    confirm: impl Future<Output = lapin::Result<Confirmation>>,
    deadline: tokio::time::Instant,
    limit: Duration,
    exchange: &str,
    routing_key: &str,
) -> Result<(), Unconfirmed> {
    let answer = tokio::time::timeout_at(deadline, confirm)
        .await
        .map_err(|_| Unconfirmed::TimedOut(not_confirmed_in_time(limit, exchange)))?;
    match answer {
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
    .map_err(Unconfirmed::Refused)
}

/// The failure of a publish the broker neither confirmed nor refused within `limit`.
fn not_confirmed_in_time(limit: Duration, exchange: &str) -> DeliveryError {
    let limit = if limit.subsec_millis() == 0 {
        format!("{}s", limit.as_secs())
    } else {
        format!("{}ms", limit.as_millis())
    };
    DeliveryError::transient(format!(
        "no confirm within {limit}: the broker may be in a memory or disk alarm (exchange {exchange:?})"
    ))
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

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few handles; one left by a panicking holder is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The confirm channel of `exchange`: the open one, the opening under way, or a new one
    /// (unless connecting failed within its backoff).
    async fn channel(self: &Arc<Self>, exchange: &str) -> Result<Channel, DeliveryError> {
        let opening = {
            let mut state = self.lock();
            let lane = state.lanes.entry(exchange.to_string()).or_default();
            match &lane.channel {
                Link::Open(channel) if channel.status().connected() => {
                    return Ok(channel.clone());
                }
                Link::Opening(opening) => opening.clone(),
                Link::Open(_) | Link::Closed => {
                    let connected = lane
                        .connection
                        .as_ref()
                        .is_some_and(|c| c.status().connected());
                    if !connected && Instant::now() < lane.next_attempt {
                        return Err(DeliveryError::transient(format!(
                            "broker connection {} for exchange {exchange:?} is down; reconnecting",
                            self.name
                        )));
                    }
                    let opening = self
                        .clone()
                        .open_lane(exchange.to_string())
                        .boxed()
                        .shared();
                    lane.channel = Link::Opening(opening.clone());
                    opening
                }
            }
        };
        opening.await.map_err(DeliveryError::transient)
    }

    /// Opens the channel of `exchange`, and its connection first unless that is still open.
    async fn open_lane(self: Arc<Self>, exchange: String) -> Result<Channel, String> {
        let current = self
            .lock()
            .lanes
            .get(&exchange)
            .and_then(|lane| lane.connection.clone());
        let connection = match current {
            Some(c) if c.status().connected() => c,
            stale => {
                if let Some(old) = stale {
                    tokio::spawn(async move {
                        let _ = old.close(200, "reconnecting".into()).await;
                    });
                }
                let name = format!("{} ({exchange})", self.name);
                match connect_to(&self.broker, &name).await {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        // A refused certificate is explained by what to set instead.
                        let e =
                            verification_hint(&e, "spec.amqp.tls").unwrap_or_else(|| e.to_string());
                        tracing::warn!(connection = %name, error = %e, "broker publisher connection failed");
                        let mut state = self.lock();
                        let lane = state.lanes.entry(exchange).or_default();
                        lane.connection = None;
                        lane.channel = Link::Closed;
                        lane.next_attempt = Instant::now() + lane.backoff;
                        lane.backoff = (lane.backoff * 2).min(MAX_BACKOFF);
                        return Err(format!("connecting to broker {}: {e}", self.name));
                    }
                }
            }
        };
        let open = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(format!(
                "opening a channel for exchange {exchange:?} on {}: {e}",
                self.name
            )),
            Err(_) => Err(format!(
                "opening a channel for exchange {exchange:?} on {}: no answer within {}s (the broker may be in a memory or disk alarm)",
                self.name,
                CONNECT_TIMEOUT.as_secs()
            )),
        };
        let mut state = self.lock();
        let lane = state.lanes.entry(exchange).or_default();
        lane.backoff = MIN_BACKOFF;
        lane.connection = Some(connection);
        lane.channel = match &result {
            Ok(channel) => Link::Open(channel.clone()),
            Err(_) => Link::Closed,
        };
        result
    }

    /// Forgets `channel` as the channel of `exchange` (unless it was already replaced) and
    /// closes it in the background; the next publish to `exchange` opens a new one.
    fn discard(&self, exchange: &str, channel: &Channel) {
        {
            let mut state = self.lock();
            if let Some(lane) = state.lanes.get_mut(exchange)
                && let Link::Open(current) = &lane.channel
                && current.id() == channel.id()
            {
                lane.channel = Link::Closed;
            }
        }
        let channel = channel.clone();
        tokio::spawn(async move {
            let close = channel.close(200, "no confirm in time".into());
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, close).await;
        });
    }
}

impl ConfirmPublisher {
    /// A publisher for `broker`; nothing connects until the first publish.
    pub fn new(broker: AmqpConnector, name: String, settings: PublisherSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                name,
                confirm_timeout: settings.confirm_timeout,
                state: Mutex::new(State::default()),
            }),
            window: Arc::new(Semaphore::new(settings.window.max(1))),
        }
    }

    /// Opens the connection and confirm channel of `exchange` now rather than at its first
    /// publish, so that the first messages do not wait for a handshake.
    pub async fn prepare(&self, exchange: &str) -> Result<(), DeliveryError> {
        self.inner.channel(exchange).await.map(|_| ())
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
    /// Messages to one exchange started one after another from one task keep their order (they
    /// share the exchange's channel). The confirm timeout runs from here.
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
        let limit = self.inner.confirm_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        // A channel the broker is closing (another publish to this exchange failed) refuses
        // the message before it is sent; the second try goes out on a fresh channel, so the
        // failure the message gets is its own (such as the 404 of a missing exchange).
        let mut tries = 0;
        let (channel, confirm) = loop {
            tries += 1;
            let channel = self.inner.channel(exchange).await?;
            let send = channel.basic_publish(
                exchange_name.clone(),
                key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties.clone().with_delivery_mode(2),
            );
            match tokio::time::timeout_at(deadline, send).await {
                Ok(Ok(confirm)) => break (channel, confirm),
                Ok(Err(_)) if tries < 2 && !channel.status().connected() => continue,
                Ok(Err(e)) => {
                    return Err(DeliveryError::transient(format!(
                        "publishing to {exchange:?}: {e}"
                    )));
                }
                Err(_) => {
                    let e = not_confirmed_in_time(limit, exchange);
                    tracing::warn!(connection = %self.inner.name, exchange, error = %e.detail(), "publish not written in time; reopening its channel");
                    self.inner.discard(exchange, &channel);
                    return Err(e);
                }
            }
        };
        Ok(PendingConfirm {
            confirm,
            channel,
            publisher: self.inner.clone(),
            deadline,
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            _permit: permit,
        })
    }

    /// The number of the channel currently open for `exchange`, if any (for diagnostics: it
    /// changes when the channel is replaced).
    pub fn channel_id(&self, exchange: &str) -> Option<u16> {
        match self
            .inner
            .lock()
            .lanes
            .get(exchange)
            .map(|lane| &lane.channel)
        {
            Some(Link::Open(channel)) if channel.status().connected() => Some(channel.id()),
            _ => None,
        }
    }

    /// Closes the channels and connections.
    pub async fn close(&self) {
        let lanes = std::mem::take(&mut self.inner.lock().lanes);
        for lane in lanes.into_values() {
            if let Some(c) = lane.connection {
                let _ = c.close(200, "shutting down".into()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline_in(limit: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + limit
    }

    #[tokio::test]
    async fn a_confirm_that_never_comes_times_out_with_the_alarm_reason() {
        let limit = Duration::from_millis(50);
        let started = Instant::now();
        let outcome = confirmed(
            std::future::pending(),
            deadline_in(limit),
            limit,
            "erp.events",
            "orders",
        )
        .await;
        let Err(Unconfirmed::TimedOut(e)) = outcome else {
            panic!("expected a timeout, got {outcome:?}");
        };
        assert!(started.elapsed() >= limit);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the wait is bounded"
        );
        assert!(matches!(e, DeliveryError::Transient { .. }), "{e:?}");
        assert_eq!(
            e.detail(),
            "no confirm within 50ms: the broker may be in a memory or disk alarm (exchange \"erp.events\")"
        );
    }

    #[test]
    fn the_default_timeout_reads_in_seconds() {
        assert_eq!(
            not_confirmed_in_time(DEFAULT_CONFIRM_TIMEOUT, "x").detail(),
            "no confirm within 30s: the broker may be in a memory or disk alarm (exchange \"x\")"
        );
    }

    #[tokio::test]
    async fn answers_before_the_deadline_are_not_timeouts() {
        let limit = Duration::from_secs(30);
        let cases: Vec<(Confirmation, bool, &str)> = vec![
            (Confirmation::Ack(None), true, ""),
            (Confirmation::Nack(None), false, "nacked by the broker"),
            (Confirmation::NotRequested, false, "not in confirm mode"),
        ];
        for (answer, ok, detail) in cases {
            let outcome = confirmed(
                std::future::ready(Ok(answer)),
                deadline_in(limit),
                limit,
                "erp.events",
                "orders",
            )
            .await;
            match outcome {
                Ok(()) => assert!(ok, "expected a failure mentioning {detail:?}"),
                Err(Unconfirmed::Refused(e)) => {
                    assert!(!ok, "expected success, got {e:?}");
                    assert!(e.detail().contains(detail), "{e:?}");
                }
                Err(Unconfirmed::TimedOut(e)) => panic!("not a timeout: {e:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_slow_answer_past_the_deadline_is_a_timeout() {
        let limit = Duration::from_millis(20);
        let slow = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Confirmation::Ack(None))
        };
        let outcome = confirmed(slow, deadline_in(limit), limit, "a", "k").await;
        assert!(
            matches!(outcome, Err(Unconfirmed::TimedOut(_))),
            "{outcome:?}"
        );
    }
}
