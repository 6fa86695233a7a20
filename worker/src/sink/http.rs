//! HTTP destinations: method, path template, authentication, timeout, rate limit, a cap on
//! requests in flight per host, and an `Idempotency-Key` header.
//!
//! Status codes are classified: 2xx delivered; 408, 429 and 5xx transient (a `Retry-After` on
//! 429 or 503 travels with the failure, at most [`RETRY_AFTER_CAP`]); other 4xx (and 1xx/3xx)
//! permanent. A 401 or 403 first makes the sink read its credential again: when the Secret was
//! rotated, the request is sent once more with the new value (and, for OAuth2, a 401 always
//! fetches a fresh token first). Redirects are never followed, and a request's URL never leaves
//! the connection's host, so credentials only ever go where the connection points.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use millrace_broker::tls::{HttpTls, verification_hint};
use millrace_crds::connection::HttpAuthType;
use millrace_crds::flow::HttpMethod;
use millrace_crds::worker_config::HttpConnectionConfig;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use super::DeliveryError;
use crate::config::{ConfigError, SecretReread};
use crate::pipeline::DeadLetterReason;
use crate::pipeline::envelope::Envelope;
use crate::pipeline::reason::ANSWER_EXCERPT;

/// Requests in flight to one destination host when the worker is not told otherwise
/// (`--http-max-in-flight-per-host`).
pub const DEFAULT_MAX_IN_FLIGHT_PER_HOST: usize = 32;

/// The longest `Retry-After` honoured. A destination that asks for more (or for a date further
/// away) gets this: a message parked longer would look lost, and a misconfigured server could
/// otherwise hold events for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10 * 60);

/// Bytes of a response body read before the rest is abandoned (and the connection with it).
const DRAIN_LIMIT: usize = 64 * 1024;

/// Bytes of a refusal's body looked at for the failure detail.
const EXCERPT_SCAN: usize = 4 * 1024;

/// Characters of a refusal's body kept in the failure detail.
const EXCERPT_CHARS: usize = 200;

/// Characters kept as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Caps the requests in flight to each destination host (scheme, host and port), shared by the
/// HTTP sinks built from one config, so two connections to one host share its cap.
pub struct HostLimits {
    per_host: usize,
    hosts: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimits {
    /// At most `per_host` requests in flight per host (at least 1).
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.clamp(1, Semaphore::MAX_PERMITS),
            hosts: Default::default(),
        }
    }

    /// The semaphore of `url`'s host.
    fn of(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        // Held for a map lookup only, never across an await.
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

impl Default for HostLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IN_FLIGHT_PER_HOST)
    }
}

/// How a connection authenticates, apart from the secret value.
struct AuthSettings {
    kind: HttpAuthType,
    /// `connections.<name>.http`, for errors.
    field: String,
    /// The ApiKey header.
    header: Option<HeaderName>,
    /// The OAuth2 token endpoint, as requests must be sent.
    token_url: Option<String>,
}

/// The authentication built from one value of the connection's secret.
struct Credential {
    /// The value it was built from, to tell whether a re-read found a new one. Never printed.
    secret: Option<String>,
    auth: Auth,
}

enum Auth {
    None,
    Basic {
        user: String,
        password: String,
    },
    /// Bearer (in `Authorization`) or ApiKey (in the configured header).
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    OAuth2 {
        client_id: String,
        client_secret: String,
        token: Mutex<Option<(String, Instant)>>,
    },
}

fn split_pair(secret: &str, field: &str, what: &str) -> Result<(String, String), ConfigError> {
    secret
        .split_once(':')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| ConfigError::new(field, format!("secret value must be {what}")))
}

