//! TLS as a PartnerConnection declares it (`spec.amqp.tls`, `spec.http.tls`: a CA bundle and a
//! server name), against the TLS listener that `make env-up` gives RabbitMQ (a private CA; a
//! certificate for `rabbitmq.millrace.test` and `localhost`, not for `127.0.0.1`) and an HTTPS
//! destination of the test's own with the same certificate. The operator's probes and topology
//! connection, and a worker, must trust the declared CA and verify the declared name.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Client};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use millrace_crds::{IntegrationFlow, PartnerConnection};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

mod support;
use support::{apply, start_operator, start_worker};

use millrace_testkit::{RabbitTls, TestNamespace, TestVhost};

const SERVER_NAME: &str = RabbitTls::SERVER_NAME;
const WAIT: Duration = Duration::from_secs(60);

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
}

fn amqp_connection(name: &str, uri_secret: &str, tls: Option<Value>) -> Value {
    let mut amqp = json!({"uriSecretRef": {"name": uri_secret, "key": "uri"}});
    if let Some(tls) = tls {
        amqp["tls"] = tls;
    }
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": name},
        "spec": {"system": "MES", "amqp": amqp, "probe": {"interval": "5s"}}
    })
}

fn http_connection(name: &str, base_url: &str, tls: Option<Value>) -> Value {
    let mut http = json!({"baseUrl": base_url, "timeout": "5s"});
    if let Some(tls) = tls {
        http["tls"] = tls;
    }
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "PartnerConnection", "metadata": {"name": name},
        "spec": {"system": "ERP", "http": http,
                 "probe": {"interval": "5s", "http": {"method": "GET", "path": "/health"}}}
    })
}

/// `tls` with the environment's CA (from Secret `partner-ca`) and, when given, a server name.
fn with_ca(server_name: Option<&str>) -> Value {
    let mut tls = json!({"caSecretRef": {"name": "partner-ca", "key": "ca.crt"}});
    if let Some(name) = server_name {
        tls["serverName"] = json!(name);
    }
    tls
}

fn condition<'a>(c: &'a PartnerConnection, type_: &str) -> Option<&'a Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
}

