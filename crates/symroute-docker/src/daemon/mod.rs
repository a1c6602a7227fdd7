//! `symroute daemon`: follow the Docker Engine and keep every multi-homed
//! container's replies symmetric as containers start, restart, connect and
//! disconnect, and repair what the kernel drops.
//!
//! One tokio task runs the loop; kernel work is a few sub-millisecond
//! netlink round trips done inline. Each managed container holds an open
//! handle on its namespace (a netlink socket for changes, one subscribed to
//! link and address notifications); both are dropped the moment the
//! container dies, so no namespace is kept alive by symroute.

pub mod metrics;
pub mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::{
    ContainerInfo, Decision, DockerClient, DockerError, Event, EventKind, decide, plan_request,
};
use metrics::{Metrics, Outcome};
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::kernel::Kernel;
use symroute_core::settings::Settings;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::Netns;

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

/// A container whose namespace symroute manages.
struct Managed {
    info: ContainerInfo,
    ns_id: (u64, u64),
    kernel: NetlinkKernel,
    watcher: JoinHandle<()>,
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

struct Daemon {
    opts: DaemonOptions,
    managed: HashMap<String, Managed>,
    metrics: Arc<Metrics>,
    kernel_tx: mpsc::Sender<String>,
    retry_tx: mpsc::Sender<String>,
    /// Consecutive failures per container, for the retry backoff.
    failures: HashMap<String, u32>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Daemon {
    fn release(&mut self, id: &str, why: &str) {
        self.failures.remove(id);
        if let Some(m) = self.managed.remove(id) {
            info!(container = %m.info.label(), reason = why, "released");
        }
        self.metrics.set_managed(self.managed.len());
    }

    /// Ask again later (a container between states, a transient error):
    /// after 1 s, doubling per consecutive failure up to 60 s; the periodic
    /// resync covers the rest.
    fn retry_later(&mut self, id: &str) {
        let n = self.failures.entry(id.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let delay = Duration::from_secs(1u64 << (*n - 1).min(6)).min(Duration::from_secs(60));
        let tx = self.retry_tx.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(id).await;
        });
    }

    /// Inspect a container and converge it. `since` is the triggering
    /// event's timestamp, for the latency metric.
    async fn reconcile(&mut self, client: &DockerClient, id: &str, since: Option<i64>) {
        let info = match client.inspect(id).await {
            Ok(i) => i,
            Err(DockerError::NoSuchContainer(_)) => {
                self.release(id, "container is gone");
                return;
            }
            Err(e) => {
                self.metrics.error();
                warn!(container = %short(id), error = %e, "inspect failed; will retry");
                self.retry_later(id);
                return;
            }
        };
        match decide(&info, self.opts.require_label) {
            Decision::Manage => {}
            Decision::Skip(reason) => {
                if self.managed.contains_key(&info.id) {
                    self.release(&info.id, &reason);
                } else {
                    debug!(container = %info.label(), reason = %reason, "not managed");
                }
                return;
            }
        }
        let Some(path) = info.netns_path() else {
            return;
        };
        let netns = match Netns::open(&path) {
            Ok(n) => n,
            Err(e) => {
                // The container died between inspect and here.
                self.metrics.error();
                warn!(container = %info.label(), error = %e, "namespace not reachable");
                self.release(&info.id, "namespace gone");
                return;
            }
        };
        let ns_id = match netns.id() {
            Ok(x) => x,
            Err(e) => {
                self.metrics.error();
                warn!(container = %info.label(), error = %e, "namespace not readable");
                return;
            }
        };
        if let Some(other) = self
            .managed
            .iter()
            .find(|(k, m)| **k != info.id && m.ns_id == ns_id)
            .map(|(_, m)| m.info.label())
        {
            debug!(container = %info.label(), shares_with = %other, "namespace already managed");
            return;
        }
        let fresh = self.managed.get(&info.id).is_none_or(|m| m.ns_id != ns_id);
        if fresh {
            self.managed.remove(&info.id);
            let opened = netns
                .socket()
                .and_then(|s| watch::open(&netns).map(|w| (s, w)));
            let (sock, watch_fd) = match opened {
                Ok(x) => x,
                Err(e) => {
                    self.metrics.error();
                    warn!(container = %info.label(), error = %e, "cannot open namespace");
                    return;
                }
            };
            let watcher = tokio::spawn(watch::watch(
                watch_fd,
                info.id.clone(),
                self.kernel_tx.clone(),
            ));
            self.managed.insert(
                info.id.clone(),
                Managed {
                    info: info.clone(),
                    ns_id,
                    kernel: NetlinkKernel::new(sock),
                    watcher,
                },
            );
            self.metrics.set_managed(self.managed.len());
        } else if let Some(m) = self.managed.get_mut(&info.id) {
            m.info = info.clone();
        }
        self.converge(&info.id, since, true);
    }

