//! Per-container state and work: which containers are managed (each with
//! its open namespace), the retry backoff of the ones that failed, and the
//! inspect → decide → lock → snapshot → plan → apply of one container.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::metrics::{Metrics, Outcome};
use super::namespaces::{Namespaces, NsHandle};
use super::{DaemonOptions, unix_nanos};
use crate::client::{DockerError, Event, EventKind};
use crate::engine_api::{EngineApi, EngineVersion};
use crate::model::{ContainerInfo, Decision, decide, plan_request};
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::kernel::Kernel;

/// How long an apply waits for another writer (CLI, CNI plugin) to release
/// a namespace's lock: not at all (one try), since the event loop would
/// wait with it; a busy namespace is tried again [`BUSY_RETRY`] later.
pub const LOCK_WAIT: Duration = Duration::ZERO;

/// The retry of a container whose namespace another writer held.
pub const BUSY_RETRY: Duration = Duration::from_millis(25);

/// How long `--clean-on-exit` waits for another writer, per namespace.
pub const CLEAN_LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long before an event's timestamp an apply may have made the change
/// that event asked for (a kernel notification of the new interface, a
/// Podman hint): it then counts as that event's latency (as 0 when before).
const LATENCY_BEFORE: i64 = 1_000_000_000;

/// The first retry after a failure; doubles per consecutive failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// The delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, … 60 s.
pub fn retry_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(6);
    (RETRY_FIRST * (1u32 << shift)).min(RETRY_MAX)
}

/// A container whose namespace symroute manages.
pub(crate) struct Managed<H> {
    pub(crate) info: ContainerInfo,
    pub(crate) handle: H,
    /// When an apply last changed something here (CLOCK_REALTIME ns; 0: never).
    pub(crate) changed_ns: i64,
    /// When a hint found it, if its `start` event has not come since
    /// (CLOCK_REALTIME ns): a `die` stamped before that is the previous
    /// run's (a restart), late, not this one's.
    pub(crate) hinted_ns: Option<i64>,
}

/// The daemon's state between events.
pub(crate) struct Daemon<N: Namespaces> {
    pub(crate) opts: DaemonOptions,
    pub(crate) namespaces: N,
    pub(crate) managed: HashMap<String, Managed<N::Handle>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) kernel_tx: mpsc::Sender<String>,
    pub(crate) retry_tx: mpsc::Sender<String>,
    /// Consecutive failures per container, for the retry backoff.
    pub(crate) failures: HashMap<String, u32>,
    /// A counter advanced by every container handled on the event path,
    /// read by the resync task before each engine call.
    pub(crate) clock: Arc<AtomicU64>,
    /// The clock when each container was last handled on the event path.
    pub(crate) touched: HashMap<String, u64>,
    /// Running containers the policy leaves alone for their whole life
    /// (network mode, label): a hint's list does not inspect them again.
    pub(crate) skipped: HashSet<String>,
}

pub(crate) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

impl<N: Namespaces> Daemon<N> {
    pub(crate) fn new(
        opts: DaemonOptions,
        namespaces: N,
        metrics: Arc<Metrics>,
        kernel_tx: mpsc::Sender<String>,
        retry_tx: mpsc::Sender<String>,
    ) -> Self {
        Daemon {
            opts,
            namespaces,
            managed: HashMap::new(),
            metrics,
            kernel_tx,
            retry_tx,
            failures: HashMap::new(),
            clock: Arc::new(AtomicU64::new(0)),
            touched: HashMap::new(),
            skipped: HashSet::new(),
        }
    }

    /// Stop managing a container: its namespace handle (sockets, watcher,
    /// namespace file) is dropped here.
    pub(crate) fn release(&mut self, id: &str, why: &str) {
        self.failures.remove(id);
        if let Some(m) = self.managed.remove(id) {
            info!(container = %m.info.label(), reason = why, "released");
        }
        self.metrics.set_managed(self.managed.len());
    }

