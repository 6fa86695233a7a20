//! TLS to a partner endpoint as its PartnerConnection declares it (`spec.amqp.tls`,
//! `spec.http.tls`): a PEM CA bundle trusted on top of the system's roots, and a server name that
//! the endpoint's certificate is verified against, and that is sent as SNI, instead of the host in
//! the URI. The operator (probes, topology) and the worker (consumers, publishers, HTTP sinks)
//! connect through this one module, so both honour the same settings the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use lapin::tcp::{AsyncTcpStream, RustlsConnector, RustlsConnectorConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// The TLS settings of one connection, as declared. Hashable, so that connections made with
/// different settings are told apart.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// The PEM CA bundle (the value behind `tls.caSecretRef`).
    pub ca_pem: Option<String>,
    /// `tls.serverName`.
    pub server_name: Option<String>,
}

// A CA bundle is not secret, but it is long: show its size only.
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(String::len))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// True when nothing is set: connections behave as without `tls`.
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.server_name.is_none()
    }
}

/// Why TLS settings cannot be used. Each message says what is wrong and how to fix it; the caller
/// names the connection, and [`TlsError::field`] the field. No message holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle holds no PEM certificate.
    #[error(
        "holds no PEM certificate: store the CA certificate(s) that sign the server's certificate, \
         PEM-encoded (-----BEGIN CERTIFICATE-----), in that Secret key"
    )]
    NoCertificate,
    /// The CA bundle is not valid PEM, or a certificate in it cannot be used as a trust anchor.
    #[error(
        "is not a usable PEM CA bundle ({detail}): store the CA certificate(s) that sign the \
         server's certificate, PEM-encoded (-----BEGIN CERTIFICATE-----), in that Secret key"
    )]
    InvalidCertificate {
        /// What the parser said.
        detail: String,
    },
    /// `serverName` is not a DNS name or an IP address.
    #[error(
        "{name:?} is not a DNS name or an IP address: set it to a name the server's certificate holds"
    )]
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// For HTTP, `serverName` must be a DNS name: requests are sent to it.
    #[error(
        "{name:?} is an IP address; for HTTP, serverName must be a DNS name (to verify against an \
         IP address, put it in baseUrl)"
    )]
    IpServerName {
        /// The name.
        name: String,
    },
    /// TLS settings on an endpoint that does not use TLS.
    #[error(
        "is set, but the endpoint does not use TLS: use {tls_scheme} or remove the TLS settings"
    )]
    NotTls {
        /// The scheme that uses TLS (`amqps://`, `https://`).
        tls_scheme: &'static str,
    },
    /// The TLS client could not be built.
    #[error("building the TLS client: {0}")]
    Client(String),
}

impl TlsError {
    /// The field at fault, under `tls_field` (for example `spec.amqp.tls`).
    pub fn field(&self, tls_field: &str) -> String {
        match self {
            TlsError::NoCertificate | TlsError::InvalidCertificate { .. } => {
                format!("{tls_field}.caSecretRef")
            }
            TlsError::InvalidServerName { .. } | TlsError::IpServerName { .. } => {
                format!("{tls_field}.serverName")
            }
            TlsError::NotTls { .. } | TlsError::Client(_) => tls_field.to_string(),
        }
    }

    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TlsError::NoCertificate | TlsError::InvalidCertificate { .. } => "invalid_ca",
            TlsError::InvalidServerName { .. } | TlsError::IpServerName { .. } => {
                "invalid_server_name"
            }
            TlsError::NotTls { .. } => "not_tls",
            TlsError::Client(_) => "client",
        }
    }
}

/// The certificates of a PEM CA bundle, each checked to be usable as a trust anchor.
pub fn ca_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidCertificate {
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|e| TlsError::InvalidCertificate {
                detail: format!("certificate {} of {}: {e}", i + 1, certs.len()),
            })?;
    }
    Ok(certs)
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::InvalidServerName {
        name: name.to_string(),
    })
}