    /// Apply the plan to a managed container from what is cached about it.
    /// `fresh`: the cache was just read from Docker. Otherwise (a kernel
    /// notification) Docker's own event may still be on its way: an
    /// interface that vanished in a `docker network disconnect` is expected,
    /// not worth a warning.
    fn converge(&mut self, id: &str, since: Option<i64>, fresh: bool) {
        let settings = self.opts.settings;
        let Some(m) = self.managed.get_mut(id) else {
            return;
        };
        let start = Instant::now();
        let result = m
            .kernel
            .snapshot()
            .map_err(engine::EngineError::from)
            .and_then(|snap| {
                let (request, warnings) = plan_request(&m.info, &snap);
                for w in warnings {
                    if fresh {
                        warn!(container = %m.info.label(), "{w}");
                    } else {
                        debug!(container = %m.info.label(), "{w} (Docker's event may follow)");
                    }
                }
                let opts = ApplyOptions {
                    settings,
                    request,
                    dry_run: false,
                    dad_wait: Duration::ZERO,
                    interrupt: None,
                };
                engine::apply_to(&mut m.kernel, snap, &opts)
            });
        let took = start.elapsed();
        let label = m.info.label();
        let networks = m
            .info
            .attachments
            .iter()
            .map(|a| a.network.as_str())
            .collect::<Vec<_>>()
            .join(",");
        match result {
            Ok(rep) => {
                self.failures.remove(id);
                let outcome = if rep.ops.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Changed
                };
                self.metrics.reconcile(outcome);
                if let Some(t) = since.filter(|t| *t > 0) {
                    let lat = now_nanos().saturating_sub(t).max(0) as u64;
                    self.metrics.latency(Duration::from_nanos(lat));
                }
                let changes: Vec<String> = rep
                    .ops
                    .iter()
                    .map(|o| symroute_core::report::op_text(o, &rep.snapshot))
                    .collect();
                if rep.plan.unmanaged_reason.is_some() && rep.ops.is_empty() {
                    debug!(container = %label, networks = %networks, "single-homed: nothing to do");
                } else if rep.ops.is_empty() {
                    debug!(container = %label, networks = %networks, took_us = took.as_micros() as u64, "in sync");
                } else {
                    info!(
                        container = %label,
                        networks = %networks,
                        changes = changes.len(),
                        detail = %changes.join("; "),
                        took_us = took.as_micros() as u64,
                        "converged"
                    );
                }
            }
            Err(e) => {
                self.metrics.reconcile(Outcome::Error);
                self.metrics.error();
                warn!(container = %label, networks = %networks, error = %e, "reconcile failed; will retry");
                self.retry_later(id);
            }
        }
    }

    async fn on_event(&mut self, client: &DockerClient, e: Event) {
        self.metrics.event();
        match e.kind {
            EventKind::Start => {
                self.reconcile(client, &e.container, Some(e.time_nano))
                    .await;
            }
            // A container being created or started gets its connects before
            // its namespace exists (and inspect would wait for the start to
            // finish): new containers are handled on `start`, running ones here.
            EventKind::Connect | EventKind::Disconnect => {
                if self.managed.contains_key(&e.container) {
                    self.reconcile(client, &e.container, Some(e.time_nano))
                        .await;
                } else {
                    debug!(container = %short(&e.container), "network change of a container not managed (yet)");
                }
            }
            EventKind::Die | EventKind::Destroy => {
                self.release(
                    &e.container,
                    if e.kind == EventKind::Die {
                        "died"
                    } else {
                        "destroyed"
                    },
                );
            }
        }
    }

