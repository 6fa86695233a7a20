//! The worker's HTTP server: `/healthz`, `/readyz`, `/metrics` and the ingress endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::source::http::{IngressTarget, ingest};

/// Liveness and readiness.
#[derive(Default)]
pub struct Health {
    consumers: RwLock<Vec<Arc<AtomicBool>>>,
    stopping: AtomicBool,
}

impl Health {
    /// Replaces the consumer flags (one per consumer of the running config).
    pub fn set_consumers(&self, flags: Vec<Arc<AtomicBool>>) {
        if let Ok(mut c) = self.consumers.write() {
            *c = flags;
        }
    }

    /// Marks the worker as shutting down (never ready again).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Ready: every consumer of the running config is consuming.
    pub fn ready(&self) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        self.consumers
            .read()
            .map(|c| !c.is_empty() && c.iter().all(|f| f.load(Ordering::SeqCst)))
            .unwrap_or(false)
    }
}

/// Ingress endpoints by path (`/ingest/<flow>` and configured paths).
pub type IngressTable = Arc<RwLock<HashMap<String, Arc<IngressTarget>>>>;

/// State shared by the handlers.
#[derive(Clone)]
pub struct ServerState {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Health.
    pub health: Arc<Health>,
    /// Ingress endpoints.
    pub ingress: IngressTable,
}

async fn healthz(State(s): State<ServerState>) -> Response {
    let runaways = s.metrics.transform_runaways.get();
    if runaways >= crate::budget::RUNAWAY_LIMIT {
        let text = format!(
            "{runaways} jq runs are past their time budget and still use CPU; restart the worker"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

async fn readyz(State(s): State<ServerState>) -> Response {
    if s.health.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not consuming").into_response()
    }
}

async fn metrics(State(s): State<ServerState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

fn lookup(s: &ServerState, path: &str) -> Option<Arc<IngressTarget>> {
    s.ingress.read().ok().and_then(|t| t.get(path).cloned())
}

async fn ingest_by_name(
    State(s): State<ServerState>,
    Path(flow): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match lookup(&s, &format!("/ingest/{flow}")) {
        Some(target) => ingest(target, headers, body).await,
        None => (StatusCode::NOT_FOUND, "no such flow").into_response(),
    }
}

async fn ingest_by_path(
    State(s): State<ServerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match lookup(&s, uri.path()) {
        Some(target) if method == Method::POST => ingest(target, headers, body).await,
        Some(_) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Routes for health and metrics.
pub fn ops_router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Routes for ingress.
pub fn ingress_router(state: ServerState) -> Router {
    Router::new()
        .route("/ingest/{flow}", post(ingest_by_name))
        .fallback(ingest_by_path)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Binds `addr` and serves `router` until `shutdown`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((bound, handle))
}
