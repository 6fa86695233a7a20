//! HTTP ingress: `POST /ingest/<flow>` (and the flow's configured path). A request is
//! answered 202 only after the event is confirmed into the flow's queue.
//!
//! Checks, in order: size (413), content type (415), authentication (401, HMAC-SHA256 of the
//! body in `X-Millrace-Signature: sha256=<hex>`, or `Authorization: Bearer <token>`), JSON
//! (400). The CloudEvents HTTP binding's `ce-*` headers and W3C trace context are carried over
//! as AMQP headers.
//!
//! The size is checked before the body is buffered: a `Content-Length` over the limit is
//! answered at once, without reading the body (nor sending `100 Continue`), and a body without
//! one is read only until it passes the limit. The rest of a refused body is then read and
//! thrown away (up to 64 MiB, for up to 10 s), so that a sender still writing it gets to read
//! the 413 rather than a reset connection.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use lapin::BasicProperties;
use lapin::types::FieldTable;
use millrace_crds::flow::IngressAuthType;
use millrace_topology::ROUTING_KEY_INGEST;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::headers;
use crate::metrics::Metrics;
use crate::pipeline::envelope::content_id;
use crate::pipeline::is_json_content_type;
use crate::sink::amqp::ConfirmPublisher;

/// Header carrying the HMAC signature.
pub const SIGNATURE_HEADER: &str = "x-millrace-signature";

/// An ingress endpoint of one flow.
pub struct IngressTarget {
    /// `<namespace>/<name>`.
    pub label: String,
    /// The flow's exchange (published with key `ingest`).
    pub exchange: String,
    /// Scheme.
    pub auth: IngressAuthType,
    /// HMAC key or bearer token.
    pub secret: String,
    /// Publisher on the flow's broker.
    pub publisher: Arc<ConfirmPublisher>,
    /// Largest accepted body.
    pub max_bytes: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

fn reject(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Handles one ingress request.
pub async fn ingest(
    target: Arc<IngressTarget>,
    request_headers: HeaderMap,
    body: Body,
) -> Response {
    let header = |name: &str| {
        request_headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let content_length = header("content-length").and_then(|l| l.parse::<u64>().ok());
    if content_length.is_some_and(|len| len > target.max_bytes as u64) {
        discard_rest(body.into_data_stream());
        return too_large(&target);
    }
    let content_type = header("content-type");
    if content_type.is_none() || !is_json_content_type(content_type) {
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json",
        );
    }
    let bytes = match read_body(body, target.max_bytes, content_length).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge(rest)) => {
            discard_rest(rest);
            return too_large(&target);
        }
        Err(BodyError::Unreadable(e)) => {
            tracing::debug!(flow = %target.label, error = %e, "ingress could not read a body");
            return reject(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
    };
    if !authenticated(&target, &request_headers, &bytes) {
        return reject(StatusCode::UNAUTHORIZED, "authentication failed");
    }
    if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
        return reject(StatusCode::BAD_REQUEST, "body is not JSON");
    }

    let mut table = FieldTable::default();
    for name in [
        headers::CE_ID,
        headers::CE_SOURCE,
        headers::CE_TYPE,
        headers::CE_TIME,
        headers::CE_SUBJECT,
        headers::CE_DATASCHEMA,
        headers::TRACEPARENT,
        headers::TRACESTATE,
    ] {
        if let Some(v) = header(name) {
            headers::set_str(&mut table, name, v);
        }
    }
    let id = header(headers::CE_ID)
        .or_else(|| header("idempotency-key"))
        .map(str::to_string)
        .unwrap_or_else(|| content_id(&bytes));
    headers::set_str(&mut table, headers::CE_ID, &id);
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(headers::short_string(&id))
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
        .with_headers(table);
    match target
        .publisher
        .publish(&target.exchange, ROUTING_KEY_INGEST, &bytes, properties)
        .await
    {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response(),
        Err(e) => {
            tracing::warn!(flow = %target.label, error = %e, "ingress could not queue an event");
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be queued; retry later",
            )
        }
    }
}

/// The 413 answer: names the limit and the two ways past it.
fn too_large(target: &IngressTarget) -> Response {
    reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "the body is larger than {} bytes, the largest event flow {} accepts; send smaller \
             events, or raise the worker's --max-message-bytes",
            target.max_bytes, target.label
        ),
    )
}

/// Most bytes of a refused body read and thrown away after the 413, and the longest time spent
/// on it. A sender still writing its body when the 413 goes out would otherwise have its
/// connection reset under it and see a broken pipe instead of the answer.
const DISCARD_MAX_BYTES: usize = 64 * 1024 * 1024;
const DISCARD_MAX_TIME: Duration = Duration::from_secs(10);

/// Reads the rest of a refused body in the background and throws it away, within
/// [`DISCARD_MAX_BYTES`] and [`DISCARD_MAX_TIME`]; past either the connection is closed.
fn discard_rest(mut rest: BodyDataStream) {
    tokio::spawn(async move {
        let drain = async {
            let mut read = 0;
            while let Some(Ok(frame)) = rest.next().await {
                read += frame.len();
                if read > DISCARD_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_MAX_TIME, drain).await;
    });
}

/// Why a body was not read.
enum BodyError {
    /// It passed the limit; reading stopped there, and the rest is still to come.
    TooLarge(BodyDataStream),
    /// The connection failed or the framing was broken.
    Unreadable(axum::Error),
}

/// Reads `body` while it stays within `max_bytes`, and stops at the first frame past it, so an
/// oversized body is never held in memory. (`axum::body::to_bytes` stops there too, but reports
/// a broken connection and an oversized body alike.)
async fn read_body(
    body: Body,
    max_bytes: usize,
    content_length: Option<u64>,
) -> Result<Vec<u8>, BodyError> {
    let expected = content_length.map_or(0, |len| len.min(max_bytes as u64) as usize);
    let mut bytes = Vec::with_capacity(expected);
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(BodyError::Unreadable)?;
        if frame.len() > max_bytes - bytes.len() {
            return Err(BodyError::TooLarge(frames));
        }
        bytes.extend_from_slice(&frame);
    }
    Ok(bytes)
}

fn authenticated(target: &IngressTarget, request_headers: &HeaderMap, body: &[u8]) -> bool {
    match target.auth {
        IngressAuthType::HmacSha256 => {
            let Some(sig) = request_headers
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().strip_prefix("sha256="))
                .and_then(|hex_sig| hex::decode(hex_sig).ok())
            else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(target.secret.as_bytes()) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        }
        IngressAuthType::Bearer => {
            let Some(token) = request_headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().strip_prefix("Bearer "))
            else {
                return false;
            };
            bool::from(token.trim().as_bytes().ct_eq(target.secret.as_bytes()))
        }
    }
}

/// The signature header value for `body` under `key` (for clients and tests).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