/// Waits until connection `name` has a Ready condition for its current generation whose status is
/// `ready`; returns that condition.
async fn ready_verdict(client: &Client, ns: &str, name: &str, ready: &str) -> Condition {
    let api: Api<PartnerConnection> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let c = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(r) = condition(&c, "Ready")
            && r.status == ready
            && r.observed_generation == c.metadata.generation
        {
            return r.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "connection {name} did not become Ready={ready}; last seen: {:#?}",
            c.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_connections_trust_the_declared_ca_and_verify_the_declared_name() {
    let ns = TestNamespace::create("tls-amqp").await;
    let vhost = TestVhost::create("tls-amqp").await;
    let tls = RabbitTls::get();
    let client = ns.client();
    let _op = start_operator(&client, ns.name());
    let n = ns.name();
    let by_ip = tls.amqps_uri("127.0.0.1", &vhost);
    apply(&client, n, secret("by-ip", json!({"uri": by_ip}))).await;
    apply(
        &client,
        n,
        secret(
            "by-host",
            json!({"uri": tls.amqps_uri("localhost", &vhost)}),
        ),
    )
    .await;
    apply(
        &client,
        n,
        secret("plain", json!({"uri": vhost.amqp_uri()})),
    )
    .await;
    apply(
        &client,
        n,
        secret("partner-ca", json!({"ca.crt": tls.ca_pem()})),
    )
    .await;
    apply(
        &client,
        n,
        secret("not-a-ca", json!({"ca.crt": "not a certificate"})),
    )
    .await;

    let cases = [
        // The URI host is in the certificate: the CA is all it takes.
        ("host-with-ca", "by-host", Some(with_ca(None))),
        // 127.0.0.1 is not in the certificate, but the declared server name is.
        (
            "ip-with-server-name",
            "by-ip",
            Some(with_ca(Some(SERVER_NAME))),
        ),
        // Without the CA, the certificate's issuer is unknown.
        ("no-ca", "by-ip", Some(json!({"serverName": SERVER_NAME}))),
        // Verified against the URI host, which the certificate does not name.
        ("ip-without-server-name", "by-ip", Some(with_ca(None))),
        // A name the certificate does not hold.
        (
            "wrong-server-name",
            "by-ip",
            Some(with_ca(Some("wrong.millrace.test"))),
        ),
        // A CA Secret that holds no certificate.
        (
            "bad-ca",
            "by-ip",
            Some(json!({"caSecretRef": {"name": "not-a-ca", "key": "ca.crt"}})),
        ),
        // TLS settings on a plain-text URI.
        ("plain-with-tls", "plain", Some(with_ca(None))),
    ];
    for (name, uri, tls) in &cases {
        apply(&client, n, amqp_connection(name, uri, tls.clone())).await;
    }

    for name in ["host-with-ca", "ip-with-server-name"] {
        ready_verdict(&client, n, name, "True").await;
    }
    let expectations = [
        (
            "no-ca",
            "Unreachable",
            ["UnknownIssuer", "spec.amqp.tls.caSecretRef"],
        ),
        (
            "ip-without-server-name",
            "Unreachable",
            ["not valid for name", "spec.amqp.tls.serverName"],
        ),
        (
            "wrong-server-name",
            "Unreachable",
            ["wrong.millrace.test", "spec.amqp.tls.serverName"],
        ),
        (
            "bad-ca",
            "TLSInvalid",
            [
                "spec.amqp.tls.caSecretRef (Secret \"not-a-ca\" key \"ca.crt\") holds no PEM certificate",
                "PEM-encoded",
            ],
        ),
        (
            "plain-with-tls",
            "TLSInvalid",
            ["spec.amqp.tls is set", "amqps://"],
        ),
    ];
    for (name, reason, fragments) in expectations {
        let ready = ready_verdict(&client, n, name, "False").await;
        assert_eq!(ready.reason, reason, "{name}: {ready:#?}");
        for fragment in fragments {
            assert!(
                ready.message.contains(fragment),
                "{name}: {fragment:?} is not in {:?}",
                ready.message
            );
        }
        if reason == "TLSInvalid" {
            assert!(
                ready
                    .message
                    .contains(&format!("PartnerConnection {n}/{name}")),
                "{name}: the message names the connection: {:?}",
                ready.message
            );
        }
        let (user, password) = vhost.credentials();
        assert!(
            !ready.message.contains(&format!("{user}:{password}")),
            "{name}: a condition must never hold credentials: {:?}",
            ready.message
        );
    }
}

/// What the HTTPS destination received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    host: String,
    path: String,
    body: Vec<u8>,
}

/// A TLS listener for axum: TLS handshakes with the environment's server certificate. Failed
/// handshakes (a client that does not trust the CA) are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS destination on 127.0.0.1 that answers 200 to everything and records what it got.
async fn https_destination() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = RabbitTls::get().server_cert_and_key();
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("the environment's server certificate");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("its key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a TLS server config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    async fn record(
        State(received): State<Arc<Mutex<Vec<Received>>>>,
        method: axum::http::Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        received.lock().unwrap().push(Received {
            method: method.to_string(),
            host,
            path: uri.path().to_string(),
            body: body.to_vec(),
        });
        "ok"
    }
    let app = axum::Router::new()
        .fallback(record)
        .with_state(received.clone());
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn contract() -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "EventContract", "metadata": {"name": "orders"},
        "spec": {"type": "com.acme.test.order.v1", "compatibility": "BackwardTransitive", "versions": [{
            "version": 1,
            "schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "examples": [{"id": "A-1"}]
        }]}
    })
}

