//! A fresh RabbitMQ virtual host per test.

use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};

use crate::cleanup::run_detached;
use crate::env::{self, KEEP_ENV_VAR};

/// The local RabbitMQ's AMQP 0-9-1 address, without a vhost.
const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";
/// The local RabbitMQ's management HTTP API.
const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";
/// The local RabbitMQ's user, which may log in from loopback only.
const USER: &str = "guest";
const PASSWORD: &str = "guest";

/// A RabbitMQ virtual host created for one test, on which `guest` has every permission, with an open
/// AMQP connection to it.
///
/// The vhost (and with it every queue, exchange and connection in it) is deleted when this value is
/// dropped. When the test fails and `MILLRACE_KEEP_NAMESPACE=1` is set, it is kept and its name printed.
pub struct TestVhost {
    name: String,
    connection: Connection,
}

impl TestVhost {
    /// Creates a vhost named after `prefix` plus a random suffix, and connects to it.
    ///
    /// Panics, saying to run `make env-up`, when RabbitMQ is not up.
    pub async fn create(prefix: &str) -> Self {
        env::init_tls();
        let name = env::unique_name(prefix);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let vhost_url = format!("{MANAGEMENT_URL}/api/vhosts/{name}");
        let created = send_patiently(
            http.put(&vhost_url)
                .basic_auth(USER, Some(PASSWORD))
                .json(&serde_json::json!({ "description": "millrace integration test" })),
        )
        .await
        .unwrap_or_else(|e| {
            env::not_up(format_args!(
                "RabbitMQ's management API does not answer: {e}"
            ))
        });
        check(created, &format!("creating vhost {name}")).await;
        let permissions = send_patiently(
            http.put(format!("{MANAGEMENT_URL}/api/permissions/{name}/{USER}"))
                .basic_auth(USER, Some(PASSWORD))
                .json(&serde_json::json!({ "configure": ".*", "write": ".*", "read": ".*" })),
        )
        .await
        .unwrap_or_else(|e| panic!("granting {USER} access to vhost {name}: {e}"));
        check(
            permissions,
            &format!("granting {USER} access to vhost {name}"),
        )
        .await;

        let uri = format!("{AMQP_BASE}/{name}");
        // A broker whose AMQP listener is stuck accepts TCP but never answers; do not wait forever.
        let connect = Connection::connect(&uri, ConnectionProperties::default());
        let connection = match tokio::time::timeout(PATIENCE, connect).await {
            Ok(Ok(connection)) => connection,
            outcome => {
                // Do not leak the vhost just made.
                let _ = http
                    .delete(&vhost_url)
                    .basic_auth(USER, Some(PASSWORD))
                    .send()
                    .await;
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no AMQP handshake within {}s", PATIENCE.as_secs()),
                };
                env::not_up(format_args!(
                    "cannot open an AMQP connection to {uri}: {why}"
                ))
            }
        };
        Self { name, connection }
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open AMQP connection to this vhost.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// An AMQP URI (credentials included) that connects to this vhost, for code under test that opens
    /// its own connections. The vhost name needs no escaping.
    pub fn amqp_uri(&self) -> String {
        format!("{AMQP_BASE}/{}", self.name)
    }

    /// The base URL of RabbitMQ's management HTTP API, such as `http://127.0.0.1:15672`; this vhost's
    /// objects are under `/api/queues/<vhost>` and so on.
    pub fn management_url(&self) -> &'static str {
        MANAGEMENT_URL
    }

    /// The user name and password for both the AMQP URI and the management API.
    pub fn credentials(&self) -> (&'static str, &'static str) {
        (USER, PASSWORD)
    }
}

/// How long the management API may stay unreachable before the environment counts as down. Other tests
/// may restart the broker's application (`rabbitmqctl stop_app`), and a busy broker answers slowly.
const PATIENCE: Duration = Duration::from_secs(60);

/// Sends a request, retrying transport errors (refused connections, timeouts) for up to [`PATIENCE`].
async fn send_patiently(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempt = request.try_clone().expect("a request with a buffered body");
        match attempt.send().await {
            Err(e) if Instant::now() < deadline && (e.is_connect() || e.is_timeout()) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn check(response: reqwest::Response, what: &str) {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        panic!("{what}: RabbitMQ's management API answered {status}: {body}");
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if env::keep_on_failure() {
            eprintln!(
                "millrace-testkit: kept RabbitMQ vhost {} ({KEEP_ENV_VAR}=1)",
                self.name
            );
            return;
        }
        let name = self.name.clone();
        run_detached(format!("RabbitMQ vhost {name}"), move || async move {
            let response = reqwest::Client::new()
                .delete(format!("{MANAGEMENT_URL}/api/vhosts/{name}"))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
                Ok(())
            } else {
                Err(format!("the management API answered {status}"))
            }
        });
    }
}
