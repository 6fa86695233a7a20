//! The partner systems that receive events: an ERP HTTP API (SAP S/4HANA-like postings) and the
//! WMS and TMS inbound interfaces (AMQP queues on their exchanges). Every receipt is recorded by
//! business key, so the report can account for each injected event.
//!
//! The ERP API can misbehave on purpose: added latency, a share of `503`s, `422` rejections,
//! responses lost after the posting was committed (the client must retry idempotently), and
//! outage windows switched on at run time through `POST /_sim/faults`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::broker;
use crate::scenario::{self, System};

/// Failure injection of the ERP API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Share of postings answered `503 Service Unavailable` before anything is recorded.
    pub fail_rate: f64,
    /// Share of postings rejected with `422` (a business rule, such as a closed posting period).
    pub reject_rate: f64,
    /// Share of postings recorded, then answered `504` as if the response was lost on the way back.
    pub lost_response_rate: f64,
    /// Added latency per request, in milliseconds (with up to 50% jitter).
    pub latency_ms: u64,
    /// When set in a `POST /_sim/faults`, every posting fails with `503` for this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_seconds: Option<u64>,
}

/// Counters of what the partners answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// ERP requests received, of any outcome.
    pub erp_requests: u64,
    /// New postings recorded.
    pub erp_posted: u64,
    /// Repeats of an already recorded key (answered 200, not recorded twice).
    pub erp_duplicates: u64,
    /// Injected `503`s, outages included.
    pub erp_unavailable: u64,
    /// Injected `422` rejections.
    pub erp_rejected: u64,
    /// Postings recorded whose response was replaced by a `504`.
    pub erp_lost_responses: u64,
    /// Requests without valid credentials.
    pub erp_unauthorized: u64,
    /// Requests whose body was not usable (not JSON, no `externalReference`).
    pub erp_bad_requests: u64,
    /// Messages received by the WMS and TMS inbound queues.
    pub amqp_messages: u64,
    /// Of those, repeats of an already received key.
    pub amqp_duplicates: u64,
}

/// One business document received by a partner, keyed by `(system, channel, key)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// ERP, WMS or TMS.
    pub system: String,
    /// The ERP document type (`goods-receipt`, ...) or the AMQP routing key.
    pub channel: String,
    /// The business key (`externalReference`).
    pub key: String,
    /// How many times it arrived (more than 1 means a duplicate reached the partner).
    pub count: u64,
    /// Global arrival order of its first copy, for ordering checks.
    pub arrival: u64,
}

/// Everything the partners received, as served at `GET /_sim/received`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub receipts: Vec<Receipt>,
    pub stats: Stats,
    pub faults: Faults,
}

#[derive(Default)]
struct Store {
    receipts: HashMap<(String, String, String), Receipt>,
    arrivals: u64,
    stats: Stats,
    faults: Faults,
    outage_until: Option<Instant>,
}

impl Store {
    /// Records a receipt; returns false when the key was already there.
    fn record(&mut self, system: &str, channel: &str, key: &str) -> bool {
        self.arrivals += 1;
        let arrival = self.arrivals;
        let id = (system.to_string(), channel.to_string(), key.to_string());
        match self.receipts.get_mut(&id) {
            Some(r) => {
                r.count += 1;
                false
            }
            None => {
                self.receipts.insert(
                    id,
                    Receipt {
                        system: system.to_string(),
                        channel: channel.to_string(),
                        key: key.to_string(),
                        count: 1,
                        arrival,
                    },
                );
                true
            }
        }
    }
}

type Shared = Arc<Mutex<Store>>;

fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings of `millrace-simulator partners`.
pub struct Settings {
    pub listen: SocketAddr,
    pub amqp_uri: String,
    /// `user:password` the ERP API demands (HTTP Basic), if any.
    pub erp_credentials: Option<String>,
    pub faults: Faults,
}

/// Runs the ERP API and the WMS/TMS receivers until Ctrl-C or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store: Shared = Arc::new(Mutex::new(Store {
        faults: settings.faults.clone(),
        ..Store::default()
    }));
    let expected_auth = settings.erp_credentials.as_ref().map(|c| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c.as_bytes())
        )
    });
    let state = AppState {
        store: store.clone(),
        expected_auth: expected_auth.map(Arc::new),
    };

    let erp = Router::new()
        .route("/", get(health))
        .route("/health", get(health))
        .route("/production/confirmations", post(production_confirmation))
        .route("/goods-receipts", post(goods_receipt))
        .route("/goods-movements", post(goods_movement))
        .route(
            "/outbound-deliveries/{delivery}/goods-issue",
            post(goods_issue),
        )
        .route("/shipments/{shipment}/events", post(shipment_event));
    let app = Router::new()
        .route("/", get(health))
        .nest(scenario::ERP_BASE_PATH, erp)
        .route("/_sim/received", get(received))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(
        listen = %settings.listen,
        base = scenario::ERP_BASE_PATH,
        faults = ?settings.faults,
        "ERP API listening"
    );

    for system in [System::Wms, System::Tms] {
        let store = store.clone();
        let uri = settings.amqp_uri.clone();
        tokio::spawn(async move { receive_forever(system, uri, store).await });
    }

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

// --- WMS and TMS inbound -------------------------------------------------------------------------