fn flow() -> Value {
    json!({
        "apiVersion": "millrace.dev/v1alpha1", "kind": "IntegrationFlow", "metadata": {"name": "orders-to-erp"},
        "spec": {
            "version": "1.0.0",
            "source": {"amqp": {"connection": "mes", "exchange": "mes.events", "routingKeys": ["order.#"]}},
            "contract": {"name": "orders"},
            "routes": [{"name": "erp", "destination": {"connection": "erp", "http": {"method": "POST", "path": "/orders"}}}],
            "delivery": {"retry": {"maxAttempts": 5, "initialDelay": "1s", "maxDelay": "2s"}},
            "deletionPolicy": "Delete"
        }
    })
}

fn flow_condition(f: &IntegrationFlow, type_: &str) -> Option<String> {
    f.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_consumes_and_delivers_over_tls() {
    let ns = TestNamespace::create("tls-worker").await;
    let vhost = TestVhost::create("tls-worker").await;
    let tls = RabbitTls::get();
    let (port, received) = https_destination().await;
    let client = ns.client();
    let _op = start_operator(&client, ns.name());
    let n = ns.name();
    apply(
        &client,
        n,
        secret("broker", json!({"uri": tls.amqps_uri("127.0.0.1", &vhost)})),
    )
    .await;
    apply(
        &client,
        n,
        secret("partner-ca", json!({"ca.crt": tls.ca_pem()})),
    )
    .await;
    // Both endpoints are reached at 127.0.0.1, which their certificate does not name.
    let base = format!("https://127.0.0.1:{port}/api");
    apply(
        &client,
        n,
        amqp_connection("mes", "broker", Some(with_ca(Some(SERVER_NAME)))),
    )
    .await;
    apply(
        &client,
        n,
        http_connection("erp", &base, Some(with_ca(Some(SERVER_NAME)))),
    )
    .await;
    apply(
        &client,
        n,
        http_connection(
            "erp-without-ca",
            &base,
            Some(json!({"serverName": SERVER_NAME})),
        ),
    )
    .await;
    apply(
        &client,
        n,
        http_connection("erp-without-name", &base, Some(with_ca(None))),
    )
    .await;

    // The operator's HTTP probe trusts the CA and verifies the server name.
    for name in ["mes", "erp"] {
        ready_verdict(&client, n, name, "True").await;
    }
    let probes: Vec<Received> = received.lock().unwrap().clone();
    assert!(
        probes.iter().any(|r| r.method == "GET"
            && r.path == "/api/health"
            && r.host.starts_with(SERVER_NAME)),
        "the probe reached the destination by the server name: {probes:?}"
    );
    for (name, fragment) in [
        ("erp-without-ca", "spec.http.tls.caSecretRef"),
        ("erp-without-name", "spec.http.tls.serverName"),
    ] {
        let ready = ready_verdict(&client, n, name, "False").await;
        assert!(
            ready.message.contains(fragment) && ready.message.contains("TLS verification failed"),
            "{name}: {:?}",
            ready.message
        );
    }

    // The operator declares the topology over TLS; a worker consumes over TLS and delivers over
    // HTTPS.
    apply(&client, n, contract()).await;
    apply(&client, n, flow()).await;
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), n);
    let start = Instant::now();
    loop {
        let f = flows.get("orders-to-erp").await.unwrap();
        if flow_condition(&f, "TopologyReady").as_deref() == Some("True") {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the topology was not declared over TLS; last seen: {:#?}",
            f.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _worker = start_worker(n, "orders-to-erp-worker");

    let ch = vhost.connection().create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "mes.events".into(),
            "order.created".into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            br#"{"id":"TLS-1"}"#,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "the flow's queue takes the event: {confirm:?}"
    );
    let start = Instant::now();
    let delivered = loop {
        let post = received
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.method == "POST")
            .cloned();
        if let Some(post) = post {
            break post;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the worker delivered nothing over TLS; flow status: {:#?}",
            flows.get("orders-to-erp").await.unwrap().status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(delivered.path, "/api/orders");
    assert!(delivered.host.starts_with(SERVER_NAME), "{delivered:?}");
    let body: Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(body["id"], "TLS-1", "{body}");
}