/// How to open AMQP connections to one broker: its URI and its TLS settings, checked. The URI
/// holds credentials: it is never printed, and errors are redacted.
#[derive(Clone)]
pub struct AmqpConnector {
    uri: String,
    tls: Option<AmqpTls>,
}

#[derive(Clone)]
struct AmqpTls {
    connector: RustlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for AmqpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConnector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AmqpConnector {
    /// Connections to `uri` without TLS settings, exactly as lapin makes them.
    pub fn plain(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
            tls: None,
        }
    }

    /// Checks `options` against `uri`. Without options, connections are made exactly as lapin
    /// makes them (for `amqps://`, verified against the system's roots and the URI host).
    pub fn new(uri: &str, options: &TlsOptions) -> Result<Self, TlsError> {
        if options.is_empty() {
            return Ok(Self::plain(uri));
        }
        if !uri
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("amqps://")
        {
            return Err(TlsError::NotTls {
                tls_scheme: "amqps://",
            });
        }
        let roots = match &options.ca_pem {
            Some(pem) => ca_certificates(pem)?,
            None => Vec::new(),
        };
        if let Some(name) = &options.server_name {
            server_name(name)?;
        }
        let connector = RustlsConnectorConfig::new_with_platform_verifier()
            .with_parsable_certificates(roots)
            .connector_with_no_client_auth()
            .map_err(|e| TlsError::Client(e.to_string()))?;
        Ok(Self {
            uri: uri.to_string(),
            tls: Some(AmqpTls {
                connector,
                server_name: options.server_name.clone(),
            }),
        })
    }

    /// `text` with every trace of the URI's credentials removed.
    pub fn redact(&self, text: &str) -> String {
        millrace_crds::secret::redact(text, &self.uri)
    }

    /// Opens a connection. A certificate that fails verification is an error that
    /// [`verification_hint`] explains.
    pub async fn connect(&self, properties: ConnectionProperties) -> lapin::Result<Connection> {
        let redacted = |e: String| lapin::Error::from(std::io::Error::other(self.redact(&e)));
        let Some(tls) = &self.tls else {
            return Connection::connect(&self.uri, properties).await;
        };
        let uri: AMQPUri = self.uri.parse().map_err(redacted)?;
        if uri.scheme != AMQPScheme::AMQPS {
            return Err(redacted("the URI is not amqps://".into()));
        }
        let domain = tls
            .server_name
            .clone()
            .unwrap_or_else(|| uri.authority.host.clone());
        let connector = tls.connector.clone();
        // lapin's own connector verifies against the URI host; this one connects to that host
        // but verifies (and sends as SNI) the declared server name.
        Connection::connector(
            uri,
            lapin::runtime::default_runtime()?,
            async move |uri: AMQPUri, runtime| {
                let host = (uri.authority.host.clone(), uri.authority.port);
                let stream =
                    AsyncTcpStream::connect(&runtime, runtime.to_socket_addrs(host)).await?;
                Ok(stream.into_rustls(&connector, &domain).await?)
            },
            properties,
        )
        .await
    }
}

/// What a TLS handshake refused, when `error` (or an error it wraps) is a certificate that failed
/// verification: a sentence naming the fix, with fields under `tls_field` (for example
/// `spec.amqp.tls`).
pub fn verification_hint(
    error: &(dyn std::error::Error + 'static),
    tls_field: &str,
) -> Option<String> {
    use rustls::CertificateError as C;
    let found = rustls_error(error)?;
    let rustls::Error::InvalidCertificate(cert) = found else {
        return None;
    };
    Some(match cert {
        C::UnknownIssuer | C::BadSignature | C::UnknownRevocationStatus => format!(
            "TLS verification failed: the server's certificate is not signed by a CA this \
             connection trusts ({found}); set {tls_field}.caSecretRef to a Secret key holding \
             the PEM CA bundle that signs it"
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "TLS verification failed: the server's certificate is not valid for the name it was \
             checked against ({found}); set {tls_field}.serverName to a name the certificate \
             holds, or connect by that name"
        ),
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            format!(
                "TLS verification failed: the server's certificate is outside its validity \
                 period ({found}); the server needs a current certificate"
            )
        }
        _ => format!("TLS verification failed: {found}"),
    })
}

