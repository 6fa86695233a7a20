//! HTTP destinations: method, path template, authentication, timeout, rate limit and an
//! `Idempotency-Key` header. Status codes are classified: 2xx delivered; 408, 429 and 5xx
//! transient; other 4xx (and 1xx/3xx) permanent.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use millrace_broker::tls::{HttpTls, verification_hint};
use millrace_crds::connection::HttpAuthType;
use millrace_crds::flow::HttpMethod;
use millrace_crds::worker_config::HttpConnectionConfig;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::sync::Mutex;

use super::DeliveryError;
use crate::config::ConfigError;
use crate::pipeline::DeadLetterReason;
use crate::pipeline::envelope::Envelope;

/// Characters kept as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

enum Auth {
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    ApiKey {
        header: String,
        value: String,
    },
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        token: Mutex<Option<(String, Instant)>>,
    },
}

/// One HTTP destination connection.
pub struct HttpSink {
    name: String,
    client: reqwest::Client,
    base_url: String,
    auth: Auth,
    limiter: Option<DefaultDirectRateLimiter>,
}

fn split_pair(secret: &str, field: &str, what: &str) -> Result<(String, String), ConfigError> {
    secret
        .split_once(':')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| ConfigError::new(field, format!("secret value must be {what}")))
}

impl HttpSink {
    /// Builds the sink of connection `name`; `secret` is the resolved credential and `tls` the
    /// connection's TLS settings, checked.
    pub fn new(
        name: &str,
        config: &HttpConnectionConfig,
        secret: Option<&str>,
        tls: &HttpTls,
    ) -> Result<Self, ConfigError> {
        let field = format!("connections.{name}.http");
        let need = || {
            secret.map(str::to_string).ok_or_else(|| {
                ConfigError::new(format!("{field}.secret"), "is required for this auth type")
            })
        };
        let auth = match config.auth {
            HttpAuthType::None => Auth::None,
            HttpAuthType::Basic => {
                let (user, password) =
                    split_pair(&need()?, &format!("{field}.secret"), "user:password")?;
                Auth::Basic { user, password }
            }
            HttpAuthType::Bearer => Auth::Bearer(need()?),
            HttpAuthType::ApiKey => Auth::ApiKey {
                header: config.header.clone().ok_or_else(|| {
                    ConfigError::new(format!("{field}.header"), "is required for ApiKey")
                })?,
                value: need()?,
            },
            HttpAuthType::OAuth2ClientCredentials => {
                let (client_id, client_secret) = split_pair(
                    &need()?,
                    &format!("{field}.secret"),
                    "clientId:clientSecret",
                )?;
                Auth::OAuth2 {
                    token_url: tls.url(config.token_url.as_deref().ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}.tokenUrl"),
                            "is required for OAuth2ClientCredentials",
                        )
                    })?),
                    client_id,
                    client_secret,
                    token: Mutex::new(None),
                }
            }
        };
        let builder = reqwest::Client::builder()
            // A redirect is an answer, never followed: following it would send the event and
            // its credentials to a URL nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(config.timeout_ms.clamp(1, 10_000)));
        let client = tls
            .apply(builder)
            .build()
            .map_err(|e| ConfigError::new(field.clone(), format!("HTTP client: {e}")))?;
        let limiter = match config.rate_limit_per_second.and_then(NonZeroU32::new) {
            Some(rps) => {
                let burst = config
                    .rate_limit_burst
                    .and_then(NonZeroU32::new)
                    .unwrap_or(rps);
                Some(RateLimiter::direct(
                    Quota::per_second(rps).allow_burst(burst),
                ))
            }
            None => None,
        };
        Ok(Self {
            name: name.to_string(),
            client,
            base_url: tls.url(&config.base_url).trim_end_matches('/').to_string(),
            auth,
            limiter,
        })
    }

    /// Sends one event. `output` is the transformed event (its top-level fields fill the path
    /// template); `body` is its serialized form.
    pub async fn deliver(
        &self,
        method: HttpMethod,
        path_template: &str,
        output: &Value,
        body: &[u8],
        envelope: &Envelope,
        idempotency_key: &str,
    ) -> Result<(), DeliveryError> {
        let path = render_path(path_template, output)?;
        let url = format!("{}{}", self.base_url, path);
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let method = match method {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
        };
        let mut request = self
            .client
            .request(method, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", idempotency_key)
            .body(body.to_vec());
        for (name, value) in envelope.http_headers() {
            request = request.header(name, value);
        }
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::ApiKey { header, value } => request.header(header.as_str(), value.as_str()),
            Auth::OAuth2 { .. } => request.bearer_auth(self.oauth2_token().await?),
        };
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                // The same event would fail the same way on every attempt.
                return DeliveryError::Permanent {
                    reason: DeadLetterReason::InvalidRequest,
                    detail: format!(
                        "{}: the request cannot be built for this event: {e}",
                        self.name
                    ),
                };
            }
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            match verification_hint(&e, "spec.http.tls") {
                Some(hint) => DeliveryError::transient(format!("{} {kind}: {hint}", self.name)),
                None => DeliveryError::transient(format!("{} {kind}: {e}", self.name)),
            }
        })?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| l.chars().take(200).collect::<String>());
        // Read what the destination sent (up to a bound), so the connection can carry the
        // next request instead of being dropped.
        drain(response).await;
        if (300..400).contains(&status) {
            let location = location.unwrap_or_else(|| "nowhere".into());
            return Err(DeliveryError::Permanent {
                reason: DeadLetterReason::HttpRedirect,
                detail: format!(
                    "{} {url}: answered {status}, a redirect to {location}; deliveries never follow redirects: point the connection's baseUrl or the route's path at the final URL",
                    self.name
                ),
            });
        }
        if status == 401
            && let Auth::OAuth2 { token, .. } = &self.auth
        {
            // The token may have been revoked early; fetch a new one on the next attempt.
            *token.lock().await = None;
            return Err(DeliveryError::transient(format!(
                "{} answered 401 with an OAuth2 token; refreshing it",
                self.name
            )));
        }
        classify(status).map_err(|e| match e {
            DeliveryError::Permanent { reason, detail } => DeliveryError::Permanent {
                reason,
                detail: format!("{} {url}: {detail}", self.name),
            },
            DeliveryError::Transient { detail } => DeliveryError::Transient {
                detail: format!("{} {url}: {detail}", self.name),
            },
        })
    }

    async fn oauth2_token(&self) -> Result<String, DeliveryError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            token,
        } = &self.auth
        else {
            return Err(DeliveryError::transient("not an OAuth2 connection"));
        };
        let mut cached = token.lock().await;
        if let Some((value, expires)) = cached.as_ref()
            && Instant::now() < *expires
        {
            return Ok(value.clone());
        }
        let response = self
            .client
            .post(token_url)
            .basic_auth(client_id, Some(client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| DeliveryError::transient(format!("OAuth2 token request: {e}")))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(DeliveryError::transient(format!(
                "OAuth2 token endpoint answered {status}"
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| DeliveryError::transient(format!("OAuth2 token response: {e}")))?;
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| DeliveryError::transient("OAuth2 token response has no access_token"))?
            .to_string();
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(300);
        // Renew a little early so a token never expires in flight.
        let expires = Instant::now() + Duration::from_secs(lifetime.saturating_sub(30).max(1));
        *cached = Some((access.clone(), expires));
        Ok(access)
    }
}

