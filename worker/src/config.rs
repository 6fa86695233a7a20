//! Turning a [`WorkerConfig`] into something runnable: compiled flows and resolved secrets.
//!
//! Secrets are looked up by reference, in this order: values given in [`SecretValues`] (tests,
//! embedding), the environment variable the pod receives through `secretKeyRef`, then (when a
//! Kubernetes client is configured) the Secret itself through the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use millrace_crds::worker_config::{SecretSource, WorkerConfig};

use millrace_broker::tls::{AmqpConnector, HttpTls, TlsError, TlsOptions};

use crate::pipeline::CompiledFlow;

/// Why a config cannot run: the field at fault and how to fix it (the one field-error shape of
/// `millrace-crds`, shared with the operator and the CLI).
pub type ConfigError = millrace_crds::FieldError;

/// Secret values given directly, by the env var name of their [`SecretSource`].
pub type SecretValues = HashMap<String, String>;

/// Where secret values come from.
#[derive(Clone, Default)]
pub struct SecretResolver {
    /// Values given directly (checked first).
    pub values: SecretValues,
    /// A client and namespace to read Secrets through the API when the env var is absent.
    pub kube: Option<(kube::Client, String)>,
}

impl SecretResolver {
    /// Resolves one secret. The error names the env var and the Secret, never the value.
    pub async fn resolve(&self, source: &SecretSource) -> Result<String, ConfigError> {
        if let Some(v) = self.values.get(&source.env) {
            return Ok(v.clone());
        }
        if let Ok(v) = std::env::var(&source.env) {
            return Ok(millrace_crds::secret::normalize(&v));
        }
        let Some((client, namespace)) = &self.kube else {
            return Err(ConfigError::new(
                format!("secret {}", source.env),
                format!(
                    "environment variable {} is not set (it should come from Secret {:?} key {:?})",
                    source.env, source.secret_name, source.secret_key
                ),
            ));
        };
        read_secret(client, namespace, source).await
    }

    /// Reads one secret again, for a destination that refused the value read before. Values
    /// given directly come first, as in [`resolve`](Self::resolve); then, when a Kubernetes
    /// client is configured, the Secret as it is now (an environment variable keeps the value
    /// the process started with, so it cannot show a rotation); then the environment.
    pub async fn reread(&self, source: &SecretSource) -> Result<String, ConfigError> {
        if let Some(v) = self.values.get(&source.env) {
            return Ok(v.clone());
        }
        if let Some((client, namespace)) = &self.kube {
            match read_secret(client, namespace, source).await {
                Ok(v) => return Ok(v),
                // Without the right to read the Secret, the environment still answers.
                Err(e) if std::env::var_os(&source.env).is_none() => return Err(e),
                Err(_) => {}
            }
        }
        self.resolve(source).await
    }
}

/// A handle that re-reads one secret through the resolver that first read it (see
/// [`SecretResolver::reread`]). Cloning it is cheap; it never prints the value.
#[derive(Clone)]
pub struct SecretReread {
    resolver: SecretResolver,
    source: SecretSource,
}

impl SecretReread {
    /// A handle that reads `source` through `resolver`.
    pub fn new(resolver: SecretResolver, source: SecretSource) -> Self {
        Self { resolver, source }
    }

    /// The secret's current value.
    pub async fn value(&self) -> Result<String, ConfigError> {
        self.resolver.reread(&self.source).await
    }

