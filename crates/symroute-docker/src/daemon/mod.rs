//! `symroute daemon`: follow the container engine (Docker, or Podman
//! through its Engine-compatible API) and keep every multi-homed
//! container's replies symmetric as containers start, restart, connect and
//! disconnect, and repair what the kernel drops.
//!
//! One tokio task runs the loop ([`event_loop`]); kernel work is a few
//! sub-millisecond netlink round trips done inline, each apply under the
//! namespace's writer lock (one try: a namespace another writer holds is
//! tried again shortly, the loop never sleeps on it). The periodic resync
//! asks the engine from a task of its own and the loop applies its answers
//! one container at a time, after every pending event ([`resync`]). The loop is generic over two seams, so it runs
//! against fakes in tests: the Engine API ([`crate::EngineApi`], real:
//! [`crate::DockerClient`]) and namespace access ([`Namespaces`], real:
//! [`LinuxNamespaces`]). Each managed container holds an open handle on its
//! namespace (the namespace file for the lock, a netlink socket for
//! changes, one subscribed to link, address, rule and route notifications); it is
//! dropped the moment the container dies, so no namespace is kept alive by
//! symroute. The one exception is short: on Podman, a namespace opened while
//! its container starts ([`Namespaces::prepare`]) and never claimed is
//! closed after [`namespaces::EARLY_TTL`] (5 s).
//!
//! - [`container`]: per-container state, retry backoff, reconcile/converge;
//! - [`resync`]: the periodic resync against the engine's list, off the event path;
//! - [`hint`]: starts learnt from the engine's namespace folder before its event (Podman);
//! - [`namespaces`]: the namespace seam and its Linux implementation;
//! - [`watch`]: link, address, rule and route notifications of one namespace;
//! - [`metrics`]: the Prometheus metrics; [`http`]: their HTTP endpoint.

mod container;
mod event_loop;
mod hint;
mod http;
mod metrics;
mod namespaces;
mod resync;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::client::DockerConnector;
use crate::engine_api::Connector;
use symroute_core::settings::Settings;

pub use container::{BUSY_RETRY, LOCK_WAIT, RETRY_FIRST, RETRY_MAX, retry_delay};
pub use event_loop::{RECONNECT_FIRST, RECONNECT_MAX};
pub use hint::{NetnsFolder, RECENT, RECENT_BURST};
pub use metrics::{CONTENT_TYPE, LATENCY_BUCKETS, Metrics};
pub use namespaces::{LinuxHandle, LinuxNamespaces, Namespaces, NsAccessError, NsHandle};
pub use resync::{MAX_YIELD, QUIET};

/// Now, as CLOCK_REALTIME nanoseconds (what engine event timestamps use).
pub(crate) fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub docker_host: Option<String>,
    pub resync_interval: Duration,
    pub require_label: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub clean_on_exit: bool,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Run until `shutdown` completes, against the real engine (`docker_host`)
/// and the real namespaces. Survives engine restarts (reconnects with
/// backoff, then resyncs) and never exits on a per-container problem.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let connector = DockerConnector {
        host: opts.docker_host.clone(),
    };
    // The namespace helper thread (and its one descriptor) from the start.
    if !symroute_linux::netns::start_helper() {
        tracing::warn!("cannot start the namespace helper thread; every namespace will fail");
    }
    let namespaces = LinuxNamespaces::new(opts.settings.protocol.get());
    run_with(
        opts,
        &connector,
        namespaces,
        Arc::new(Metrics::default()),
        shutdown,
    )
    .await
}

/// [`run`] over any engine and namespaces, reporting into `metrics` (also
/// served on `opts.metrics_listen` when set). `opts.docker_host` is not
/// used: the connector knows where its engine is.
pub async fn run_with<C: Connector, N: Namespaces>(
    opts: DaemonOptions,
    connector: &C,
    namespaces: N,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let server = match opts.metrics_listen {
        Some(addr) => {
            let listener = http::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            info!(listen = %addr, "metrics at /metrics");
            Some(tokio::spawn(http::serve(listener, metrics.clone())))
        }
        None => None,
    };
    event_loop::serve(opts, connector, namespaces, metrics, shutdown).await;
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}