/// The rustls error inside `error`. I/O errors carry theirs as their payload, which
/// `source()` skips, so those are opened too.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// TLS settings for an HTTP client of one endpoint: extra roots and, with `serverName`, requests
/// addressed to that name while connecting to the base URL's host.
///
/// reqwest verifies the certificate against the URL host and sends it as SNI, so honouring
/// `serverName` means putting that name in the URL ([`HttpTls::url`]) and resolving it to the
/// base URL's host. The `Host` header then carries the server name too, as it would for a client
/// that reached the server by that name.
#[derive(Clone)]
pub struct HttpTls {
    roots: Vec<reqwest::Certificate>,
    rename: Option<Rename>,
}

#[derive(Clone, Debug)]
struct Rename {
    /// The name verified and sent.
    server_name: String,
    /// The base URL's host, connected to.
    host: String,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls")
            .field("roots", &self.roots.len())
            .field("rename", &self.rename)
            .finish()
    }
}

impl HttpTls {
    /// Checks `options` against `base_url`.
    pub fn new(base_url: &str, options: &TlsOptions) -> Result<Self, TlsError> {
        let plain = Self {
            roots: Vec::new(),
            rename: None,
        };
        if options.is_empty() {
            return Ok(plain);
        }
        let url = reqwest::Url::parse(base_url).map_err(|e| TlsError::Client(e.to_string()))?;
        if url.scheme() != "https" {
            return Err(TlsError::NotTls {
                tls_scheme: "https://",
            });
        }
        let roots = match &options.ca_pem {
            Some(pem) => ca_certificates(pem)?
                .iter()
                .map(|c| reqwest::Certificate::from_der(c.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::InvalidCertificate {
                    detail: e.to_string(),
                })?,
            None => Vec::new(),
        };
        let rename = match &options.server_name {
            Some(name) => {
                if let ServerName::IpAddress(_) = server_name(name)? {
                    return Err(TlsError::IpServerName { name: name.clone() });
                }
                let host = url.host_str().unwrap_or_default().to_string();
                (!host.eq_ignore_ascii_case(name)).then(|| Rename {
                    server_name: name.to_ascii_lowercase(),
                    host,
                })
            }
            None => None,
        };
        Ok(Self { roots, rename })
    }

    /// `builder` with the extra roots and, for `serverName`, a resolver that sends the server
    /// name's connections to the base URL's host.
    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(rename) = &self.rename {
            builder = builder.dns_resolver(Arc::new(rename.clone()));
        }
        builder
    }

    /// `url` as requests must be sent: with the server name as its host when its host is the
    /// base URL's.
    pub fn url(&self, url: &str) -> String {
        let Some(rename) = &self.rename else {
            return url.to_string();
        };
        let Ok(mut parsed) = reqwest::Url::parse(url) else {
            return url.to_string();
        };
        if !parsed
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(&rename.host))
            || parsed.set_host(Some(&rename.server_name)).is_err()
        {
            return url.to_string();
        }
        let mut out = parsed.to_string();
        // The URL parser adds a root path to a bare origin; keep the text as it was given.
        if !url.ends_with('/') && parsed.path() == "/" && out.ends_with('/') {
            out.pop();
        }
        out
    }
}

