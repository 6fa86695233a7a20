//! Where the local environment is, and the one way to say that it is not up.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Set to `1` to keep the namespace and vhost of a failing test.
pub(crate) const KEEP_ENV_VAR: &str = "MILLRACE_KEEP_NAMESPACE";

/// The directory that holds the local environment's binaries and state: `$MILLRACE_HOME`, or else
/// `$HOME/.cache/millrace`, as in the Makefile.
pub fn millrace_home() -> PathBuf {
    if let Some(home) = std::env::var_os("MILLRACE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home =
        std::env::var_os("HOME").unwrap_or_else(|| not_up("neither MILLRACE_HOME nor HOME is set"));
    PathBuf::from(home).join(".cache").join("millrace")
}

/// The admin kubeconfig that `make env-up` writes (`make -s env-kubeconfig` prints the same path).
pub fn kubeconfig_path() -> PathBuf {
    millrace_home().join("env").join("kubeconfig")
}

/// RabbitMQ's TLS listener, which `make env-up` configures with a private CA: AMQP over TLS on
/// 127.0.0.1, with a certificate for [`RabbitTls::SERVER_NAME`] and `localhost`, but not for
/// `127.0.0.1`, so that a client connecting to `127.0.0.1` must be told which name to verify.
/// `make env-status` shows the same.
#[derive(Clone, Debug)]
pub struct RabbitTls {
    dir: PathBuf,
}

impl RabbitTls {
    /// Port of the TLS listener.
    pub const PORT: u16 = 5671;
    /// The name in the listener's certificate, besides `localhost`.
    pub const SERVER_NAME: &'static str = "rabbitmq.millrace.test";

    /// The listener's files. Panics, saying to run `make env-up`, when they are missing.
    pub fn get() -> Self {
        let dir = millrace_home().join("env").join("rabbitmq-tls");
        if !dir.join("complete").exists() {
            not_up(format_args!(
                "RabbitMQ's TLS certificates are not in {}",
                dir.display()
            ));
        }
        Self { dir }
    }

    /// The PEM certificate of the private CA that signs the listener's certificate.
    pub fn ca_pem(&self) -> String {
        self.read("ca.crt")
    }

    /// The listener's certificate and its private key, PEM. Tests may serve TLS of their own
    /// with them (the certificate is for [`RabbitTls::SERVER_NAME`] and `localhost`).
    pub fn server_cert_and_key(&self) -> (String, String) {
        (self.read("server.crt"), self.read("server.key"))
    }

    /// An `amqps://` URI of `vhost` on host `host` (`127.0.0.1` or `localhost`).
    pub fn amqps_uri(&self, host: &str, vhost: &crate::TestVhost) -> String {
        let (user, password) = vhost.credentials();
        format!(
            "amqps://{user}:{password}@{host}:{}/{}",
            Self::PORT,
            vhost.name()
        )
    }

    fn read(&self, file: &str) -> String {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| not_up(format_args!("cannot read {}: {e}", path.display())))
    }
}

/// Chooses rustls's process-wide crypto provider once, before any TLS or AMQP client is built.
/// Both ring (through kube) and aws-lc-rs (through lapin) are compiled into test binaries, and rustls
/// refuses to guess between them.
pub(crate) fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means a provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Fails the current test: the environment is missing or unreachable.
pub(crate) fn not_up(what: impl std::fmt::Display) -> ! {
    panic!(
        "the local environment is not up: {what}. Run `make env-up` first (`make env-status` shows what runs)."
    )
}

/// A kube client with cluster-wide admin rights on the local control plane, for tests that work with
/// cluster-scoped objects such as CustomResourceDefinitions. Panics when the control plane is not up.
pub async fn kube_client() -> Client {
    let path = kubeconfig_path();
    if !path.exists() {
        not_up(format_args!("{} does not exist", path.display()));
    }
    let client = client_from(&path)
        .await
        .unwrap_or_else(|e| not_up(format_args!("cannot use {}: {e}", path.display())));
    if let Err(e) = client.apiserver_version().await {
        not_up(format_args!("kube-apiserver does not answer: {e}"));
    }
    client
}

pub(crate) async fn client_from(path: &std::path::Path) -> Result<Client, String> {
    init_tls();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Whether the resources of a test that is failing right now should be kept.
pub(crate) fn keep_on_failure() -> bool {
    std::thread::panicking() && std::env::var(KEEP_ENV_VAR).is_ok_and(|v| v == "1")
}

/// A DNS-label-safe unique name: the prefix, then eight random hex digits.
pub(crate) fn unique_name(prefix: &str) -> String {
    let mut base: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    base = base.trim_matches('-').to_string();
    if base.is_empty() {
        base.push_str("test");
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}-{}", &suffix[..8])
}

/// A workspace binary (`millrace`, `millrace-worker`, ...) built next to the running test binary,
/// in `<target>/<profile>/`. Panics, saying how to build it, when it is missing; `make test`
/// builds every binary the tests run.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a test binary lives in <target>/<profile>/deps")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`make test` builds every binary the tests run)",
        bin.display()
    );
    bin
}

/// What a finished process printed, with its exit code, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_dns_labels() {
        for prefix in ["Deploy_Test", "", "--x--", &"a".repeat(80)] {
            let name = unique_name(prefix);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