/// Consumes one partner's inbound queue, reconnecting after any broker trouble.
async fn receive_forever(system: System, uri: String, store: Shared) {
    let mut delay = Duration::from_millis(500);
    loop {
        match receive(system, &uri, &store).await {
            Ok(()) => delay = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(system = system.name(), error = %e, "inbound consumer stopped; reconnecting");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn receive(system: System, uri: &str, store: &Shared) -> anyhow::Result<()> {
    let connection = broker::connect(uri).await?;
    let channel = connection.create_channel().await?;
    broker::declare_partner_topology(&channel).await?;
    channel.basic_qos(200, BasicQosOptions::default()).await?;
    let queue = system.inbound_queue();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            format!("simulator-{}", system.name()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(system = system.name(), queue, "receiving");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let channel_name = delivery.routing_key.as_str().to_string();
        let key = serde_json::from_slice::<serde_json::Value>(&delivery.data)
            .ok()
            .and_then(|v| v["externalReference"].as_str().map(str::to_string))
            .or_else(|| {
                delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.as_str().to_string())
            })
            .or_else(|| header(&delivery.properties, "ce-id"))
            .unwrap_or_else(|| "<no key>".to_string());
        {
            let mut s = lock(store);
            s.stats.amqp_messages += 1;
            if !s.record(system.name(), &channel_name, &key) {
                s.stats.amqp_duplicates += 1;
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    anyhow::bail!("the broker cancelled the consumer")
}

fn header(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

// --- ERP API -------------------------------------------------------------------------------------

#[derive(Clone)]
struct AppState {
    store: Shared,
    expected_auth: Option<Arc<String>>,
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "UP", "system": "ERP (simulated SAP S/4HANA)"}))
}

async fn received(State(state): State<AppState>) -> Json<Snapshot> {
    let s = lock(&state.store);
    let mut receipts: Vec<Receipt> = s.receipts.values().cloned().collect();
    receipts.sort_by_key(|r| r.arrival);
    Json(Snapshot {
        receipts,
        stats: s.stats.clone(),
        faults: s.faults.clone(),
    })
}

async fn get_faults(State(state): State<AppState>) -> Json<Faults> {
    Json(lock(&state.store).faults.clone())
}

async fn set_faults(State(state): State<AppState>, Json(faults): Json<Faults>) -> Json<Faults> {
    let mut s = lock(&state.store);
    s.outage_until = faults
        .outage_seconds
        .map(|secs| Instant::now() + Duration::from_secs(secs));
    tracing::info!(?faults, "ERP faults changed");
    s.faults = Faults {
        outage_seconds: None,
        ..faults
    };
    Json(s.faults.clone())
}

async fn production_confirmation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    post_document(&state, "production-confirmation", None, &headers, &body).await
}

async fn goods_receipt(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    post_document(&state, "goods-receipt", None, &headers, &body).await
}

async fn goods_movement(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    post_document(&state, "goods-movement", None, &headers, &body).await
}

async fn goods_issue(
    State(state): State<AppState>,
    Path(delivery): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    post_document(&state, "goods-issue", Some(delivery), &headers, &body).await
}

async fn shipment_event(
    State(state): State<AppState>,
    Path(shipment): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    post_document(&state, "shipment-event", Some(shipment), &headers, &body).await
}

fn problem(status: StatusCode, title: &str, detail: String) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        Json(serde_json::json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail})),
    )
        .into_response()
}

/// One posting: latency, outage, authentication, body, injected failures, then the idempotent record.
async fn post_document(
    state: &AppState,
    document: &str,
    path_id: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (latency, outage) = {
        let mut s = lock(&state.store);
        s.stats.erp_requests += 1;
        let outage = s.outage_until.is_some_and(|until| Instant::now() < until);
        (s.faults.latency_ms, outage)
    };
    if latency > 0 {
        let jitter = rand::rng().random_range(0..=latency / 2);
        tokio::time::sleep(Duration::from_millis(latency + jitter)).await;
    }
    if outage {
        lock(&state.store).stats.erp_unavailable += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "2")],
            "ERP maintenance window",
        )
            .into_response();
    }
    if let Some(expected) = &state.expected_auth {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if given != expected.as_str() {
            lock(&state.store).stats.erp_unauthorized += 1;
            return problem(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "missing or wrong HTTP Basic credentials".into(),
            );
        }
    }
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);
    let key = match &parsed {
        Ok(v) => v["externalReference"].as_str().map(str::to_string),
        Err(_) => None,
    };
    let Some(key) = key else {
        lock(&state.store).stats.erp_bad_requests += 1;
        let detail = match parsed {
            Err(e) => format!("body is not JSON: {e}"),
            Ok(_) => "body has no string field externalReference".into(),
        };
        return problem(StatusCode::BAD_REQUEST, "Bad Request", detail);
    };

    let mut s = lock(&state.store);
    let (fail, reject, lose) = {
        let mut rng = rand::rng();
        (
            rng.random_bool(s.faults.fail_rate.clamp(0.0, 1.0)),
            rng.random_bool(s.faults.reject_rate.clamp(0.0, 1.0)),
            rng.random_bool(s.faults.lost_response_rate.clamp(0.0, 1.0)),
        )
    };
    if fail {
        s.stats.erp_unavailable += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "ERP work process limit reached",
        )
            .into_response();
    }
    let already = s
        .receipts
        .contains_key(&("ERP".to_string(), document.to_string(), key.clone()));
    if reject && !already {
        s.stats.erp_rejected += 1;
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Posting rejected",
            format!("{document} {key}: posting period is closed for the company code"),
        );
    }
    let new = s.record("ERP", document, &key);
    if new {
        s.stats.erp_posted += 1;
    } else {
        s.stats.erp_duplicates += 1;
    }
    let number = format!("49{:08}", s.arrivals);
    if lose && new {
        s.stats.erp_lost_responses += 1;
        return (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response();
    }
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(serde_json::json!({
            "documentNumber": number,
            "documentType": document,
            "externalReference": key,
            "reference": path_id,
            "duplicate": !new,
        })),
    )
        .into_response()
}
