//! Reaching a cluster: a client from a kubeconfig and context, and a runtime to wait on it.
//! Commands that read a cluster never write to it unless they say so.

use std::path::Path;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for `context` of `kubeconfig` (default: KUBECONFIG, then ~/.kube/config, then
/// in-cluster; the current context).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let config = match (kubeconfig, context) {
        (None, None) => Config::infer().await.context("no usable kubeconfig")?,
        (path, context) => {
            let kubeconfig = match path {
                Some(p) => Kubeconfig::read_from(p)
                    .with_context(|| format!("--kubeconfig {}", p.display()))?,
                None => Kubeconfig::read().context("reading the kubeconfig")?,
            };
            let options = KubeConfigOptions {
                context: context.map(str::to_string),
                ..KubeConfigOptions::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| match context {
                    Some(c) => format!("context {c} of the kubeconfig"),
                    None => "the kubeconfig".to_string(),
                })?
        }
    };
    Client::try_from(config).context("building a Kubernetes client")
}

/// Runs `work` to completion on a single-threaded runtime.
pub fn block_on<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start")?
        .block_on(work)
}
