//! TLS settings in a worker config are checked when the config is built (and so by `--check`):
//! a CA bundle that is not PEM, or TLS settings on a plain-text endpoint, refuse the config with
//! the config field, the Secret, and the PartnerConnection field to fix. No service is needed.

mod support;

use millrace_crds::worker_config::{SecretSource, WorkerConfig};
use millrace_worker::SecretResolver;
use millrace_worker::config::CompiledConfig;
use support::BUS_URI;

const CA_ENV: &str = "TEST_PARTNER_CA";
/// A CA certificate, for the cases that must pass the CA check.
const CA_PEM: &str = include_str!("../../broker/tests/fixtures/test-ca.crt");

fn ca() -> SecretSource {
    SecretSource {
        env: CA_ENV.into(),
        secret_name: "partner-ca".into(),
        secret_key: "ca.crt".into(),
    }
}

async fn build(config: WorkerConfig, uri: &str, ca_pem: &str) -> Result<(), String> {
    let resolver = SecretResolver {
        values: [
            (BUS_URI.to_string(), uri.to_string()),
            ("TEST_ERP_TOKEN".to_string(), "erp-token".to_string()),
            (CA_ENV.to_string(), ca_pem.to_string()),
        ]
        .into(),
        kube: None,
    };
    CompiledConfig::build(config, &resolver, 1 << 20)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn with_amqp_ca(server_name: Option<&str>) -> WorkerConfig {
    let mut config = support::config("plant", "orders", "https://erp.example.test/api");
    let bus = config
        .connections
        .get_mut("bus")
        .unwrap()
        .amqp
        .as_mut()
        .unwrap();
    bus.ca = Some(ca());
    bus.server_name = server_name.map(str::to_string);
    config
}

#[tokio::test]
async fn tls_settings_are_checked_when_the_config_is_built() {
    let amqps = "amqps://u:secret@10.0.0.5:5671/plant";
    build(with_amqp_ca(Some("rabbitmq.example.test")), amqps, CA_PEM)
        .await
        .expect("a PEM CA and a DNS server name are accepted");

    let e = build(with_amqp_ca(None), amqps, "not a certificate")
        .await
        .unwrap_err();
    for fragment in [
        "connections.bus.amqp.ca",
        "PartnerConnection \"bus\" spec.amqp.tls.caSecretRef (Secret \"partner-ca\" key \"ca.crt\")",
        "holds no PEM certificate",
    ] {
        assert!(e.contains(fragment), "{fragment:?} is not in {e:?}");
    }

    let e = build(with_amqp_ca(None), "amqp://u:secret@10.0.0.5/plant", CA_PEM)
        .await
        .unwrap_err();
    assert!(
        e.contains("spec.amqp.tls is set") && e.contains("amqps://"),
        "{e}"
    );
    assert!(!e.contains("secret@"), "no credentials in errors: {e}");

    let mut http = support::config("plant", "orders", "http://erp.example.test/api");
    http.connections
        .get_mut("erp")
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .ca = Some(ca());
    let e = build(http, amqps, CA_PEM).await.unwrap_err();
    assert!(
        e.contains("connections.erp.http") && e.contains("https://"),
        "{e}"
    );

    let mut ip_name = support::config("plant", "orders", "https://10.0.0.6/api");
    ip_name
        .connections
        .get_mut("erp")
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .server_name = Some("10.0.0.7".into());
    let e = build(ip_name, amqps, CA_PEM).await.unwrap_err();
    assert!(
        e.contains("connections.erp.http.serverName") && e.contains("DNS name"),
        "{e}"
    );
}