fn sensitive_header(value: &str, field: &str) -> Result<HeaderValue, ConfigError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        ConfigError::new(
            field,
            "secret value is not a valid HTTP header value (it holds a line break or another control character): store it without one",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Credential {
    fn build(settings: &AuthSettings, secret: Option<&str>) -> Result<Self, ConfigError> {
        let field = format!("{}.secret", settings.field);
        let need = || {
            secret.ok_or_else(|| ConfigError::new(field.clone(), "is required for this auth type"))
        };
        let auth = match settings.kind {
            HttpAuthType::None => Auth::None,
            HttpAuthType::Basic => {
                let (user, password) = split_pair(need()?, &field, "user:password")?;
                Auth::Basic { user, password }
            }
            HttpAuthType::Bearer => Auth::Header {
                name: AUTHORIZATION,
                value: sensitive_header(&format!("Bearer {}", need()?), &field)?,
            },
            HttpAuthType::ApiKey => Auth::Header {
                name: settings.header.clone().ok_or_else(|| {
                    ConfigError::new(
                        format!("{}.header", settings.field),
                        "is required for ApiKey",
                    )
                })?,
                value: sensitive_header(need()?, &field)?,
            },
            HttpAuthType::OAuth2ClientCredentials => {
                let (client_id, client_secret) =
                    split_pair(need()?, &field, "clientId:clientSecret")?;
                Auth::OAuth2 {
                    client_id,
                    client_secret,
                    token: Mutex::new(None),
                }
            }
        };
        Ok(Self {
            secret: secret.map(str::to_string),
            auth,
        })
    }

    /// The strings a response body must not show in a failure detail.
    fn secrets<'a>(&'a self, token: Option<&'a str>) -> Vec<&'a str> {
        let mut out: Vec<&str> = self.secret.iter().map(String::as_str).collect();
        match &self.auth {
            Auth::Basic { password, .. } => out.push(password),
            Auth::OAuth2 { client_secret, .. } => out.push(client_secret),
            Auth::None | Auth::Header { .. } => {}
        }
        out.extend(token);
        out.retain(|s| !s.is_empty());
        out
    }

    /// Drops the cached OAuth2 token if it is still `used`, so the next request fetches one.
    async fn forget_token(&self, used: &str) {
        if let Auth::OAuth2 { token, .. } = &self.auth {
            let mut cached = token.lock().await;
            if cached.as_ref().is_some_and(|(value, _)| value == used) {
                *cached = None;
            }
        }
    }
}

/// One HTTP destination connection.
pub struct HttpSink {
    name: String,
    client: reqwest::Client,
    base_url: String,
    /// Scheme, host and port of `base_url`: every request's URL must keep them.
    origin: String,
    settings: AuthSettings,
    /// The current credential; replaced when a re-read finds a rotated secret. Read and
    /// replaced without awaiting, so the lock is never held across a request.
    credential: RwLock<Arc<Credential>>,
    /// Reads the connection's secret again after a 401 or 403.
    reread: Option<SecretReread>,
    /// When the last re-read started; re-reads run one at a time, so a burst of refusals
    /// costs one read.
    last_reread: Mutex<Option<Instant>>,
    /// Requests in flight to the connection's host.
    in_flight: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// What the destination answered to one request.
struct Answer {
    status: u16,
    location: Option<String>,
    retry_after: Option<Duration>,
    /// The start of the body of a non-2xx answer, with the credentials taken out.
    excerpt: Option<String>,
    /// The OAuth2 token the request carried.
    token: Option<String>,
}

/// What a 401 or 403 led to.
struct Renewal {
    /// The credential to send the request once more with.
    retry: Option<Arc<Credential>>,
    /// What was done, for the failure detail if the destination refuses again.
    note: String,
}

impl HttpSink {
    /// Builds the sink of connection `name`; `secret` is the resolved credential, `reread` reads
    /// it again after a refusal, `tls` holds the connection's TLS settings, checked, and `hosts`
    /// the caps on requests in flight.
    pub fn new(
        name: &str,
        config: &HttpConnectionConfig,
        secret: Option<&str>,
        tls: &HttpTls,
        reread: Option<SecretReread>,
        hosts: &HostLimits,
    ) -> Result<Self, ConfigError> {
        let field = format!("connections.{name}.http");
        let header = match config.header.as_deref() {
            Some(h) if config.auth == HttpAuthType::ApiKey => {
                Some(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    ConfigError::new(
                        format!("{field}.header"),
                        format!("{h:?} is not a valid HTTP header name: use letters, digits and '-', for example X-Api-Key"),
                    )
                })?)
            }
            _ => None,
        };
        let token_url = match config.auth {
            HttpAuthType::OAuth2ClientCredentials => {
                Some(tls.url(config.token_url.as_deref().ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.tokenUrl"),
                        "is required for OAuth2ClientCredentials",
                    )
                })?))
            }
            _ => None,
        };
        let settings = AuthSettings {
            kind: config.auth,
            field: field.clone(),
            header,
            token_url,
        };
        let credential = Credential::build(&settings, secret)?;
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
        let base_url = tls.url(&config.base_url).trim_end_matches('/').to_string();
        let base = Url::parse(&base_url).map_err(|e| {
            ConfigError::new(format!("{field}.baseUrl"), format!("is not a URL: {e}"))
        })?;
        Ok(Self {
            name: name.to_string(),
            client,
            origin: base.origin().ascii_serialization(),
            // Keyed by the host connected to (the base URL as configured, before any TLS
            // server name replaces it in requests).
            in_flight: hosts.of(&Url::parse(&config.base_url).unwrap_or(base)),
            base_url,
            settings,
            credential: RwLock::new(Arc::new(credential)),
            reread,
            last_reread: Mutex::new(None),
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
        let url = self.request_url(&path, path_template)?;
        let headers = self.request_headers(envelope, idempotency_key)?;
        let method = match method {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
        };
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        // Waited for holding no lock; kept until the answer (and any second attempt) is read.
        let _permit = self.in_flight.acquire().await.map_err(|_| {
            DeliveryError::transient(format!("{}: the sink is shutting down", self.name))
        })?;
        let credential = self.current_credential();
        let sent = Instant::now();
        let answer = self
            .attempt(&credential, &method, &url, &headers, body)
            .await?;
        if !matches!(answer.status, 401 | 403) {
            return self.settle(&url, answer, "");
        }
        let renewal = self.renewal(&credential, &answer, sent).await;
        let Some(renewed) = renewal.retry else {
            return self.settle(&url, answer, &renewal.note);
        };
        let answer = self
            .attempt(&renewed, &method, &url, &headers, body)
            .await?;
        self.settle(&url, answer, &renewal.note)
    }

    fn current_credential(&self) -> Arc<Credential> {
        self.credential
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The URL of one request: the base URL and the filled path, on the connection's host.
    fn request_url(&self, path: &str, template: &str) -> Result<Url, DeliveryError> {
        let text = format!("{}{}", self.base_url, path);
        let url = Url::parse(&text).map_err(|e| DeliveryError::Permanent {
            reason: DeadLetterReason::InvalidRequest,
            detail: format!(
                "{}: the route's path {template:?} gives {text:?} for this event, which is not a URL ({e}): start the path with '/'",
                self.name
            ),
        })?;
        if url.origin().ascii_serialization() != self.origin {
            return Err(DeliveryError::Permanent {
                reason: DeadLetterReason::InvalidRequest,
                detail: format!(
                    "{}: the route's path {template:?} gives {url}, which is not on the connection's host {}: start the path with '/'",
                    self.name, self.origin
                ),
            });
        }
        Ok(url)
    }

    /// The headers every attempt carries. A value HTTP cannot carry fails the same way on
    /// every attempt, so it is permanent.
    fn request_headers(
        &self,
        envelope: &Envelope,
        idempotency_key: &str,
    ) -> Result<HeaderMap, DeliveryError> {
        let invalid = |name: &str, fix: &str| DeliveryError::Permanent {
            reason: DeadLetterReason::InvalidRequest,
            detail: format!(
                "{}: header {name} of this event is not a valid HTTP header value (it holds a line break or another control character): {fix}",
                self.name
            ),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(idempotency_key).map_err(|_| {
                invalid(
                    "Idempotency-Key",
                    "make the flow's idempotency key give printable text",
                )
            })?,
        );
        for (name, value) in envelope.http_headers() {
            let fix = format!("fix the {name} the producer sends");
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(name, &fix))?;
            let value = HeaderValue::from_str(&value).map_err(|_| invalid(name, &fix))?;
            headers.insert(header, value);
        }
        Ok(headers)
    }

    /// Sends the request once with `credential` and reads the answer.
    async fn attempt(
        &self,
        credential: &Credential,
        method: &reqwest::Method,
        url: &Url,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Answer, DeliveryError> {
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .body(body.to_vec());
        let mut token = None;
        request = match &credential.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Header { name, value } => request.header(name.clone(), value.clone()),
            Auth::OAuth2 { .. } => {
                let value = self.oauth2_token(credential).await?;
                let request = request.bearer_auth(&value);
                token = Some(value);
                request
            }
        };
        let response = request.send().await.map_err(|e| self.send_error(e))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| l.chars().take(200).collect::<String>());
        let retry_after = match status {
            429 | 503 => response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now())),
            _ => None,
        };
        let success = (200..300).contains(&status);
        // Read what the destination sent (up to a bound), so the connection can carry the
        // next request instead of being dropped.
        let start = drain(response, if success { 0 } else { EXCERPT_SCAN }).await;
        let excerpt = (!success && !start.is_empty())
            .then(|| excerpt(&start, &credential.secrets(token.as_deref())));
        Ok(Answer {
            status,
            location,
            retry_after,
            excerpt,
            token,
        })
    }

    fn send_error(&self, e: reqwest::Error) -> DeliveryError {
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
    }

    /// After a 401 or 403 to a request sent at `sent` with `used`: re-reads the secret and
    /// says whether (and with what) to send the request once more.
    async fn renewal(&self, used: &Arc<Credential>, answer: &Answer, sent: Instant) -> Renewal {
        let oauth2 = answer.status == 401 && matches!(used.auth, Auth::OAuth2 { .. });
        if oauth2 && let Some(token) = &answer.token {
            // The token may have been revoked before it expired: the retry fetches a new one.
            used.forget_token(token).await;
        }
        let fresh_token = if oauth2 {
            "; a freshly fetched OAuth2 token was refused too"
        } else {
            ""
        };
        let same = |note: String| Renewal {
            retry: oauth2.then(|| used.clone()),
            note: format!("{fresh_token}{note}"),
        };
        let Some(reread) = &self.reread else {
            return same(String::new());
        };
        let source = reread.source();
        let secret = format!(
            "the secret {} (Secret {:?} key {:?})",
            source.env, source.secret_name, source.secret_key
        );
        let renewed = |credential: Arc<Credential>| Renewal {
            retry: Some(credential),
            note: format!("; {secret} had changed, and its new value was refused too"),
        };
        // One re-read at a time; a refusal that another re-read already answered waits for it.
        let mut last = self.last_reread.lock().await;
        let current = self.current_credential();
        if !Arc::ptr_eq(&current, used) {
            return renewed(current);
        }
        let unchanged = format!(
            "; {secret} was read again and is unchanged: put a credential the destination accepts in that Secret, or grant it access at the destination"
        );
        if last.is_some_and(|at| at >= sent) {
            return same(unchanged);
        }
        *last = Some(Instant::now());
        match reread.value().await {
            Ok(value) if Some(value.as_str()) != used.secret.as_deref() => {
                match Credential::build(&self.settings, Some(&value)) {
                    Ok(credential) => {
                        let credential = Arc::new(credential);
                        *self
                            .credential
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = credential.clone();
                        tracing::info!(
                            connection = %self.name,
                            secret = %source.env,
                            status = answer.status,
                            "the destination refused the credential and its secret has changed; retrying with the new value"
                        );
                        renewed(credential)
                    }
                    Err(e) => same(format!(
                        "; {secret} has changed, but its new value cannot be used: {e}"
                    )),
                }
            }
            Ok(_) => same(unchanged),
            Err(e) => {
                tracing::warn!(connection = %self.name, error = %e, "re-reading a refused credential failed");
                same(format!("; reading {secret} again failed: {e}"))
            }
        }
    }

    /// The outcome of the last answer; `note` says what a 401 or 403 led to.
    fn settle(&self, url: &Url, answer: Answer, note: &str) -> Result<(), DeliveryError> {
        let status = answer.status;
        if (300..400).contains(&status) {
            let location = answer.location.unwrap_or_else(|| "nowhere".into());
            return Err(DeliveryError::Permanent {
                reason: DeadLetterReason::HttpRedirect,
                detail: format!(
                    "{} {url}: answered {status}, a redirect to {location}; deliveries never follow redirects: point the connection's baseUrl or the route's path at the final URL",
                    self.name
                ),
            });
        }
        let body = answer
            .excerpt
            .map(|e| format!("{ANSWER_EXCERPT}{e:?}"))
            .unwrap_or_default();
        let note = if matches!(status, 401 | 403) {
            note
        } else {
            ""
        };
        classify(status).map_err(|e| match e {
            DeliveryError::Permanent { reason, detail } => DeliveryError::Permanent {
                reason,
                detail: format!("{} {url}: {detail}{body}{note}", self.name),
            },
            DeliveryError::Transient { detail, .. } => {
                let wait = answer
                    .retry_after
                    .map(|d| format!(" (Retry-After: {}s)", d.as_secs()))
                    .unwrap_or_default();
                DeliveryError::Transient {
                    detail: format!("{} {url}: {detail}{wait}{body}", self.name),
                    retry_after: answer.retry_after,
                }
            }
        })
    }

    async fn oauth2_token(&self, credential: &Credential) -> Result<String, DeliveryError> {
        let (
            Auth::OAuth2 {
                client_id,
                client_secret,
                token,
            },
            Some(token_url),
        ) = (&credential.auth, &self.settings.token_url)
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
            drain(response, 0).await;
            return Err(DeliveryError::transient(format!(
                "{}: OAuth2 token endpoint answered {status}",
                self.name
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| DeliveryError::transient(format!("OAuth2 token response: {e}")))?;
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| HeaderValue::from_str(&format!("Bearer {t}")).is_ok())
            .ok_or_else(|| {
                DeliveryError::transient(format!(
                    "{}: the OAuth2 token response has no access_token usable in a header",
                    self.name
                ))
            })?
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

/// Reads a response body up to [`DRAIN_LIMIT`] and discards it, returning its first `keep`
/// bytes.
async fn drain(mut response: reqwest::Response, keep: usize) -> Vec<u8> {
    let mut start = Vec::new();
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        if start.len() < keep {
            let room = keep - start.len();
            start.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
    start
}

/// A short, single-line excerpt of a refusal's body, with every string of `secrets` replaced
/// (a destination may echo the request's credentials back).
fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    for secret in secrets {
        text = text.replace(secret, "[redacted]");
    }
    let text = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(char::is_control, "");
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// The wait a `Retry-After` value asks for, at most [`RETRY_AFTER_CAP`]: delta-seconds, or an
/// HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms, which RFC 9110 asks
/// recipients to accept) measured from `now`. A date in the past asks for no wait; a value that
/// is neither is ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are still a (very long) delay.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP));
    }
    let date = DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT").map(|d| d.and_utc())
        })
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y").map(|d| d.and_utc())
        })
        .ok()?;
    Some(
        (date - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(RETRY_AFTER_CAP),
    )
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
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::ConnectInfo;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode};
    use axum::response::{IntoResponse, Response};
    use millrace_crds::worker_config::SecretSource;
    use serde_json::json;

    use super::*;
    use crate::config::SecretResolver;

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

    #[test]
    fn retry_after_is_read_in_both_forms_and_capped() {
        let now = DateTime::parse_from_rfc2822("Sun, 06 Nov 1994 08:48:07 GMT")
            .unwrap()
            .with_timezone(&Utc);
        let secs = |s: u64| Some(Duration::from_secs(s));
        let cases = [
            ("120", secs(120)),
            ("0", secs(0)),
            (" 30 ", secs(30)),
            ("600", secs(600)),
            ("601", Some(RETRY_AFTER_CAP)),
            ("99999999999999999999999", Some(RETRY_AFTER_CAP)),
            // IMF-fixdate, RFC 850 and asctime: all 90 s after `now`.
            ("Sun, 06 Nov 1994 08:49:37 GMT", secs(90)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", secs(90)),
            ("Sun Nov  6 08:49:37 1994", secs(90)),
            // A date further away than the cap, and one in the past.
            ("Mon, 07 Nov 1994 08:48:07 GMT", Some(RETRY_AFTER_CAP)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", secs(0)),
            ("soon", None),
            ("-5", None),
            ("1.5", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                want,
                "Retry-After: {value:?}"
            );
        }
    }

    #[test]
    fn excerpts_are_short_single_lines_without_credentials() {
        let e = excerpt(
            b"{\"error\":\"qty too large\",\n\"echo\":\"Bearer tok-123\"}\r\n",
            &["tok-123"],
        );
        assert_eq!(
            e,
            r#"{"error":"qty too large", "echo":"Bearer [redacted]"}"#
        );
        let long = excerpt("é".repeat(5_000).as_bytes(), &[]);
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1, "{long}");
    }

    /// Serves `app` on a free loopback port; the base URL.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        format!("http://{addr}")
    }

    fn connection(base: &str, auth: HttpAuthType) -> HttpConnectionConfig {
        HttpConnectionConfig {
            base_url: base.to_string(),
            auth,
            secret: Some(source()),
            token_url: None,
            header: None,
            timeout_ms: 5_000,
            rate_limit_per_second: None,
            rate_limit_burst: None,
            ca: None,
            server_name: None,
        }
    }

    fn source() -> SecretSource {
        SecretSource {
            env: "ERP_TOKEN".into(),
            secret_name: "erp".into(),
            secret_key: "token".into(),
        }
    }

    /// A re-read handle through the resolver's own lookup, which now yields `value`.
    fn reread_yielding(value: &str) -> Option<SecretReread> {
        let resolver = SecretResolver {
            values: [("ERP_TOKEN".to_string(), value.to_string())].into(),
            kube: None,
        };
        Some(SecretReread::new(resolver, source()))
    }

    fn sink(
        config: &HttpConnectionConfig,
        secret: Option<&str>,
        reread: Option<SecretReread>,
        hosts: &HostLimits,
    ) -> HttpSink {
        let tls = HttpTls::new(&config.base_url, &Default::default()).unwrap();
        HttpSink::new("erp", config, secret, &tls, reread, hosts).unwrap()
    }

    async fn post(sink: &HttpSink, path: &str) -> Result<(), DeliveryError> {
        post_with(sink, path, &Envelope::default(), "key-1").await
    }

    async fn post_with(
        sink: &HttpSink,
        path: &str,
        envelope: &Envelope,
        key: &str,
    ) -> Result<(), DeliveryError> {
        sink.deliver(
            HttpMethod::Post,
            path,
            &json!({"id": "A-1"}),
            b"{}",
            envelope,
            key,
        )
        .await
    }

    /// A destination that answers every request with `status`, `headers` and `body`, and
    /// counts the requests.
    async fn answering(
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    ) -> (String, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            let headers = headers.clone();
            async move {
                let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        (serve(app).await, count)
    }

    #[tokio::test]
    async fn retry_after_on_429_and_503_travels_with_the_transient_failure() {
        let in_two_minutes = (Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        // (status, Retry-After, expected wait bounds in seconds)
        type Case = (u16, Option<String>, Option<(u64, u64)>);
        let cases: Vec<Case> = vec![
            (429, Some("7".into()), Some((7, 7))),
            (503, Some(in_two_minutes), Some((115, 120))),
            (503, Some("86400".into()), Some((600, 600))),
            (429, None, None),
            (503, Some("whenever".into()), None),
            // Only 429 and 503 carry a wish the worker honours.
            (500, Some("7".into()), None),
        ];
        for (status, header, want) in cases {
            let headers = header
                .clone()
                .map(|h| vec![("retry-after", h)])
                .unwrap_or_default();
            let (base, _) = answering(status, headers, "busy").await;
            let sink = sink(
                &connection(&base, HttpAuthType::None),
                None,
                None,
                &HostLimits::default(),
            );
            let e = post(&sink, "/orders").await.unwrap_err();
            let DeliveryError::Transient {
                retry_after,
                detail,
            } = &e
            else {
                panic!("{status} must be transient, got {e:?}");
            };
            match want {
                Some((low, high)) => {
                    let got = retry_after.unwrap_or_else(|| {
                        panic!("{status} Retry-After {header:?}: no wait in {e:?}")
                    });
                    assert!(
                        (low..=high).contains(&got.as_secs()),
                        "{status} Retry-After {header:?}: {got:?}"
                    );
                    assert!(detail.contains("Retry-After"), "{detail}");
                }
                None => assert_eq!(*retry_after, None, "{status} {header:?}"),
            }
            assert_eq!(e.retry_after(), *retry_after);
        }
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_permanent_and_never_sent() {
        let (base, count) = answering(200, vec![], "").await;
        let sink = sink(
            &connection(&base, HttpAuthType::None),
            None,
            None,
            &HostLimits::default(),
        );
        let bad_subject = Envelope {
            subject: Some("line\nbreak".into()),
            ..Envelope::default()
        };
        let cases = [
            (
                post_with(&sink, "/orders", &bad_subject, "key-1").await,
                "ce-subject",
            ),
            (
                post_with(&sink, "/orders", &Envelope::default(), "key\r\n1").await,
                "Idempotency-Key",
            ),
            // The base URL has a port: "99" makes it an invalid one.
            (post(&sink, "99").await, "not a URL"),
            // A path without a leading '/' that would move the request to another host (the
            // base URL's host and port would become user info).
            (
                post(&sink, "@attacker.example/collect").await,
                "not on the connection's host",
            ),
        ];
        for (result, says) in cases {
            match result {
                Err(DeliveryError::Permanent { reason, detail }) => {
                    assert_eq!(reason, DeadLetterReason::InvalidRequest, "{detail}");
                    assert!(detail.contains(says), "{detail}");
                }
                other => panic!("expected a permanent invalid_request ({says}), got {other:?}"),
            }
        }
        assert_eq!(count.load(Ordering::SeqCst), 0, "nothing may be sent");
        // The same sink still delivers a good event.
        post(&sink, "/orders").await.unwrap();
    }

    #[tokio::test]
    async fn connection_errors_and_timeouts_stay_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let refused = sink(
            &connection(&closed, HttpAuthType::None),
            None,
            None,
            &HostLimits::default(),
        );
        let e = post(&refused, "/orders").await.unwrap_err();
        assert!(matches!(e, DeliveryError::Transient { .. }), "{e:?}");

        let slow = serve(axum::Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }))
        .await;
        let mut config = connection(&slow, HttpAuthType::None);
        config.timeout_ms = 100;
        let e = post(&sink(&config, None, None, &HostLimits::default()), "/x")
            .await
            .unwrap_err();
        assert!(
            matches!(e, DeliveryError::Transient { .. }) && e.detail().contains("timed out"),
            "{e:?}"
        );
    }

    /// A destination that holds each request for a while and records the most it held at once.
    async fn holding() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (n, m) = (now.clone(), max.clone());
        let app = axum::Router::new().fallback(move || {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let held = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(held, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        });
        (serve(app).await, max, now)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_in_flight_to_one_host_are_capped() {
        let (base, max, _) = holding().await;
        let hosts = HostLimits::new(4);
        // Two connections to the same host share its cap.
        let a = Arc::new(sink(
            &connection(&base, HttpAuthType::None),
            None,
            None,
            &hosts,
        ));
        let b = Arc::new(sink(
            &connection(&format!("{base}/v2"), HttpAuthType::None),
            None,
            None,
            &hosts,
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let sink = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move { post(&sink, "/orders").await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(
            max.load(Ordering::SeqCst),
            4,
            "the destination saw more (or never) 4 requests at once"
        );

        // Another host has a cap of its own.
        let (other, other_max, _) = holding().await;
        let c = Arc::new(sink(
            &connection(&other, HttpAuthType::None),
            None,
            None,
            &hosts,
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (a, c) = (a.clone(), c.clone());
            tasks.spawn(async move { post(&a, "/x").await });
            tasks.spawn(async move { post(&c, "/x").await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(other_max.load(Ordering::SeqCst), 4);
    }

    /// A destination that accepts only `accepted` in `header` (401 or `refusal` otherwise),
    /// and records what it was sent.
    async fn guarded(
        header: &'static str,
        accepted: &'static str,
        refusal: StatusCode,
    ) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |headers: AxumHeaders| {
            let got = headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            record.lock().unwrap().push(got.clone());
            async move {
                if got == accepted {
                    (StatusCode::OK, String::new())
                } else {
                    (refusal, format!("credential {got} refused"))
                }
            }
        });
        (serve(app).await, seen)
    }

    #[tokio::test]
    async fn a_401_rereads_a_rotated_secret_and_retries_once_with_it() {
        let (base, seen) = guarded(
            "authorization",
            "Bearer new-token",
            StatusCode::UNAUTHORIZED,
        )
        .await;
        let sink = sink(
            &connection(&base, HttpAuthType::Bearer),
            Some("old-token"),
            reread_yielding("new-token"),
            &HostLimits::default(),
        );
        post(&sink, "/orders").await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            ["Bearer old-token", "Bearer new-token"]
        );
        // The new value stays: the next event goes with it at once.
        post(&sink, "/orders").await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_403_rereads_an_api_key_too() {
        let (base, seen) = guarded("x-api-key", "key-2", StatusCode::FORBIDDEN).await;
        let mut config = connection(&base, HttpAuthType::ApiKey);
        config.header = Some("X-Api-Key".into());
        let sink = sink(
            &config,
            Some("key-1"),
            reread_yielding("key-2"),
            &HostLimits::default(),
        );
        post(&sink, "/orders").await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["key-1", "key-2"]);
    }

    #[tokio::test]
    async fn a_refusal_with_an_unchanged_secret_is_permanent_and_names_the_secret() {
        let (base, seen) = guarded("authorization", "Bearer other", StatusCode::UNAUTHORIZED).await;
        let sink = sink(
            &connection(&base, HttpAuthType::Bearer),
            Some("old-token"),
            reread_yielding("old-token"),
            &HostLimits::default(),
        );
        match post(&sink, "/orders").await {
            Err(DeliveryError::Permanent { reason, detail }) => {
                assert_eq!(reason, DeadLetterReason::Http4xx);
                assert!(detail.contains("answered 401"), "{detail}");
                assert!(
                    detail.contains("ERP_TOKEN")
                        && detail.contains("\"erp\"")
                        && detail.contains("unchanged"),
                    "{detail}"
                );
                // The body echoed the token: the detail must not.
                assert!(detail.contains("[redacted]"), "{detail}");
                assert!(!detail.contains("old-token"), "{detail}");
            }
            other => panic!("expected a permanent 401, got {other:?}"),
        }
        assert_eq!(seen.lock().unwrap().len(), 1, "no second attempt");
    }

    #[tokio::test]
    async fn an_oauth2_401_drops_the_token_and_retries_with_a_fresh_one() {
        // Tokens t1, t2, …; the API accepts only the newest, so t1 is revoked once t2 exists.
        let issued = Arc::new(AtomicUsize::new(0));
        let revoke_after_first = Arc::new(AtomicUsize::new(0));
        let (i, r) = (issued.clone(), revoke_after_first.clone());
        let (i2, r2) = (issued.clone(), revoke_after_first.clone());
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::post(move || {
                    let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        axum::Json(json!({"access_token": format!("t{n}"), "expires_in": 3600}))
                    }
                }),
            )
            .fallback(move |headers: AxumHeaders| {
                let got = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                // After the first delivery the destination revokes t1 (as if it rotated keys).
                let newest = i2.load(Ordering::SeqCst).max(1 + r2.load(Ordering::SeqCst));
                async move {
                    if got == format!("Bearer t{newest}") {
                        StatusCode::OK
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                }
            });
        let base = serve(app).await;
        let mut config = connection(&base, HttpAuthType::OAuth2ClientCredentials);
        config.token_url = Some(format!("{base}/token"));
        let sink = sink(
            &config,
            Some("client:secret"),
            reread_yielding("client:secret"),
            &HostLimits::default(),
        );
        post(&sink, "/orders").await.unwrap();
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        r.store(1, Ordering::SeqCst);
        post(&sink, "/orders").await.unwrap();
        assert_eq!(
            issued.load(Ordering::SeqCst),
            2,
            "a fresh token was fetched"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_are_read_so_one_connection_carries_every_request() {
        static LARGE: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| "x".repeat(32 * 1024));
        let peers = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let record = peers.clone();
        let app = axum::Router::new().fallback(
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>, uri: axum::http::Uri| {
                record.lock().unwrap().insert(peer);
                async move {
                    let status = if uri.path() == "/refused" {
                        StatusCode::UNPROCESSABLE_ENTITY
                    } else {
                        StatusCode::OK
                    };
                    Response::builder()
                        .status(status)
                        .body(axum::body::Body::from(format!("rejected: {}", *LARGE)))
                        .unwrap()
                }
            },
        );
        let base = serve(app).await;
        let sink = sink(
            &connection(&base, HttpAuthType::None),
            None,
            None,
            &HostLimits::default(),
        );
        for i in 0..6 {
            // The client hands a drained connection back to its pool a moment after the
            // body ends; give it that moment so the next request can find it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let path = if i % 2 == 0 { "/ok" } else { "/refused" };
            let result = post(&sink, path).await;
            if i % 2 == 1 {
                let e = result.unwrap_err();
                assert!(
                    e.detail().contains("answered 422, saying \"rejected: xxx"),
                    "{e:?}"
                );
                assert!(
                    e.detail().len() < 500,
                    "the excerpt is bounded: {}",
                    e.detail().len()
                );
            } else {
                result.unwrap();
            }
        }
        // An undrained answer costs its connection, so six requests would open six. Under
        // load the pool may still lose one race, hence "at most two", never six.
        let peers = peers.lock().unwrap().clone();
        assert!(
            peers.len() <= 2,
            "requests opened a connection each: {peers:?}"
        );
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
        serve(app).await
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_nothing_goes_to_the_other_host() {
        // The other host counts what reaches it.
        let (other_base, reached) = answering(200, vec![], "ok").await;
        let other_url = format!("{other_base}/collect");
        let base = redirecting_to(other_url.clone()).await;
        let config = connection(&base, HttpAuthType::Bearer);
        let sink = sink(&config, Some("s3cret-token"), None, &HostLimits::default());
        let e = post(&sink, "/orders").await.unwrap_err();
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
        assert_eq!(reached.load(Ordering::SeqCst), 0);
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