    /// The reference re-read (for messages: the env var and the Secret, never the value).
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

/// Reads one secret through the API. The error names the env var and the Secret, never the
/// value.
async fn read_secret(
    client: &kube::Client,
    namespace: &str,
    source: &SecretSource,
) -> Result<String, ConfigError> {
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let secret = api.get_opt(&source.secret_name).await.map_err(|e| {
        ConfigError::new(
            format!("secret {}", source.env),
            format!("reading Secret {namespace}/{}: {e}", source.secret_name),
        )
    })?;
    let key = millrace_crds::SecretKeyRef {
        name: source.secret_name.clone(),
        key: source.secret_key.clone(),
    };
    millrace_crds::secret::secret_text(secret.as_ref(), &key).map_err(|e| {
        ConfigError::new(
            format!("secret {}", source.env),
            format!("in namespace {namespace}: {e}"),
        )
    })
}

/// A config ready to run: compiled flows and every referenced secret value.
pub struct CompiledConfig {
    /// The config as given.
    pub raw: WorkerConfig,
    /// Compiled flows, in config order.
    pub flows: Vec<Arc<CompiledFlow>>,
    /// Secret values by env var name. Held in memory only; never logged.
    pub secrets: BTreeMap<String, String>,
    /// The resolver the secrets came from, kept so a destination can re-read its credential.
    resolver: SecretResolver,
}

impl CompiledConfig {
    /// Checks, compiles and resolves `raw`.
    pub async fn build(
        raw: WorkerConfig,
        resolver: &SecretResolver,
        max_message_bytes: usize,
    ) -> Result<Self, ConfigError> {
        raw.check()?;
        let mut seen = std::collections::HashSet::new();
        let mut flows = Vec::new();
        for (i, flow) in raw.flows.iter().enumerate() {
            if !seen.insert((flow.namespace.clone(), flow.name.clone())) {
                return Err(ConfigError::new(
                    format!("flows[{i}].name"),
                    format!("flow {}/{} appears twice", flow.namespace, flow.name),
                ));
            }
            let mut route_names = std::collections::HashSet::new();
            for (j, r) in flow.routes.iter().enumerate() {
                if !route_names.insert(r.name.clone()) {
                    return Err(ConfigError::new(
                        format!("flows[{i}].routes[{j}].name"),
                        format!("route {:?} appears twice", r.name),
                    ));
                }
            }
            flows.push(Arc::new(CompiledFlow::compile(i, flow, max_message_bytes)?));
        }
        for (name, c) in &raw.connections {
            if let Some(http) = &c.http {
                let field = format!("connections.{name}.http");
                reqwest::Url::parse(&http.base_url).map_err(|e| {
                    ConfigError::new(format!("{field}.baseUrl"), format!("is not a URL: {e}"))
                })?;
                use millrace_crds::connection::HttpAuthType as A;
                if http.auth != A::None && http.secret.is_none() {
                    return Err(ConfigError::new(
                        format!("{field}.secret"),
                        "is required unless auth is None",
                    ));
                }
                if http.auth == A::OAuth2ClientCredentials && http.token_url.is_none() {
                    return Err(ConfigError::new(
                        format!("{field}.tokenUrl"),
                        "is required for OAuth2ClientCredentials",
                    ));
                }
                if http.auth == A::ApiKey && http.header.is_none() {
                    return Err(ConfigError::new(
                        format!("{field}.header"),
                        "is required for ApiKey",
                    ));
                }
            }
        }
        let mut secrets = BTreeMap::new();
        for source in raw.secrets() {
            let value = resolver.resolve(source).await?;
            secrets.insert(source.env.clone(), value);
        }
        let config = Self {
            raw,
            flows,
            secrets,
            resolver: resolver.clone(),
        };
        config.check_tls()?;
        Ok(config)
    }

    /// Checks every connection's TLS settings against its endpoint (a usable CA bundle, a valid
    /// server name, a TLS scheme), so that a config that cannot connect is refused up front.
    fn check_tls(&self) -> Result<(), ConfigError> {
        for (name, c) in &self.raw.connections {
            if let Some(a) = &c.amqp
                && let Some(uri) = self.secret(&a.uri)
            {
                AmqpConnector::new(uri, &self.tls_options(&a.ca, &a.server_name))
                    .map_err(|e| tls_error(name, "amqp", a.ca.as_ref(), e))?;
            }
            if let Some(h) = &c.http {
                HttpTls::new(&h.base_url, &self.tls_options(&h.ca, &h.server_name))
                    .map_err(|e| tls_error(name, "http", h.ca.as_ref(), e))?;
            }
        }
        Ok(())
    }

    /// The TLS settings of an endpoint, with its CA bundle resolved (it is resolved with the
    /// other secrets).
    pub fn tls_options(
        &self,
        ca: &Option<SecretSource>,
        server_name: &Option<String>,
    ) -> TlsOptions {
        TlsOptions {
            ca_pem: ca.as_ref().and_then(|s| self.secret(s)).map(str::to_string),
            server_name: server_name.clone(),
        }
    }

    /// The value of a secret resolved at build time.
    pub fn secret(&self, source: &SecretSource) -> Option<&str> {
        self.secrets.get(&source.env).map(String::as_str)
    }

    /// A handle that reads `source` again through the resolver this config was built with.
    pub fn secret_reread(&self, source: &SecretSource) -> SecretReread {
        SecretReread::new(self.resolver.clone(), source.clone())
    }
}

/// A TLS settings error as a config error: the config field, the Secret behind it, and the
/// PartnerConnection field to fix.
pub(crate) fn tls_error(
    connection: &str,
    kind: &str,
    ca: Option<&SecretSource>,
    e: TlsError,
) -> ConfigError {
    let (config_field, secret) = match &e {
        TlsError::NoCertificate | TlsError::InvalidCertificate { .. } => (
            format!("connections.{connection}.{kind}.ca"),
            ca.map(|s| format!(" (Secret {:?} key {:?})", s.secret_name, s.secret_key))
                .unwrap_or_default(),
        ),
        TlsError::InvalidServerName { .. } | TlsError::IpServerName { .. } => (
            format!("connections.{connection}.{kind}.serverName"),
            String::new(),
        ),
        TlsError::NotTls { .. } | TlsError::Client(_) => {
            (format!("connections.{connection}.{kind}"), String::new())
        }
    };
    ConfigError::new(
        config_field,
        format!(
            "PartnerConnection {connection:?} {}{secret} {e}",
            e.field(&format!("spec.{kind}.tls"))
        ),
    )
}