    fn send_later(&self, id: &str, delay: Duration) {
        let tx = self.retry_tx.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(id).await;
        });
    }

    /// Ask again later (a container between states, a transient error):
    /// after 1 s, doubling per consecutive failure up to 60 s; the periodic
    /// resync covers the rest.
    fn retry_later(&mut self, id: &str) {
        let n = self.failures.entry(id.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let delay = retry_delay(*n);
        self.send_later(id, delay);
    }

    /// Inspect a container and converge it. `since` is the triggering
    /// event's timestamp, for the latency metric.
    pub(crate) async fn reconcile<A: EngineApi>(&mut self, api: &A, id: &str, since: Option<i64>) {
        self.touch(id);
        let result = api.inspect(id).await;
        self.reconcile_with(id, result, since);
    }

    /// Mark `id` as handled on the event path now: a resync answer
    /// inspected before this moment is older than what the event path
    /// knows, and is dropped ([`Daemon::is_stale`]).
    pub(crate) fn touch(&mut self, id: &str) {
        let now = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        self.touched.insert(id.to_string(), now);
    }

    /// Whether what the resync learnt about `id` at clock `at` is older
    /// than what the event path has handled since.
    pub(crate) fn is_stale(&self, id: &str, at: u64) -> bool {
        self.touched.get(id).is_some_and(|t| *t > at)
    }

    /// Converge a container from an inspect answer (`result`).
    pub(crate) fn reconcile_with(
        &mut self,
        id: &str,
        result: Result<ContainerInfo, DockerError>,
        since: Option<i64>,
    ) {
        let info = match result {
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
                // Network mode and labels do not change while it lives.
                if info.running && info.pid.is_some() {
                    self.skipped.insert(info.id.clone());
                }
                if self.managed.contains_key(&info.id) {
                    self.release(&info.id, &reason);
                } else {
                    debug!(container = %info.label(), reason = %reason, "not managed");
                }
                return;
            }
        }
        if !self.open(&info) {
            return;
        }
        self.converge(&info.id, since, true);
    }

    /// Make sure `info`'s namespace is open and cached under its id, with
    /// `info` as the cached inspect answer. False when it is not to be
    /// converged (gone, or another container's namespace already managed).
    fn open(&mut self, info: &ContainerInfo) -> bool {
        let paths = info.netns_paths();
        // Managed, and its namespace is still the one we hold: keep it.
        if let Some(m) = self.managed.get_mut(&info.id)
            && self.namespaces.still_at(&m.handle, &paths)
        {
            m.info = info.clone();
            return true;
        }
        let handle = match self
            .namespaces
            .open(&paths, &info.id, self.kernel_tx.clone())
        {
            Ok(h) => h,
            Err(e) => {
                // The container died between inspect and here.
                self.metrics.error();
                warn!(container = %info.label(), error = %e, "namespace not reachable");
                self.release(&info.id, "namespace gone");
                return false;
            }
        };
        let ns_id = handle.id();
        if let Some(other) = self
            .managed
            .iter()
            .find(|(k, m)| **k != info.id && m.handle.id() == ns_id)
            .map(|(_, m)| m.info.label())
        {
            debug!(container = %info.label(), shares_with = %other, "namespace already managed");
            return false;
        }
        match self.managed.get_mut(&info.id) {
            // Same namespace as before: keep the handle we have (its watcher
            // is already following), drop the new one.
            Some(m) if m.handle.id() == ns_id => m.info = info.clone(),
            _ => {
                self.managed.insert(
                    info.id.clone(),
                    Managed {
                        info: info.clone(),
                        handle,
                        changed_ns: 0,
                        hinted_ns: None,
                    },
                );
                self.metrics.set_managed(self.managed.len());
            }
        }
        true
    }

    /// Apply the plan to a managed container from what is cached about it,
    /// under the namespace's lock. `fresh`: the cache was just read from the
    /// engine. Otherwise (a kernel notification) the engine's own event may
    /// still be on its way: an interface that vanished in a `network
    /// disconnect` is expected, not worth a warning.
    pub(crate) fn converge(&mut self, id: &str, since: Option<i64>, fresh: bool) {
        let settings = self.opts.settings;
        let Some(m) = self.managed.get_mut(id) else {
            return;
        };
        let start = Instant::now();
        let info = &m.info;
        let result = m.handle.locked(LOCK_WAIT, |kernel| {
            let snap = kernel.snapshot()?;
            let (request, warnings) = plan_request(info, &snap);
            for w in warnings {
                if fresh {
                    warn!(container = %info.label(), "{w}");
                } else {
                    debug!(container = %info.label(), "{w} (Docker's event may follow)");
                }
            }
            let opts = ApplyOptions {
                settings,
                request,
                dad_wait: Duration::ZERO,
                ..ApplyOptions::default()
            };
            engine::apply_to(kernel, snap, &opts)
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
        let rep = match result {
            Ok(Ok(rep)) => rep,
            Ok(Err(e)) => {
                self.metrics.reconcile(Outcome::Error);
                self.metrics.error();
                warn!(container = %label, networks = %networks, error = %e, "reconcile failed; will retry");
                self.retry_later(id);
                return;
            }
            Err(e) if e.is_busy() => {
                debug!(container = %label, error = %e, "namespace busy; trying again shortly");
                self.send_later(id, BUSY_RETRY);
                return;
            }
            Err(e) => {
                self.metrics.reconcile(Outcome::Error);
                self.metrics.error();
                warn!(container = %label, error = %e, "cannot lock the namespace; will retry");
                self.retry_later(id);
                return;
            }
        };
        self.failures.remove(id);
        let outcome = if rep.ops.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Changed
        };
        self.metrics.reconcile(outcome);
        let now = unix_nanos();
        if !rep.ops.is_empty() {
            m.changed_ns = now;
        }
        // From the event to the rules in the kernel. An event that finds its
        // container converged already (by a hint, or a kernel notification
        // just before it) counts until that apply, not until its own late
        // arrival; one that needed nothing at all counts nothing.
        if let Some(t) = since.filter(|t| *t > 0) {
            let done = if rep.ops.is_empty() {
                Some(m.changed_ns).filter(|c| *c > t.saturating_sub(LATENCY_BEFORE))
            } else {
                Some(now)
            };
            if let Some(done) = done {
                let lat = u64::try_from(done.saturating_sub(t)).unwrap_or(0);
                self.metrics.latency(Duration::from_nanos(lat));
            }
        }
        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if rep.plan.unmanaged_reason.is_some() && rep.ops.is_empty() {
            debug!(container = %label, networks = %networks, "single-homed: nothing to do");
        } else if rep.ops.is_empty() {
            debug!(container = %label, networks = %networks, took_us, "in sync");
        } else {
            let changes: Vec<String> = rep
                .ops
                .iter()
                .map(|o| symroute_core::report::op_text(o, &rep.snapshot))
                .collect();
            info!(
                container = %label,
                networks = %networks,
                changes = changes.len(),
                detail = %changes.join("; "),
                took_us,
                "converged"
            );
        }
    }

    pub(crate) async fn on_event<A: EngineApi>(&mut self, api: &A, e: Event) {
        self.metrics.event();
        self.touch(&e.container);
        match e.kind {
            EventKind::Start => {
                self.reconcile(api, &e.container, Some(e.time_nano)).await;
                if let Some(m) = self.managed.get_mut(&e.container) {
                    m.hinted_ns = None;
                }
            }
            // A container being created or started gets its connects before
            // its namespace exists (and inspect would wait for the start to
            // finish): new containers are handled on `start`, running ones here.
            EventKind::Connect | EventKind::Disconnect => {
                if self.managed.contains_key(&e.container) {
                    self.reconcile(api, &e.container, Some(e.time_nano)).await;
                } else {
                    debug!(container = %short(&e.container), "network change of a container not managed (yet)");
                }
            }
            EventKind::Die => {
                let earlier = self
                    .managed
                    .get(&e.container)
                    .and_then(|m| m.hinted_ns)
                    .is_some_and(|h| e.time_nano > 0 && e.time_nano < h);
                if earlier {
                    debug!(container = %short(&e.container), "the previous run's die, after a hint found this one");
                } else {
                    self.release(&e.container, "died");
                }
            }
            EventKind::Destroy => {
                self.skipped.remove(&e.container);
                self.release(&e.container, "destroyed");
            }
        }
    }

    /// The engine's list, asked for because its namespace folder changed
    /// ([`super::hint`]): converge every running container not known yet,
    /// as its `start` event would, inspecting it the engine's quickest way
    /// ([`EngineApi::inspect_quick`]: libpod's on Podman).
    pub(crate) async fn on_hint<A: EngineApi>(
        &mut self,
        api: &A,
        listed: super::hint::Listed,
        engine: &EngineVersion,
    ) {
        let ids = match listed {
            Ok(ids) => ids,
            Err(e) => {
                debug!(error = %e, "hint: cannot list containers; the events will tell");
                return;
            }
        };
        for (id, early) in ids {
            // Known, left alone, or failing (its retry is scheduled already).
            if self.managed.contains_key(&id)
                || self.skipped.contains(&id)
                || self.failures.contains_key(&id)
            {
                continue;
            }
            let result = match early {
                // The event path handled it after this inspect was asked for.
                Some(e) if self.is_stale(&id, e.at) => {
                    debug!(container = %short(&id), "hint: an inspect older than its events; dropped");
                    continue;
                }
                Some(e) => {
                    debug!(container = %short(&id), early = true, "hint: a start before its event");
                    self.touch(&id);
                    (Ok(e.info), e.answered_ns)
                }
                None => {
                    debug!(container = %short(&id), early = false, "hint: a start before its event");
                    self.touch(&id);
                    let r = api.inspect_quick(&id, engine).await;
                    (r, unix_nanos())
                }
            };
            let (result, answered_ns) = result;
            self.reconcile_with(&id, result, None);
            // A die stamped before that answer is an earlier run's.
            if let Some(m) = self.managed.get_mut(&id) {
                m.hinted_ns = Some(answered_ns);
            }
        }
    }

    /// On shutdown: with --clean-on-exit remove symroute's rules and routes
    /// from every managed namespace (under its lock), then let go of all.
    pub(crate) fn finish(&mut self) {
        if self.opts.clean_on_exit {
            let settings = self.opts.settings;
            for m in self.managed.values_mut() {
                let label = m.info.label();
                match m
                    .handle
                    .locked(CLEAN_LOCK_WAIT, |k| engine::clean(k, &settings))
                {
                    Ok(Ok(r)) => {
                        info!(container = %label, removed = r.removed.len(), "cleaned on exit");
                    }
                    Ok(Err(e)) => warn!(container = %label, error = %e, "clean on exit failed"),
                    Err(e) => warn!(container = %label, error = %e, "clean on exit failed"),
                }
            }
        }
        self.managed.clear();
        self.metrics.set_managed(0);
    }
}
