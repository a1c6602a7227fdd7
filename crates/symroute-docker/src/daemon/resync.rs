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
//! The engine is shared too: while the event path works (an event, a kernel
//! notification, a retry, a hint's list in flight: [`EventPath::begin`]) and for [`QUIET`] after, the task
//! asks the engine nothing new, so the event path's own inspect never queues behind
//! the resync's at a busy engine (Podman serves an inspect in milliseconds, each
//! under its state lock), nor the engine's start of the next container of a burst.
//! At most one resync call is in flight when an event comes. A stream of events
//! holds each of the task's calls back [`MAX_YIELD`] at most, so a resync still ends.
//!
//! The engine's list is the truth: what is managed and no longer running is
//! released, every running container is reconciled. An answer the task got
//! before the event path handled the same container is older than what the
//! loop knows and is dropped (the clock of [`Daemon::touch`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::unix_nanos;
use tokio::sync::{Notify, mpsc};
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

/// How long after the event path last worked the resync task stays quiet.
pub const QUIET: Duration = Duration::from_millis(20);

/// The longest the resync task holds back one engine call for the event path.
pub const MAX_YIELD: Duration = Duration::from_millis(100);

/// What the event path is doing, as the resync task sees it.
#[derive(Debug, Default)]
pub(crate) struct EventPath {
    /// Event-path work under way ([`EventPath::begin`] guards).
    busy: AtomicUsize,
    /// When the last of it ended.
    last: Mutex<Option<tokio::time::Instant>>,
    /// Woken at each end.
    ended: Notify,
}

/// Event-path work under way; ends when dropped.
pub(crate) struct EventWork<'a>(&'a EventPath);

impl Drop for EventWork<'_> {
    fn drop(&mut self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Some(tokio::time::Instant::now());
        }
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

impl EventPath {
    /// The event path starts working (an engine event, a kernel notification, a retry).
    pub(crate) fn begin(&self) -> EventWork<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        EventWork(self)
    }

    /// Return once the event path has been idle for [`QUIET`], or after
    /// [`MAX_YIELD`] at the latest.
    async fn idle(&self) {
        let deadline = tokio::time::Instant::now() + MAX_YIELD;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the state is read: an end in between still wakes us.
            ended.as_mut().enable();
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let wake = if self.busy.load(Ordering::SeqCst) > 0 {
                deadline
            } else {
                let last = self.last.lock().ok().and_then(|l| *l);
                match last {
                    Some(t) if t + QUIET > now => (t + QUIET).min(deadline),
                    _ => return,
                }
            };
            tokio::select! {
                () = &mut ended => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

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
        /// When the task started (CLOCK_REALTIME ns, and monotonic).
        started_ns: i64,
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

/// Start a resync against `api`, yielding to `path`.
pub(crate) fn start<A: EngineApi>(api: &A, clock: Arc<AtomicU64>, path: Arc<EventPath>) -> Resync {
    let (tx, rx) = mpsc::channel(AHEAD);
    let api = api.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let started_ns = unix_nanos();
        path.idle().await;
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
            path.idle().await;
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
        let _ = tx
            .send(ResyncMsg::Done {
                count,
                started_ns,
                started,
            })
            .await;
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
                let touched = &self.touched;
                self.skipped
                    .retain(|k| running.contains(k) || touched.get(k).is_some_and(|t| *t > at));
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
            ResyncMsg::Done {
                count,
                started_ns,
                started,
            } => {
                // From the engine's list asked for to the last answer applied.
                let took = started.elapsed();
                self.metrics.resynced(took);
                debug!(
                    running = count,
                    managed = self.managed.len(),
                    took_ms = took.as_secs_f64() * 1e3,
                    start_unix_ns = started_ns,
                    end_unix_ns = unix_nanos(),
                    "resynced"
                );
                false
            }
        }
    }
}
