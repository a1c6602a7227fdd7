//! The periodic (and after every reconnect) resync, off the event path.
//!
//! A separate task asks the engine (the list of running containers, then
//! one inspect after another) and hands each answer to the loop over a
//! small channel; the loop applies them one at a time, between events, at
//! the lowest priority (the loop's `select!` is biased: shutdown, engine
//! events, kernel notifications and retries first). So an event never waits
//! for a resync, only, at worst, for the one container being applied, which
//! is a few netlink round trips under that namespace's lock.
//!
//! The engine's list is the truth: what is managed and no longer running is
//! released, every running container is reconciled. An answer the task got
//! before the event path handled the same container is older than what the
//! loop knows and is dropped (the clock of [`Daemon::touch`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::container::Daemon;
use super::namespaces::Namespaces;
use crate::client::DockerError;
use crate::engine_api::EngineApi;
use crate::model::ContainerInfo;

/// How many answers the task may have ready before the loop takes them:
/// small, so what the loop applies was asked for just before.
const AHEAD: usize = 4;

/// What the resync task hands to the loop. `at` is the event-path clock
/// read just before the engine was asked.
pub(crate) enum ResyncMsg {
    Listed {
        ids: Vec<String>,
        at: u64,
    },
    Inspected {
        id: String,
        at: u64,
        result: Result<ContainerInfo, DockerError>,
    },
    Failed(DockerError),
    Done {
        count: usize,
        /// When the task started (before asking for the list).
        started: Instant,
    },
}

/// A running resync: its task (aborted when dropped, e.g. on reconnect or
/// shutdown) and where its answers arrive.
pub(crate) struct Resync {
    task: JoinHandle<()>,
    pub(crate) rx: mpsc::Receiver<ResyncMsg>,
}

impl Drop for Resync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a resync against `api`.
pub(crate) fn start<A: EngineApi>(api: &A, clock: Arc<AtomicU64>) -> Resync {
    let (tx, rx) = mpsc::channel(AHEAD);
    let api = api.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let at = clock.load(Ordering::SeqCst);
        let ids = match api.running().await {
            Ok(ids) => ids,
            Err(e) => {
                let _ = tx.send(ResyncMsg::Failed(e)).await;
                return;
            }
        };
        let count = ids.len();
        if tx
            .send(ResyncMsg::Listed {
                ids: ids.clone(),
                at,
            })
            .await
            .is_err()
        {
            return;
        }
        for id in ids {
            let at = clock.load(Ordering::SeqCst);
            let result = api.inspect(&id).await;
            if tx
                .send(ResyncMsg::Inspected { id, at, result })
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(ResyncMsg::Done { count, started }).await;
    });
    Resync { task, rx }
}

/// The next answer of the running resync; pending forever when none runs.
pub(crate) async fn next(r: &mut Option<Resync>) -> Option<ResyncMsg> {
    match r {
        Some(r) => r.rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<N: Namespaces> Daemon<N> {
    /// Apply one answer of the resync task. Returns false when the resync
    /// is over.
    pub(crate) fn on_resync(&mut self, msg: ResyncMsg) -> bool {
        match msg {
            ResyncMsg::Failed(e) => {
                self.metrics.error();
                warn!(error = %e, "resync: cannot list containers");
                false
            }
            ResyncMsg::Listed { ids, at } => {
                let running: HashSet<&String> = ids.iter().collect();
                let gone: Vec<String> = self
                    .managed
                    .keys()
                    .filter(|k| !running.contains(k) && !self.is_stale(k, at))
                    .cloned()
                    .collect();
                for id in gone {
                    self.release(&id, "no longer running");
                }
                // Touches up to `at` cannot make this or any later answer stale.
                self.touched.retain(|_, t| *t > at);
                true
            }
            ResyncMsg::Inspected { id, at, result } => {
                if self.is_stale(&id, at) {
                    debug!(container = %super::container::short(&id), "resync: the event path was newer");
                } else {
                    self.reconcile_with(&id, result, None);
                }
                true
            }
            ResyncMsg::Done { count, started } => {
                let took = started.elapsed();
                self.metrics.resynced(took);
                let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                debug!(
                    running = count,
                    managed = self.managed.len(),
                    took_ms,
                    "resynced"
                );
                false
            }
        }
    }
}