/// Bytes of a response body read before the rest is abandoned.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Reads and discards a response body, up to [`DRAIN_LIMIT`].
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
}

/// Classifies an HTTP status.
pub fn classify(status: u16) -> Result<(), DeliveryError> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(DeliveryError::transient(format!("answered {status}"))),
        400..=499 => Err(DeliveryError::Permanent {
            reason: DeadLetterReason::Http4xx,
            detail: format!("answered {status}"),
        }),
        _ => Err(DeliveryError::Permanent {
            reason: DeadLetterReason::Http4xx,
            detail: format!("answered {status}, which is not a success the worker can follow"),
        }),
    }
}

/// Fills `{field}` placeholders from the top-level fields of `event`, percent-encoded.
pub fn render_path(template: &str, event: &Value) -> Result<String, DeliveryError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let field = &after[..end];
        let value = match event.get(field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => {
                return Err(DeliveryError::Permanent {
                    reason: DeadLetterReason::InvalidRequest,
                    detail: format!(
                        "path placeholder {{{field}}} needs a non-empty string, number or boolean field {field:?} in the transformed event"
                    ),
                });
            }
        };
        out.extend(utf8_percent_encode(&value, SEGMENT));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_are_classified() {
        assert!(classify(200).is_ok());
        assert!(classify(204).is_ok());
        for s in [408, 429, 500, 503] {
            assert!(
                matches!(classify(s), Err(DeliveryError::Transient { .. })),
                "{s}"
            );
        }
        for s in [400, 401, 404, 422, 301] {
            assert!(
                matches!(classify(s), Err(DeliveryError::Permanent { .. })),
                "{s}"
            );
        }
    }

    /// A destination that answers every request with a redirect to `target`.
    async fn redirecting_to(target: String) -> String {
        let app = axum::Router::new().fallback(move || {
            let target = target.clone();
            async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, target)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_nothing_goes_to_the_other_host() {
        // The other host counts what reaches it.
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        let other = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "ok" }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_url = format!("http://{}/collect", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, other).await });

        let base = redirecting_to(other_url.clone()).await;
        let config = HttpConnectionConfig {
            base_url: base,
            auth: HttpAuthType::Bearer,
            secret: None,
            token_url: None,
            header: None,
            timeout_ms: 5_000,
            rate_limit_per_second: None,
            rate_limit_burst: None,
            ca: None,
            server_name: None,
        };
        let tls = HttpTls::new(&config.base_url, &Default::default()).unwrap();
        let sink = HttpSink::new("erp", &config, Some("s3cret-token"), &tls).unwrap();
        let event = json!({"id": "A-1"});
        let e = sink
            .deliver(
                HttpMethod::Post,
                "/orders",
                &event,
                b"{}",
                &Envelope::default(),
                "key-1",
            )
            .await
            .unwrap_err();
        match e {
            DeliveryError::Permanent { reason, detail } => {
                assert_eq!(reason, DeadLetterReason::HttpRedirect);
                assert!(
                    detail.contains("302") && detail.contains(&other_url),
                    "{detail}"
                );
            }
            other => panic!("a redirect must be permanent, got {other:?}"),
        }
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn paths_are_filled_and_encoded() {
        let e = json!({"order": "A 1/2", "n": 5});
        assert_eq!(
            render_path("/orders/{order}/items/{n}", &e).unwrap(),
            "/orders/A%201%2F2/items/5"
        );
        assert_eq!(render_path("/plain", &e).unwrap(), "/plain");
        assert!(matches!(
            render_path("/x/{missing}", &e),
            Err(DeliveryError::Permanent { .. })
        ));
    }
}