    async fn resync(&mut self, client: &DockerClient) {
        let ids = match client.running().await {
            Ok(ids) => ids,
            Err(e) => {
                self.metrics.error();
                warn!(error = %e, "resync: cannot list containers");
                return;
            }
        };
        let gone: Vec<String> = self
            .managed
            .keys()
            .filter(|k| !ids.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.release(&id, "no longer running");
        }
        for id in &ids {
            self.reconcile(client, id, None).await;
        }
        debug!(
            running = ids.len(),
            managed = self.managed.len(),
            "resynced"
        );
    }

    fn finish(&mut self) {
        if self.opts.clean_on_exit {
            let settings = self.opts.settings;
            for m in self.managed.values_mut() {
                match engine::clean(&mut m.kernel, &settings) {
                    Ok(r) => {
                        info!(container = %m.info.label(), removed = r.removed.len(), "cleaned on exit")
                    }
                    Err(e) => {
                        warn!(container = %m.info.label(), error = %e, "clean on exit failed")
                    }
                }
            }
        }
        self.managed.clear();
        self.metrics.set_managed(0);
    }
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Run until `shutdown` completes. Survives dockerd restarts (reconnects
/// with backoff, then resyncs) and never exits on a per-container problem.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::default());
    let server = match opts.metrics_listen {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            info!(listen = %addr, "metrics at /metrics");
            Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
        }
        None => None,
    };
    let (kernel_tx, mut kernel_rx) = mpsc::channel::<String>(1024);
    let (retry_tx, mut retry_rx) = mpsc::channel::<String>(1024);
    let mut d = Daemon {
        opts: opts.clone(),
        managed: HashMap::new(),
        metrics: metrics.clone(),
        kernel_tx,
        retry_tx,
        failures: HashMap::new(),
    };
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(250);
    'outer: loop {
        let client = tokio::select! {
            _ = &mut shutdown => break 'outer,
            c = DockerClient::connect(opts.docker_host.as_deref()) => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                metrics.error();
                metrics.set_connected(false);
                error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach Docker");
                tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        metrics.set_connected(true);
        info!(socket = client.socket(), api = %client.api_version(), "connected to Docker");
        // Subscribe first, then resync: nothing that happens in between is lost.
        let mut events = Box::pin(client.events());
        d.resync(&client).await;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + opts.resync_interval,
            opts.resync_interval,
        );
        loop {
            tokio::select! {
                _ = &mut shutdown => break 'outer,
                ev = events.next() => match ev {
                    Some(Ok(e)) => d.on_event(&client, e).await,
                    Some(Err(e)) => {
                        metrics.error();
                        warn!(error = %e, "Docker event stream failed; reconnecting");
                        break;
                    }
                    None => {
                        warn!("Docker event stream ended (dockerd restarting?); reconnecting");
                        break;
                    }
                },
                Some(id) = kernel_rx.recv() => {
                    // Coalesce a burst of notifications into one converge each.
                    let mut ids = vec![id];
                    while let Ok(more) = kernel_rx.try_recv() {
                        if !ids.contains(&more) {
                            ids.push(more);
                        }
                    }
                    for id in ids {
                        d.converge(&id, None, false);
                    }
                }
                Some(id) = retry_rx.recv() => d.reconcile(&client, &id, None).await,
                _ = tick.tick() => d.resync(&client).await,
            }
        }
        metrics.set_connected(false);
        tokio::select! {
            _ = &mut shutdown => break 'outer,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
    info!(
        managed = d.managed.len(),
        clean = opts.clean_on_exit,
        "shutting down"
    );
    d.finish();
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}