impl reqwest::dns::Resolve for Rename {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = if name.as_str().eq_ignore_ascii_case(&self.server_name) {
            self.host.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            let bare = target.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, 0)],
                Err(_) => tokio::net::lookup_host((bare, 0)).await?.collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (no key is kept anywhere), for parsing tests.
    const CA_PEM: &str = include_str!("../tests/fixtures/test-ca.crt");

    #[test]
    fn ca_bundles_parse_or_say_what_is_wrong() {
        assert_eq!(ca_certificates(CA_PEM).unwrap().len(), 1);
        let two = format!("{CA_PEM}\n{CA_PEM}");
        assert_eq!(ca_certificates(&two).unwrap().len(), 2);

        let cases = [
            ("", "holds no PEM certificate"),
            ("not a certificate", "holds no PEM certificate"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "holds no PEM certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n",
                "certificate 1 of 1",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "is not a usable PEM CA bundle",
            ),
        ];
        for (pem, expected) in cases {
            let e = ca_certificates(pem).unwrap_err();
            assert!(e.to_string().contains(expected), "{pem:?}: {e}");
            assert_eq!(e.field("spec.amqp.tls"), "spec.amqp.tls.caSecretRef");
            assert!(e.to_string().contains("in that Secret key"), "{e}");
        }
    }

    #[test]
    fn amqp_settings_are_checked_against_the_uri() {
        let ca = TlsOptions {
            ca_pem: Some(CA_PEM.into()),
            server_name: None,
        };
        let plain = AmqpConnector::new("amqp://u:p@h/", &ca).unwrap_err();
        assert!(matches!(plain, TlsError::NotTls { .. }), "{plain}");
        assert_eq!(plain.field("spec.amqp.tls"), "spec.amqp.tls");
        AmqpConnector::new("amqps://u:p@h/", &TlsOptions::default()).unwrap();
        AmqpConnector::new("amqp://u:p@h/", &TlsOptions::default()).unwrap();
        let bad_name = TlsOptions {
            ca_pem: None,
            server_name: Some("not a name".into()),
        };
        let e = AmqpConnector::new("amqps://u:p@h/", &bad_name).unwrap_err();
        assert_eq!(e.field("spec.amqp.tls"), "spec.amqp.tls.serverName");
        let e = format!("{:?}", AmqpConnector::new("amqps://u:secret@h/", &ca));
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn http_server_names_rewrite_only_the_base_host() {
        let options = TlsOptions {
            ca_pem: Some(CA_PEM.into()),
            server_name: Some("ERP.example.test".into()),
        };
        let tls = HttpTls::new("https://127.0.0.1:8443/api", &options).unwrap();
        let cases = [
            (
                "https://127.0.0.1:8443/api",
                "https://erp.example.test:8443/api",
            ),
            (
                "https://127.0.0.1:8443/api/orders?id=1",
                "https://erp.example.test:8443/api/orders?id=1",
            ),
            ("https://127.0.0.1:8443", "https://erp.example.test:8443"),
            (
                "https://token.example.com/oauth",
                "https://token.example.com/oauth",
            ),
        ];
        for (given, sent) in cases {
            assert_eq!(tls.url(given), sent, "{given}");
        }
        let e = HttpTls::new("http://127.0.0.1/", &options).unwrap_err();
        assert!(matches!(e, TlsError::NotTls { .. }), "{e}");
        let ip = TlsOptions {
            ca_pem: None,
            server_name: Some("10.0.0.1".into()),
        };
        let e = HttpTls::new("https://127.0.0.1/", &ip).unwrap_err();
        assert_eq!(e.field("spec.http.tls"), "spec.http.tls.serverName");
        let same = HttpTls::new(
            "https://erp.example.test/",
            &TlsOptions {
                ca_pem: None,
                server_name: Some("erp.example.test".into()),
            },
        )
        .unwrap();
        assert_eq!(
            same.url("https://erp.example.test/x"),
            "https://erp.example.test/x"
        );
    }

    #[test]
    fn verification_failures_name_the_field_to_set() {
        let unknown = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let wrapped = lapin::Error::from(unknown);
        let hint = verification_hint(&wrapped, "spec.amqp.tls").unwrap();
        assert!(hint.contains("spec.amqp.tls.caSecretRef"), "{hint}");
        let name = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        let hint = verification_hint(&name, "spec.http.tls").unwrap();
        assert!(hint.contains("spec.http.tls.serverName"), "{hint}");
        let other = std::io::Error::other("connection refused");
        assert!(verification_hint(&other, "spec.amqp.tls").is_none());
    }
}
