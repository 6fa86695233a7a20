//! Test support for integration tests against the local environment that `make env-up` starts.
//!
//! Each test gets resources of its own, removed when the test ends:
//! - [`TestNamespace`]: a fresh namespace on the local control plane and a kube [`kube::Client`];
//! - [`TestVhost`]: a fresh RabbitMQ virtual host and an AMQP connection to it.
//!
//! When the environment is not up, these panic with a message saying to run `make env-up`, so an
//! integration test can never pass without the services it talks to.
//!
//! Set `MILLRACE_KEEP_NAMESPACE=1` to keep the namespace and the vhost of a failing test for inspection.
//!
//! ```no_run
//! # async fn example() {
//! let ns = millrace_testkit::TestNamespace::create("deploy").await;
//! let vhost = millrace_testkit::TestVhost::create("relay").await;
//! let channel = vhost.connection().create_channel().await.unwrap();
//! # let _ = (ns.client(), channel);
//! # }
//! ```

mod cleanup;
mod env;
pub mod manifests;
mod namespace;
mod vhost;

pub use env::{
    RabbitTls, kube_client, kubeconfig_path, millrace_home, output_text, workspace_binary,
};
pub use namespace::TestNamespace;
pub use vhost::TestVhost;
