//! The daemon's one loop: connect (with backoff), subscribe to events, then
//! resync, and from then on act on events, kernel notifications, retries,
//! hints (Podman's namespace folder, [`super::hint`]) and the periodic
//! resync until the engine goes away (reconnect) or shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, trace, warn};

use super::container::Daemon;
use super::hint::{self, FolderWatch, HintList, NetnsFolder};
use super::metrics::Metrics;
use super::namespaces::Namespaces;
use super::resync;
use super::{DaemonOptions, unix_nanos};
use crate::engine_api::{Connector, EngineApi, EngineVersion};

/// The first reconnect delay; doubles per failed attempt.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(250);
/// The longest reconnect delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Watch `folder` again (it did not exist, or went away), quietly when it
/// still cannot be.
fn rewatch(folder: Option<&NetnsFolder>) -> Option<FolderWatch> {
    let f = folder?;
    let w = FolderWatch::new(f.path()).ok()?;
    info!(folder = %f.path().display(), "watching the engine's namespace folder for starts");
    Some(w)
}

pub(crate) async fn serve<C: Connector, N: Namespaces>(
    opts: DaemonOptions,
    connector: &C,
    namespaces: N,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let (kernel_tx, mut kernel_rx) = mpsc::channel::<String>(1024);
    let (retry_tx, mut retry_rx) = mpsc::channel::<String>(1024);
    let mut d = Daemon::new(
        opts.clone(),
        namespaces,
        metrics.clone(),
        kernel_tx,
        retry_tx,
    );
    // What the resync task yields to.
    let path = Arc::new(resync::EventPath::default());
    tokio::pin!(shutdown);
    let mut backoff = RECONNECT_FIRST;
    'outer: loop {
        let api = tokio::select! {
            () = &mut shutdown => break 'outer,
            c = connector.connect() => c,
        };
        let api = match api {
            Ok(c) => c,
            Err(e) => {
                metrics.error();
                metrics.set_connected(false);
                error!(error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "cannot reach Docker");
                tokio::select! {
                    () = &mut shutdown => break 'outer,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = RECONNECT_FIRST;
        let version = match api.version().await {
            Ok(v) => {
                info!(
                    socket = %api.endpoint(),
                    via = api.endpoint_source(),
                    engine = %v.name,
                    version = %v.version,
                    api = %v.api_version,
                    "connected to Docker"
                );
                Some(v)
            }
            Err(e) => {
                info!(socket = %api.endpoint(), via = api.endpoint_source(), error = %e, "connected to Docker");
                None
            }
        };
        // The engine's namespace folder (Podman: its events can come 250 ms late).
        let folder = match &version {
            Some(v) => api.netns_folder(v).await,
            None => None,
        };
        let folder = match folder {
            Some(Ok(f)) => Some(f),
            Some(Err(why)) => {
                info!(reason = %why, "not watching the engine's namespace folder; starts are seen from its events");
                None
            }
            None => None,
        };
        let mut watch = folder.as_ref().and_then(|f| match FolderWatch::new(f.path()) {
            Ok(w) => {
                info!(folder = %f.path().display(), "watching the engine's namespace folder for starts");
                Some(w)
            }
            Err(e) => {
                info!(folder = %f.path().display(), error = %e, "cannot watch the engine's namespace folder yet; looked for again after each start and resync");
                None
            }
        });
        // No version, no folder: then no hint is ever asked for.
        let mut hints = HintList::new(
            version.clone().unwrap_or_else(|| EngineVersion {
                name: String::new(),
                version: String::new(),
                api_version: String::new(),
            }),
            d.clock.clone(),
        );
        // A hint's list in flight is event-path work: the resync holds back for it.
        let mut hint_work = None;
        // After the line that says so: whoever sees the gauge at 1 finds it.
        metrics.set_connected(true);
        // The messages say "Docker" for Podman too (the engine field tells
        // which): scripts and the tests match them exactly.
        // Subscribe first, then resync: nothing that happens in between is lost.
        let mut events = api.events();
        let mut resync = Some(resync::start(&api, d.clock.clone(), path.clone()));
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + opts.resync_interval,
            opts.resync_interval,
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if hints.in_flight() {
                hint_work.get_or_insert_with(|| path.begin());
            } else {
                hint_work = None;
            }
            // Biased: the event path (engine events, kernel notifications,
            // retries) always goes before the resync's next container, and
            // the resync task asks the engine nothing while it works.
            tokio::select! {
                biased;
                () = &mut shutdown => break 'outer,
                ev = events.next() => match ev {
                    Some(Ok(e)) => {
                        let _work = path.begin();
                        // When the engine's event reached the daemon (its delivery
                        // is the engine's share of the latency; benchmarks read it).
                        debug!(
                            container = %e.container,
                            kind = ?e.kind,
                            time_nano = e.time_nano,
                            received_unix_ns = unix_nanos(),
                            "event received"
                        );
                        let start = e.kind == crate::client::EventKind::Start;
                        d.on_event(&api, e).await;
                        // A folder that did not exist at connect (Podman makes it with
                        // its first container) exists after a start.
                        if start && watch.is_none() {
                            watch = rewatch(folder.as_ref());
                        }
                    }
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
                    let _work = path.begin();
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
                Some(id) = retry_rx.recv() => {
                    let _work = path.begin();
                    d.reconcile(&api, &id, None).await;
                }
                (listed, asked_unix_ns) = hints.answer(&api) => {
                    let _work = path.begin();
                    // When the hint's list was asked for and answered (benchmarks read it).
                    debug!(
                        asked_unix_ns,
                        answered_unix_ns = unix_nanos(),
                        listed = listed.as_ref().map_or(0, Vec::len),
                        early = listed.as_ref().map_or(0, |l| l.iter().filter(|(_, e)| e.is_some()).count()),
                        "hint answered"
                    );
                    if let Some(v) = &version {
                        d.on_hint(&api, listed, v).await;
                    }
                }
                // Not read while a list is already due: nothing more to learn there,
                // and a folder that changes without end cannot starve the rest.
                changed = hint::next(&watch), if !hints.queued() => match changed {
                    Ok(Some(created)) => {
                        hints.hint(&api);
                        // Opened while the engine is still starting the container.
                        if let Some(f) = folder.as_ref() {
                            for name in created {
                                d.namespaces.prepare(f.path().join(name));
                            }
                        }
                    }
                    Ok(None) => {
                        info!("the engine's namespace folder is gone; looked for again after each start and resync");
                        watch = None;
                    }
                    Err(e) => {
                        metrics.error();
                        warn!(error = %e, "cannot read the engine's namespace folder's changes; looked for again after each start and resync");
                        watch = None;
                    }
                },
                msg = resync::next(&mut resync) => {
                    let more = msg.is_some_and(|m| d.on_resync(m));
                    if !more {
                        resync = None;
                    }
                }
                _ = tick.tick() => {
                    // A folder that did not exist yet (no container started since boot).
                    if watch.is_none() {
                        watch = rewatch(folder.as_ref());
                    }
                    if resync.is_some() {
                        trace!("periodic resync: the previous one is still running");
                    } else {
                        resync = Some(resync::start(&api, d.clock.clone(), path.clone()));
                    }
                }
            }
        }
        // A resync of the engine that went away ends here.
        drop(resync);
        drop(hint_work);
        metrics.set_connected(false);
        tokio::select! {
            () = &mut shutdown => break 'outer,
            () = tokio::time::sleep(backoff) => {}
        }
    }
    info!(
        managed = d.managed.len(),
        clean = opts.clean_on_exit,
        "shutting down"
    );
    d.finish();
}
