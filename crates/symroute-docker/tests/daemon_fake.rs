//! The daemon's loop against a scripted Engine API and the fake kernel: no
//! dockerd, no namespaces, no root, no sockets. Time is tokio's paused test
//! clock, so the retry backoff and the reconnect delay are exact and cost no
//! wall time.
//!
//! Each test runs the real `daemon::run_with` beside a script (`tokio::join!`)
//! that plays the engine (containers, events, a restart) and reads the fake
//! kernels and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery, errno_error};
use symroute_core::model::{IfAddr, Link, Route, Rule};
use symroute_core::ownership::{Space, classify};
use symroute_core::settings::Settings;
use symroute_docker::daemon::{
    self, DaemonOptions, Metrics, Namespaces, NetnsFolder, NsAccessError, NsHandle, QUIET,
    RECONNECT_FIRST,
};
use symroute_docker::model::{Attachment, ContainerInfo, NetworkMode};
use symroute_docker::{
    Connector, DockerError, EngineApi, EngineVersion, Event, EventKind, NetworkInfo, Recent,
    plan_request,
};
use symroute_linux::lock::LockError;
use symroute_testkit::fake::FakeKernel;

// ---------------------------------------------------------------------------
// A scripted engine
// ---------------------------------------------------------------------------

#[derive(Default)]
struct EngineState {
    containers: BTreeMap<String, ContainerInfo>,
    /// The open event stream's sender (None: no subscriber, or cut).
    events: Option<mpsc::UnboundedSender<Event>>,
    /// Refuse connections (the engine is down).
    down: bool,
    connects: usize,
    /// Calls of `running` (one per resync).
    lists: usize,
    /// How long each inspect takes (virtual time).
    inspect_delay: Duration,
    /// When each container was inspected.
    inspected: Vec<(String, Instant)>,
    /// The namespace folder the engine says to watch (Podman's hint).
    folder: Option<PathBuf>,
    /// The containers inspected the quick way (a hint's), in order.
    quick: Vec<String>,
    /// Containers a hint's list shows as not running yet (a start in
    /// progress, as Podman 5's list does).
    starting: Vec<String>,
    /// How long each quick inspect takes (virtual time).
    quick_delay: Duration,
}

#[derive(Clone, Default)]
struct FakeEngine(Arc<Mutex<EngineState>>);

impl FakeEngine {
    fn state(&self) -> MutexGuard<'_, EngineState> {
        self.0.lock().expect("engine state")
    }

    /// Put a container in the engine's list (no event).
    fn put(&self, c: ContainerInfo) {
        self.state().containers.insert(c.id.clone(), c);
    }

    fn remove(&self, id: &str) {
        self.state().containers.remove(id);
    }

    fn emit(&self, kind: EventKind, container: &str) {
        self.emit_at(kind, container, 0);
    }

    /// An event stamped `time_nano` (CLOCK_REALTIME ns) by the engine.
    fn emit_at(&self, kind: EventKind, container: &str, time_nano: i64) {
        let ev = Event {
            kind,
            container: container.to_string(),
            network: None,
            time_nano,
        };
        let st = self.state();
        let tx = st.events.as_ref().expect("the daemon is subscribed");
        tx.send(ev).expect("the daemon reads events");
    }

    /// End the event stream and refuse connections (dockerd stopping).
    fn go_down(&self) {
        let mut st = self.state();
        st.down = true;
        st.events = None;
    }

    fn come_up(&self) {
        self.state().down = false;
    }

    /// Subscribed to events, and the resync that follows has asked for the
    /// list of running containers (it runs beside the event path: a
    /// container put in the engine after this is not in its list).
    fn ready(&self) -> bool {
        let st = self.state();
        st.events.is_some() && st.lists > 0
    }

    fn inspections(&self, id: &str) -> Vec<Instant> {
        self.state()
            .inspected
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, t)| *t)
            .collect()
    }
}

fn refused(what: &str) -> DockerError {
    DockerError::Engine {
        what: what.to_string(),
        message: "connection refused".into(),
    }
}

impl EngineApi for FakeEngine {
    fn endpoint(&self) -> String {
        "fake".into()
    }

    async fn version(&self) -> Result<EngineVersion, DockerError> {
        Ok(EngineVersion {
            name: "Docker Engine".into(),
            version: "0.0.0-fake".into(),
            api_version: "1.41".into(),
        })
    }

    async fn running(&self) -> Result<Vec<String>, DockerError> {
        let mut st = self.state();
        if st.down {
            return Err(refused("list containers"));
        }
        st.lists += 1;
        Ok(st
            .containers
            .values()
            .filter(|c| c.running)
            .map(|c| c.id.clone())
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let delay = self.state().inspect_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.state();
        if st.down {
            return Err(refused("inspect"));
        }
        st.inspected.push((id.to_string(), Instant::now()));
        st.containers
            .get(id)
            .cloned()
            .ok_or_else(|| DockerError::NoSuchContainer(id.to_string()))
    }

    async fn recent(
        &self,
        _limit: usize,
        _engine: &EngineVersion,
    ) -> Result<Vec<Recent>, DockerError> {
        let mut st = self.state();
        if st.down {
            return Err(refused("list containers"));
        }
        st.lists += 1;
        let starting = st.starting.clone();
        Ok(st
            .containers
            .values()
            .filter(|c| c.running || starting.contains(&c.id))
            .map(|c| Recent {
                id: c.id.clone(),
                running: !starting.contains(&c.id),
            })
            .collect())
    }

    async fn inspect_quick(
        &self,
        id: &str,
        _engine: &EngineVersion,
    ) -> Result<ContainerInfo, DockerError> {
        let delay = {
            let mut st = self.state();
            st.quick.push(id.to_string());
            st.quick_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inspect(id).await
    }

    async fn network(&self, id: &str) -> Result<NetworkInfo, DockerError> {
        Err(DockerError::NoSuchNetwork(id.to_string()))
    }

    async fn netns_folder(&self, _engine: &EngineVersion) -> Option<Result<NetnsFolder, String>> {
        self.state().folder.clone().map(|f| Ok(NetnsFolder::at(f)))
    }

    fn events(&self) -> BoxStream<'static, Result<Event, DockerError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().events = Some(tx);
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        )
        .boxed()
    }
}

impl Connector for FakeEngine {
    type Api = FakeEngine;

    async fn connect(&self) -> Result<FakeEngine, DockerError> {
        let mut st = self.state();
        if st.down {
            return Err(DockerError::Connect {
                path: "fake".into(),
                message: "no such socket".into(),
            });
        }
        st.connects += 1;
        Ok(self.clone())
    }
}

// ---------------------------------------------------------------------------
// Fake namespaces over the fake kernel
// ---------------------------------------------------------------------------

/// One namespace: its fake kernel and what the daemon did with it.
#[derive(Clone)]
struct FakeNs {
    id: (u64, u64),
    kernel: Arc<Mutex<FakeKernel>>,
    /// The lock is held right now.
    locked: Arc<AtomicBool>,
    /// Times the lock was taken.
    locks: Arc<AtomicUsize>,
    /// [`LOCK_SEQ`] when the lock was first taken (0: never).
    first_lock: Arc<AtomicU64>,
    /// Kernel changes made without the lock (must stay 0).
    unlocked_changes: Arc<AtomicUsize>,
    /// The next this-many changes fail with EPERM.
    fail_changes: Arc<AtomicUsize>,
    /// The next this-many lock attempts find another writer holding it.
    busy: Arc<AtomicUsize>,
    /// Open handles.
    handles: Arc<AtomicUsize>,
    /// Where the daemon's handle sends kernel notifications.
    notify: Arc<Mutex<Option<Notifier>>>,
}

/// Every namespace lock taken in this process, in order: tells which
/// container was applied first.
static LOCK_SEQ: AtomicU64 = AtomicU64::new(0);

/// The container id a handle reports for, and where.
type Notifier = (String, mpsc::Sender<String>);

impl FakeNs {
    fn new(n: u64, kernel: FakeKernel) -> FakeNs {
        FakeNs {
            id: (4, 4_026_531_000 + n),
            kernel: Arc::new(Mutex::new(kernel)),
            locked: Arc::default(),
            locks: Arc::default(),
            first_lock: Arc::default(),
            unlocked_changes: Arc::default(),
            fail_changes: Arc::default(),
            busy: Arc::default(),
            handles: Arc::default(),
            notify: Arc::default(),
        }
    }

    fn kernel(&self) -> MutexGuard<'_, FakeKernel> {
        self.kernel.lock().expect("fake kernel")
    }

    /// symroute's rules and routes in this namespace.
    fn tagged(&self) -> (Vec<Rule>, Vec<Route>) {
        owned(&self.kernel())
    }

    fn handles(&self) -> usize {
        self.handles.load(Ordering::SeqCst)
    }

    /// The kernel told the daemon's handle that links or addresses changed.
    async fn notify(&self) {
        let n = self.notify.lock().expect("notify").clone();
        let (id, tx) = n.expect("the daemon opened this namespace");
        tx.send(id).await.expect("the daemon reads notifications");
    }
}

#[derive(Clone, Default)]
struct FakeNamespaces {
    by_path: Arc<Mutex<HashMap<String, FakeNs>>>,
    /// Every path the daemon opened (or tried to).
    opened: Arc<Mutex<Vec<String>>>,
}

impl FakeNamespaces {
    fn add(&self, path: &str, ns: &FakeNs) {
        self.by_path
            .lock()
            .expect("namespaces")
            .insert(path.to_string(), ns.clone());
    }

    fn opened(&self) -> Vec<String> {
        self.opened.lock().expect("opened").clone()
    }
}

struct FakeHandle {
    path: String,
    ns: FakeNs,
    kernel: LockedKernel,
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        self.ns.handles.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fake kernel as the daemon's handle reaches it: records whether each
/// change happens under the lock, fails changes on request.
struct LockedKernel(FakeNs);

impl Kernel for LockedKernel {
    fn snapshot(&mut self) -> Result<symroute_core::model::Snapshot, KernelError> {
        self.0.kernel().snapshot()
    }

    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        if !self.0.locked.load(Ordering::SeqCst) {
            self.0.unlocked_changes.fetch_add(1, Ordering::SeqCst);
        }
        let fail = self.0.fail_changes.load(Ordering::SeqCst);
        if fail > 0 {
            self.0.fail_changes.store(fail - 1, Ordering::SeqCst);
            return Err(errno_error("injected failure", 1));
        }
        self.0.kernel().execute(op)
    }

    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        self.0.kernel().route_get(q)
    }
}

impl Namespaces for FakeNamespaces {
    type Handle = FakeHandle;

    fn open(
        &self,
        paths: &[String],
        id: &str,
        notify: mpsc::Sender<String>,
    ) -> Result<FakeHandle, NsAccessError> {
        let map = self.by_path.lock().expect("namespaces");
        for path in paths {
            self.opened.lock().expect("opened").push(path.clone());
            if let Some(ns) = map.get(path) {
                ns.handles.fetch_add(1, Ordering::SeqCst);
                *ns.notify.lock().expect("notify") = Some((id.to_string(), notify));
                return Ok(FakeHandle {
                    path: path.clone(),
                    ns: ns.clone(),
                    kernel: LockedKernel(ns.clone()),
                });
            }
        }
        Err(NsAccessError::NoPath { id: id.to_string() })
    }

    /// As the real one: the first path that exists decides.
    fn still_at(&self, handle: &FakeHandle, paths: &[String]) -> bool {
        let map = self.by_path.lock().expect("namespaces");
        paths
            .iter()
            .find_map(|p| map.get(p))
            .is_some_and(|ns| ns.id == handle.ns.id)
    }
}

impl NsHandle for FakeHandle {
    type Kernel = LockedKernel;

    fn id(&self) -> (u64, u64) {
        self.ns.id
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn locked<T>(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&mut LockedKernel) -> T,
    ) -> Result<T, NsAccessError> {
        let busy = self.ns.busy.load(Ordering::SeqCst);
        if busy > 0 {
            self.ns.busy.store(busy - 1, Ordering::SeqCst);
            return Err(LockError::Busy {
                path: PathBuf::from(&self.path),
                waited: wait,
            }
            .into());
        }
        self.ns.locks.fetch_add(1, Ordering::SeqCst);
        let seq = LOCK_SEQ.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self
            .ns
            .first_lock
            .compare_exchange(0, seq, Ordering::SeqCst, Ordering::SeqCst);
        self.ns.locked.store(true, Ordering::SeqCst);
        let out = f(&mut self.kernel);
        self.ns.locked.store(false, Ordering::SeqCst);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Containers: recipe C's "web" (macvlan lan + bridge app_default)
// ---------------------------------------------------------------------------

const LAN_MAC: &str = "02:42:c0:00:02:32";
const APP_MAC: &str = "02:42:ac:12:00:02";

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn link(index: u32, name: &str, mac: &str, addr: &str) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(mac.into()),
        up: true,
        loopback: false,
        addrs: vec![IfAddr {
            net: net(addr),
            global: true,
            tentative: false,
            dad_failed: false,
        }],
    }
}

fn lan_link() -> Link {
    link(2, "eth0", LAN_MAC, "192.0.2.50/24")
}

fn app_link() -> Link {
    link(3, "eth1", APP_MAC, "172.18.0.2/16")
}

fn lan() -> Attachment {
    Attachment {
        network: "lan".into(),
        network_id: "n-lan".into(),
        mac: Some(LAN_MAC.into()),
        ipv4: Some(net("192.0.2.50/24")),
        gateway4: Some(ip("192.0.2.1")),
        ipv6: None,
        gateway6: None,
        gw_priority: 0,
    }
}

fn app() -> Attachment {
    Attachment {
        network: "app_default".into(),
        network_id: "n-app".into(),
        mac: Some(APP_MAC.into()),
        ipv4: Some(net("172.18.0.2/16")),
        gateway4: Some(ip("172.18.0.1")),
        ipv6: None,
        gateway6: None,
        gw_priority: 0,
    }
}

fn container(id: &str, pid: u32, mode: NetworkMode, attachments: Vec<Attachment>) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        name: format!("c-{id}"),
        running: true,
        pid: Some(pid),
        sandbox_key: Some(format!("/var/run/docker/netns/{id}")),
        mode,
        labels: BTreeMap::new(),
        attachments,
        ports: Vec::new(),
    }
}

fn web(id: &str, pid: u32) -> ContainerInfo {
    container(id, pid, NetworkMode::Own("lan".into()), vec![lan(), app()])
}

/// A fresh namespace holding `links` with their connected routes.
fn kernel_with(links: Vec<Link>) -> FakeKernel {
    FakeKernel::with_links(links)
}

/// A new interface appears (a `network connect`): the link, then its
/// addresses, with the connected routes the kernel adds.
fn plug(k: &mut FakeKernel, mut l: Link) {
    let addrs = std::mem::take(&mut l.addrs);
    let index = l.index;
    k.state.links.push(l);
    for a in addrs {
        k.add_addr(index, a);
    }
}

/// What symroute's engine alone makes of `info` in `kernel`: the tagged
/// rules and routes the daemon must leave there.
fn expected(info: &ContainerInfo, kernel: &FakeKernel) -> (Vec<Rule>, Vec<Route>) {
    let mut k = kernel.clone();
    let snap = k.snapshot().expect("fake snapshot");
    let (request, _) = plan_request(info, &snap);
    let opts = ApplyOptions {
        request,
        dad_wait: Duration::ZERO,
        ..ApplyOptions::default()
    };
    engine::apply_to(&mut k, snap, &opts).expect("the plan applies on a copy");
    owned(&k)
}

/// symroute's rules and routes in `kernel` (default settings), sorted.
fn owned(kernel: &FakeKernel) -> (Vec<Rule>, Vec<Route>) {
    let own = classify(&kernel.state, &Space::of(&Settings::default()));
    let mut rules: Vec<Rule> = own.rules;
    let mut routes: Vec<Route> = own.routes;
    rules.sort();
    routes.sort();
    (rules, routes)
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

/// A scripted engine with no containers, no namespaces yet, and the metrics
/// a daemon run reports into.
fn world() -> (FakeEngine, FakeNamespaces, Arc<Metrics>) {
    (
        FakeEngine::default(),
        FakeNamespaces::default(),
        Arc::new(Metrics::default()),
    )
}

/// Namespace `n` holding recipe C's two links (eth0 on lan, eth1 on
/// app_default), which the daemon finds at `path`.
fn web_ns(spaces: &FakeNamespaces, n: u64, path: &str) -> FakeNs {
    let ns = FakeNs::new(n, kernel_with(vec![lan_link(), app_link()]));
    spaces.add(path, &ns);
    ns
}

/// Container `id` (recipe C's "web", pid `pid`) running in the engine before
/// the daemon starts; what symroute must leave in its namespace `ns`.
fn running_web(engine: &FakeEngine, ns: &FakeNs, id: &str, pid: u32) -> (Vec<Rule>, Vec<Route>) {
    let info = web(id, pid);
    let want = expected(&info, &ns.kernel());
    engine.put(info);
    want
}

fn options() -> DaemonOptions {
    DaemonOptions {
        docker_host: None,
        resync_interval: Duration::from_secs(60),
        require_label: false,
        metrics_listen: None,
        clean_on_exit: false,
        settings: Settings::default(),
    }
}

/// A value of the metrics text.
fn metric(m: &Metrics, name: &str) -> f64 {
    let text = m.render();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// Let the daemon work until `done` (virtual time: at most 30 s of it).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not get there in 30 s (virtual): {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Let the daemon run for `d` (virtual).
async fn idle(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Run the daemon with `opts`, reporting into `metrics`, beside `script`;
/// shut it down when the script ends.
async fn with_daemon(
    opts: DaemonOptions,
    engine: &FakeEngine,
    namespaces: &FakeNamespaces,
    metrics: &Arc<Metrics>,
    script: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let daemon = daemon::run_with(opts, engine, namespaces.clone(), metrics.clone(), async {
        let _ = stop_rx.await;
    });
    let script = async {
        script.await;
        let _ = stop_tx.send(());
    };
    let (result, ()) = tokio::join!(daemon, script);
    result.expect("the daemon ran");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn start_event_converges_the_container_under_the_lock() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let info = web("web1", 101);
    let want = expected(&info, &ns.kernel());
    assert!(
        !want.0.is_empty() && !want.1.is_empty(),
        "the plan has rules and routes"
    );
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 0.0);
        engine.put(info.clone());
        engine.emit(EventKind::Start, "web1");
        until("rules in web1", || ns.tagged() == want).await;
        let (rules, routes) = ns.tagged();
        for src in ["192.0.2.50/32", "172.18.0.2/32"] {
            assert!(
                rules
                    .iter()
                    .any(|r| r.src == Some(net(src)) && r.priority == Settings::default().priority),
                "a `from {src}` rule at symroute's priority: {rules:?}"
            );
        }
        for gw in ["192.0.2.1", "172.18.0.1"] {
            assert!(
                routes
                    .iter()
                    .any(|r| r.is_default() && r.gateway == Some(ip(gw))),
                "a default route via {gw} in a band table: {routes:?}"
            );
        }
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        assert_eq!(
            metric(&m, "symroute_reconciles_total{outcome=\"changed\"}"),
            1.0
        );
        assert_eq!(metric(&m, "symroute_docker_events_total"), 1.0);
        assert_eq!(metric(&m, "symroute_errors_total"), 0.0);
        assert_eq!(ns.handles(), 1);
        assert!(
            ns.locks.load(Ordering::SeqCst) >= 1,
            "the apply took the lock"
        );
        assert_eq!(
            ns.unlocked_changes.load(Ordering::SeqCst),
            0,
            "every kernel change happened under the namespace lock"
        );
        assert_eq!(
            spaces.opened(),
            vec!["/proc/101/ns/net".to_string()],
            "opened by /proc/PID/ns/net first"
        );
    })
    .await;
    assert_eq!(ns.handles(), 0, "shutdown drops the handle");
    assert_eq!(
        ns.tagged(),
        want,
        "shutdown without --clean-on-exit leaves the rules"
    );
}

#[tokio::test(start_paused = true)]
async fn sandbox_key_is_used_when_the_pid_path_does_not_open() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/var/run/docker/netns/web1");
    let want = running_web(&engine, &ns, "web1", 101);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("rules in web1", || ns.tagged() == want).await;
        assert_eq!(
            spaces.opened(),
            vec![
                "/proc/101/ns/net".to_string(),
                "/var/run/docker/netns/web1".to_string()
            ]
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn connect_and_disconnect_replan_the_container() {
    let (engine, spaces, m) = world();
    let ns = FakeNs::new(1, kernel_with(vec![lan_link()]));
    spaces.add("/proc/101/ns/net", &ns);
    let single = container("web1", 101, NetworkMode::Own("lan".into()), vec![lan()]);
    engine.put(single.clone());
    with_daemon(options(), &engine, &spaces, &m, async {
        until("managed", || {
            metric(&m, "symroute_containers_managed") == 1.0
        })
        .await;
        assert_eq!(ns.tagged(), (vec![], vec![]), "single-homed: nothing to do");

        // docker network connect app_default web1
        plug(&mut ns.kernel(), app_link());
        let two = web("web1", 101);
        let want = expected(&two, &ns.kernel());
        engine.put(two);
        engine.emit(EventKind::Connect, "web1");
        until("rules after connect", || ns.tagged() == want).await;
        assert_eq!(ns.tagged().0.len(), 2, "one rule per address");

        // docker network disconnect app_default web1
        ns.kernel().remove_link(3);
        engine.put(single.clone());
        engine.emit(EventKind::Disconnect, "web1");
        until("rules gone after disconnect", || ns.tagged().0.is_empty()).await;
        assert_eq!(ns.tagged(), (vec![], vec![]));
        assert_eq!(ns.handles(), 1, "still managed, same handle");
        assert_eq!(metric(&m, "symroute_errors_total"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_connect_of_an_unmanaged_container_waits_for_its_start() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        engine.put(web("web1", 101));
        engine.emit(EventKind::Connect, "web1");
        idle(Duration::from_secs(1)).await;
        assert!(
            engine.inspections("web1").is_empty(),
            "not inspected on connect"
        );
        assert!(spaces.opened().is_empty());
        engine.emit(EventKind::Start, "web1");
        until("managed on start", || !ns.tagged().0.is_empty()).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn die_and_destroy_drop_the_namespace_handle() {
    let (engine, spaces, m) = world();
    let ns1 = web_ns(&spaces, 1, "/proc/101/ns/net");
    let ns2 = web_ns(&spaces, 2, "/proc/102/ns/net");
    engine.put(web("web1", 101));
    engine.put(web("web2", 102));
    with_daemon(options(), &engine, &spaces, &m, async {
        until("both managed", || {
            metric(&m, "symroute_containers_managed") == 2.0
        })
        .await;
        assert_eq!((ns1.handles(), ns2.handles()), (1, 1));

        engine.emit(EventKind::Die, "web1");
        until("web1 released", || ns1.handles() == 0).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);

        engine.remove("web2");
        engine.emit(EventKind::Destroy, "web2");
        until("web2 released", || ns2.handles() == 0).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 0.0);
        assert!(!ns1.tagged().0.is_empty(), "a release does not clean");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn restart_gets_a_new_namespace_and_converges_it() {
    let (engine, spaces, m) = world();
    let old = web_ns(&spaces, 1, "/proc/101/ns/net");
    let new = web_ns(&spaces, 2, "/proc/201/ns/net");
    engine.put(web("web1", 101));
    with_daemon(options(), &engine, &spaces, &m, async {
        until("old converged", || !old.tagged().0.is_empty()).await;
        engine.emit(EventKind::Die, "web1");
        engine.put(web("web1", 201));
        engine.emit(EventKind::Start, "web1");
        until("new converged", || !new.tagged().0.is_empty()).await;
        assert_eq!((old.handles(), new.handles()), (0, 1));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn end_of_the_event_stream_reconnects_and_resyncs() {
    let (engine, spaces, m) = world();
    let ns1 = web_ns(&spaces, 1, "/proc/101/ns/net");
    let ns2 = web_ns(&spaces, 2, "/proc/102/ns/net");
    engine.put(web("web1", 101));
    with_daemon(options(), &engine, &spaces, &m, async {
        until("web1 managed", || ns1.handles() == 1).await;
        assert_eq!(engine.state().connects, 1);
        assert_eq!(metric(&m, "symroute_docker_connected"), 1.0);

        // dockerd restarts: while it is down web1 goes away and web2 starts,
        // and no event tells of either.
        let down_at = Instant::now();
        engine.go_down();
        until("disconnected", || {
            metric(&m, "symroute_docker_connected") == 0.0
        })
        .await;
        engine.remove("web1");
        engine.put(web("web2", 102));
        idle(Duration::from_secs(2)).await;
        assert_eq!(ns2.handles(), 0, "nothing is done while the engine is down");
        engine.come_up();
        until("web2 converged by the resync", || {
            !ns2.tagged().0.is_empty()
        })
        .await;
        until("web1 released by the resync", || ns1.handles() == 0).await;
        assert!(engine.state().connects >= 2);
        assert!(Instant::now() - down_at >= RECONNECT_FIRST);
        assert_eq!(metric(&m, "symroute_docker_connected"), 1.0);
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        assert!(
            metric(&m, "symroute_errors_total") >= 1.0,
            "failed connects count"
        );

        // Events flow again on the new stream.
        engine.emit(EventKind::Die, "web2");
        until("web2 released", || ns2.handles() == 0).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_apply_is_retried_with_backoff_per_container() {
    let (engine, spaces, m) = world();
    let bad = web_ns(&spaces, 1, "/proc/101/ns/net");
    let good = web_ns(&spaces, 2, "/proc/102/ns/net");
    let info = web("bad", 101);
    let want = expected(&info, &bad.kernel());
    // The first three applies fail on their first change.
    bad.fail_changes.store(3, Ordering::SeqCst);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        engine.put(info);
        engine.put(web("good", 102));
        engine.emit(EventKind::Start, "bad");
        engine.emit(EventKind::Start, "good");
        until("good converged", || !good.tagged().0.is_empty()).await;
        until("bad converged after three failures", || {
            bad.tagged() == want
        })
        .await;
        let at = engine.inspections("bad");
        assert_eq!(at.len(), 4, "one inspect per attempt: {at:?}");
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, want) in gaps.iter().zip([1u64, 2, 4]) {
            let want = Duration::from_secs(want);
            assert!(
                *gap >= want && *gap < want + Duration::from_millis(50),
                "retry delays double from 1 s: {gaps:?}"
            );
        }
        assert_eq!(
            engine.inspections("good").len(),
            1,
            "the other container is not retried"
        );
        assert_eq!(
            metric(&m, "symroute_reconciles_total{outcome=\"error\"}"),
            3.0
        );
        assert_eq!(metric(&m, "symroute_errors_total"), 3.0);

        // After a success the backoff starts over.
        bad.kernel().set_link_up(3, false);
        bad.kernel().set_link_up(3, true);
        bad.fail_changes.store(1, Ordering::SeqCst);
        let t = Instant::now();
        bad.notify().await;
        until("bad repaired", || bad.tagged() == want).await;
        assert!(
            Instant::now() - t < Duration::from_millis(1100),
            "first retry after 1 s"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_namespace_locked_by_another_writer_is_tried_again_shortly() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let want = running_web(&engine, &ns, "web1", 101);
    ns.busy.store(2, Ordering::SeqCst);
    with_daemon(options(), &engine, &spaces, &m, async {
        let t = Instant::now();
        until("converged once the lock is free", || ns.tagged() == want).await;
        assert!(
            Instant::now() - t < Duration::from_secs(1),
            "not the failure backoff"
        );
        assert_eq!(ns.busy.load(Ordering::SeqCst), 0, "both busy attempts seen");
        assert_eq!(
            metric(&m, "symroute_errors_total"),
            0.0,
            "a busy lock is no error"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_kernel_notification_restores_what_the_kernel_dropped() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let want = running_web(&engine, &ns, "web1", 101);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("converged", || ns.tagged() == want).await;
        // ip link set eth1 down; up: the kernel flushes eth1's routes.
        ns.kernel().set_link_up(3, false);
        ns.kernel().set_link_up(3, true);
        assert_ne!(ns.tagged(), want, "the link flap dropped symroute's route");
        ns.notify().await;
        until("restored", || ns.tagged() == want).await;
        assert_eq!(
            engine.inspections("web1").len(),
            1,
            "repaired from the cache"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn host_none_and_container_modes_are_never_opened() {
    let (engine, spaces, m) = world();
    let owner_ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    engine.put(web("owner", 101));
    engine.put(container("hostnet", 1, NetworkMode::Host, vec![]));
    engine.put(container("nonet", 103, NetworkMode::None, vec![]));
    engine.put(container(
        "sidecar",
        104,
        NetworkMode::Container("owner".into()),
        vec![],
    ));
    with_daemon(options(), &engine, &spaces, &m, async {
        until("owner converged", || !owner_ns.tagged().0.is_empty()).await;
        for id in ["hostnet", "nonet", "sidecar"] {
            engine.emit(EventKind::Start, id);
        }
        until("all inspected", || engine.inspections("sidecar").len() >= 2).await;
        idle(Duration::from_millis(100)).await;
        assert_eq!(
            spaces.opened(),
            vec!["/proc/101/ns/net".to_string()],
            "only the owner's namespace is ever opened"
        );
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        assert_eq!(metric(&m, "symroute_errors_total"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_namespace_shared_by_two_containers_is_managed_once() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    // Two paths to one namespace (a pod's members, say).
    spaces.add("/proc/102/ns/net", &ns);
    engine.put(web("first", 101));
    engine.put(web("second", 102));
    with_daemon(options(), &engine, &spaces, &m, async {
        until("converged", || !ns.tagged().0.is_empty()).await;
        idle(Duration::from_millis(100)).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        assert_eq!(ns.handles(), 1, "the second open was dropped");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn require_label_manages_only_labelled_containers_and_false_opts_out() {
    let (engine, spaces, m) = world();
    let mut nss = Vec::new();
    for (n, id, label) in [
        (1, "plain", None),
        (2, "yes", Some("true")),
        (3, "no", Some("false")),
    ] {
        let pid = 100 + u32::try_from(n).expect("small");
        let ns = web_ns(&spaces, n, &format!("/proc/{pid}/ns/net"));
        let mut c = web(id, pid);
        if let Some(v) = label {
            c.labels.insert("symroute.enable".into(), v.into());
        }
        engine.put(c);
        nss.push(ns);
    }
    let mut opts = options();
    opts.require_label = true;
    let nss2 = nss.clone();
    with_daemon(opts, &engine, &spaces, &m, async {
        until("labelled converged", || !nss2[1].tagged().0.is_empty()).await;
        idle(Duration::from_millis(100)).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        assert!(
            nss2[0].tagged().0.is_empty(),
            "no label: skipped with --require-label"
        );
        assert!(nss2[2].tagged().0.is_empty(), "label false: skipped");
    })
    .await;
    // Without --require-label only the opt-out is skipped.
    let engine2 = FakeEngine::default();
    for c in engine.state().containers.values() {
        engine2.put(c.clone());
    }
    let m = Arc::new(Metrics::default());
    with_daemon(options(), &engine2, &spaces, &m, async {
        until("two managed", || {
            metric(&m, "symroute_containers_managed") == 2.0
        })
        .await;
        assert!(
            !nss[0].tagged().0.is_empty(),
            "unlabelled managed by default"
        );
        assert!(nss[2].tagged().0.is_empty(), "label false still skipped");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn clean_on_exit_removes_the_rules_under_the_lock() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    engine.put(web("web1", 101));
    let mut opts = options();
    opts.clean_on_exit = true;
    let ns2 = ns.clone();
    with_daemon(opts, &engine, &spaces, &m, async {
        until("converged", || !ns2.tagged().0.is_empty()).await;
    })
    .await;
    assert_eq!(ns.tagged(), (vec![], vec![]), "cleaned on exit");
    assert_eq!(ns.unlocked_changes.load(Ordering::SeqCst), 0);
    assert_eq!(ns.handles(), 0);
}

#[tokio::test(start_paused = true)]
async fn periodic_resync_picks_up_a_container_whose_start_was_missed() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let mut opts = options();
    opts.resync_interval = Duration::from_secs(5);
    with_daemon(opts, &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        let t = Instant::now();
        engine.put(web("web1", 101));
        until("converged by the resync", || !ns.tagged().0.is_empty()).await;
        let took = Instant::now() - t;
        assert!(
            took <= Duration::from_secs(5) + Duration::from_millis(10),
            "within one interval: {took:?}"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_start_during_a_resync_of_200_containers_is_handled_before_the_resync_ends() {
    let (engine, spaces, m) = world();
    // 200 running containers, each inspect taking 1 ms: a resync of 200 ms.
    engine.state().inspect_delay = Duration::from_millis(1);
    let mut old = Vec::new();
    for i in 0..200u32 {
        let ns = web_ns(
            &spaces,
            u64::from(i) + 1,
            &format!("/proc/{}/ns/net", 1000 + i),
        );
        engine.put(web(&format!("old{i:03}"), 1000 + i));
        old.push(ns);
    }
    let fresh = web_ns(&spaces, 999, "/proc/999/ns/net");
    let first = |ns: &FakeNs| ns.first_lock.load(Ordering::SeqCst);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("the resync is a quarter through", || {
            old.iter().filter(|n| first(n) > 0).count() >= 50
        })
        .await;
        engine.put(web("fresh", 999));
        engine.emit(EventKind::Start, "fresh");
        until("fresh converged", || first(&fresh) > 0).await;
        until("every container converged", || {
            old.iter().all(|n| first(n) > 0)
        })
        .await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 201.0);
    })
    .await;
    let fresh_at = first(&fresh);
    let after = old.iter().filter(|n| first(n) > fresh_at).count();
    assert!(
        after >= 100,
        "the start went before the rest of the resync: {after} of 200 resynced containers were applied after it"
    );
    assert_eq!(
        engine.inspections("fresh").len(),
        1,
        "the resync's list was taken before the start: fresh is not resynced"
    );
}

#[tokio::test(start_paused = true)]
async fn the_resync_asks_the_engine_nothing_while_a_start_is_handled_nor_just_after() {
    let engine = FakeEngine::default();
    let spaces = FakeNamespaces::default();
    // 200 running containers, each inspect taking 1 ms.
    engine.state().inspect_delay = Duration::from_millis(1);
    let mut old = Vec::new();
    for i in 0..200u32 {
        let ns = FakeNs::new(u64::from(i) + 1, kernel_with(vec![lan_link(), app_link()]));
        spaces.add(&format!("/proc/{}/ns/net", 1000 + i), &ns);
        engine.put(web(&format!("old{i:03}"), 1000 + i));
        old.push(ns);
    }
    let fresh = FakeNs::new(999, kernel_with(vec![lan_link(), app_link()]));
    spaces.add("/proc/999/ns/net", &fresh);
    let m = Arc::new(Metrics::default());
    let first = |ns: &FakeNs| ns.first_lock.load(Ordering::SeqCst);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("the resync is a quarter through", || {
            old.iter().filter(|n| first(n) > 0).count() >= 50
        })
        .await;
        engine.put(web("fresh", 999));
        engine.emit(EventKind::Start, "fresh");
        until("fresh converged", || first(&fresh) > 0).await;
        until("the resync still ends", || old.iter().all(|n| first(n) > 0)).await;
    })
    .await;
    // The end of the start's inspect; its converge takes no virtual time.
    let fresh_done = engine.inspections("fresh")[0];
    let st = engine.state();
    let after: Vec<Instant> = st
        .inspected
        .iter()
        .filter(|(id, t)| id != "fresh" && *t > fresh_done)
        .map(|(_, t)| *t)
        .collect();
    // A resync inspect in flight when the event came ends by `fresh_done`; the next
    // one starts QUIET after the event path's end at the earliest.
    let early = after.iter().filter(|t| **t < fresh_done + QUIET).count();
    assert_eq!(
        early, 0,
        "{early} resync inspects ended within {QUIET:?} of the start's handling"
    );
    assert!(!after.is_empty(), "the resync went on after the start");
}

#[tokio::test(start_paused = true)]
async fn a_rule_deleted_by_hand_is_put_back_on_its_notification() {
    let (engine, spaces, m) = world();
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let want = running_web(&engine, &ns, "web1", 101);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("converged", || ns.tagged() == want).await;
        let locks = ns.locks.load(Ordering::SeqCst);
        // ip rule del from 192.0.2.50 (symroute's).
        let p = Settings::default().protocol.get();
        let gone = net("192.0.2.50/32");
        ns.kernel()
            .state
            .rules
            .retain(|r| !(r.protocol == p && r.src == Some(gone)));
        assert_ne!(ns.tagged(), want, "the rule is gone");
        // The namespace's watch socket hears RTM_DELRULE.
        ns.notify().await;
        until("the rule is back", || ns.tagged() == want).await;
        assert!(
            ns.locks.load(Ordering::SeqCst) > locks,
            "repaired under the lock"
        );
        assert_eq!(
            engine.inspections("web1").len(),
            1,
            "repaired from the cache, no engine call"
        );
        assert_eq!(metric(&m, "symroute_errors_total"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_resync_keeps_the_handle_of_an_unchanged_container_and_reopens_a_changed_one() {
    let engine = FakeEngine::default();
    let spaces = FakeNamespaces::default();
    let old = FakeNs::new(1, kernel_with(vec![lan_link(), app_link()]));
    let new = FakeNs::new(2, kernel_with(vec![lan_link(), app_link()]));
    spaces.add("/proc/101/ns/net", &old);
    spaces.add("/proc/201/ns/net", &new);
    engine.put(web("web1", 101));
    let mut opts = options();
    opts.resync_interval = Duration::from_secs(5);
    let m = Arc::new(Metrics::default());
    with_daemon(opts, &engine, &spaces, &m, async {
        until("converged", || !old.tagged().0.is_empty()).await;
        until("three resyncs", || {
            metric(&m, "symroute_resyncs_total") >= 3.0
        })
        .await;
        assert_eq!(
            spaces.opened(),
            vec!["/proc/101/ns/net".to_string()],
            "opened once, kept through the resyncs"
        );
        assert_eq!(old.handles(), 1);
        // Restarted while its events were missed: a new namespace.
        engine.put(web("web1", 201));
        until("the new one converged by a resync", || {
            !new.tagged().0.is_empty()
        })
        .await;
        assert_eq!((old.handles(), new.handles()), (0, 1));
        assert_eq!(
            metric(&m, "symroute_resync_duration_seconds_count"),
            metric(&m, "symroute_resyncs_total")
        );
    })
    .await;
}

/// A folder of the test's own, removed when dropped.
struct TempFolder(PathBuf);

impl TempFolder {
    fn new(tag: &str) -> TempFolder {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "symroute-daemon-fake-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("mkdir the test's folder");
        TempFolder(p)
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder of the test's own that the engine says to watch (Podman's hint).
fn watched(engine: &FakeEngine, tag: &str) -> TempFolder {
    let folder = TempFolder::new(tag);
    engine.state().folder = Some(folder.0.clone());
    folder
}

#[tokio::test(start_paused = true)]
async fn a_new_file_in_the_engines_namespace_folder_converges_a_start_before_its_event() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "hint");
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let info = web("web1", 101);
    let want = expected(&info, &ns.kernel());
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        let lists = engine.state().lists;
        // Podman: the namespace file appears, the start ends; no event yet.
        engine.put(info.clone());
        std::fs::write(folder.0.join("netns-0d1e"), b"").expect("create the namespace file");
        until("rules in web1 without its event", || ns.tagged() == want).await;
        assert_eq!(engine.state().lists, lists + 1, "one list per hint");
        assert_eq!(
            engine.state().quick,
            vec!["web1".to_string()],
            "inspected the quick way"
        );
        assert_eq!(metric(&m, "symroute_docker_events_total"), 0.0);
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        // The event, late: the container is converged already (no change).
        engine.emit(EventKind::Start, "web1");
        until("the late start handled", || {
            metric(&m, "symroute_reconciles_total{outcome=\"unchanged\"}") >= 1.0
        })
        .await;
        assert_eq!(
            metric(&m, "symroute_reconciles_total{outcome=\"changed\"}"),
            1.0
        );
        assert_eq!(ns.tagged(), want);
        assert_eq!(ns.unlocked_changes.load(Ordering::SeqCst), 0);
        assert_eq!(
            engine.state().quick.len(),
            1,
            "the event's inspect is the usual one"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_hint_inspects_only_running_containers_not_known_yet() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "known");
    let ns1 = web_ns(&spaces, 1, "/proc/101/ns/net");
    let want1 = running_web(&engine, &ns1, "web1", 101);
    // Left alone for its whole life: network mode host.
    engine.put(container("hostnet", 102, NetworkMode::Host, vec![lan()]));
    let ns3 = web_ns(&spaces, 3, "/proc/103/ns/net");
    with_daemon(options(), &engine, &spaces, &m, async {
        until("web1 converged by the first resync", || {
            ns1.tagged() == want1
        })
        .await;
        until("the first resync over", || {
            engine.inspections("hostnet").len() == 1 && metric(&m, "symroute_resyncs_total") >= 1.0
        })
        .await;
        let info3 = web("web3", 103);
        let want3 = expected(&info3, &ns3.kernel());
        engine.put(info3);
        std::fs::write(folder.0.join("netns-3"), b"").expect("create the namespace file");
        until("web3 converged on the hint", || ns3.tagged() == want3).await;
        assert_eq!(
            engine.inspections("web1").len(),
            1,
            "managed: not inspected again"
        );
        assert_eq!(
            engine.inspections("hostnet").len(),
            1,
            "skipped: not inspected again"
        );
        assert_eq!(engine.inspections("web3").len(), 1);
        assert_eq!(metric(&m, "symroute_errors_total"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_namespace_folder_that_goes_away_is_watched_again_at_the_next_resync() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "again");
    let ns4 = web_ns(&spaces, 4, "/proc/104/ns/net");
    let ns5 = web_ns(&spaces, 5, "/proc/105/ns/net");
    let opts = DaemonOptions {
        resync_interval: Duration::from_secs(5),
        ..options()
    };
    with_daemon(opts, &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        // The folder goes (Podman's /run/netns on a reboot-less cleanup) and comes back.
        std::fs::remove_dir_all(&folder.0).expect("remove the folder");
        idle(Duration::from_millis(50)).await;
        std::fs::create_dir_all(&folder.0).expect("make the folder again");
        let lists = engine.state().lists;
        let info4 = web("web4", 104);
        let want4 = expected(&info4, &ns4.kernel());
        engine.put(info4);
        std::fs::write(folder.0.join("netns-4"), b"").expect("create the namespace file");
        idle(Duration::from_secs(1)).await;
        assert_eq!(
            engine.state().lists,
            lists,
            "the old watch ended with its folder: no hint from the new one yet"
        );
        assert!(
            ns4.tagged().0.is_empty(),
            "web4 is not converged before the resync"
        );
        // The periodic resync (5 s here) converges web4 and watches the new folder.
        until("web4 converged by the resync", || ns4.tagged() == want4).await;
        let info5 = web("web5", 105);
        let want5 = expected(&info5, &ns5.kernel());
        engine.put(info5);
        let resyncs = metric(&m, "symroute_resyncs_total");
        std::fs::write(folder.0.join("netns-5"), b"").expect("create the namespace file");
        until("web5 converged on the new folder's hint", || {
            ns5.tagged() == want5
        })
        .await;
        assert_eq!(
            metric(&m, "symroute_resyncs_total"),
            resyncs,
            "by the hint, not by another resync"
        );
        assert_eq!(metric(&m, "symroute_docker_events_total"), 0.0);
    })
    .await;
}

/// CLOCK_REALTIME now, in ns (the clock engines stamp their events with).
fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[tokio::test(start_paused = true)]
async fn the_previous_runs_late_die_does_not_release_a_restart_a_hint_found() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "restart");
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let info = web("web1", 101);
    let want = expected(&info, &ns.kernel());
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        // The old run died 1 s ago; its die event is still on its way when
        // the new run's namespace file appears (Podman's events come late).
        let died = wall_ns() - 1_000_000_000;
        engine.put(info.clone());
        std::fs::write(folder.0.join("netns-r"), b"").expect("create the namespace file");
        until("the new run converged", || ns.tagged() == want).await;
        engine.emit_at(EventKind::Die, "web1", died);
        idle(Duration::from_millis(100)).await;
        assert_eq!(ns.handles(), 1, "the new run's namespace still followed");
        assert_eq!(metric(&m, "symroute_containers_managed"), 1.0);
        // Its start event; then a die of this run releases it.
        engine.emit_at(EventKind::Start, "web1", wall_ns());
        until("the start handled", || {
            engine.inspections("web1").len() == 2
        })
        .await;
        engine.emit_at(EventKind::Die, "web1", wall_ns());
        until("released", || ns.handles() == 0).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_die_of_this_run_releases_a_container_a_hint_found() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "dies");
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let info = web("web1", 101);
    let want = expected(&info, &ns.kernel());
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        engine.put(info.clone());
        std::fs::write(folder.0.join("netns-d"), b"").expect("create the namespace file");
        until("converged on the hint", || ns.tagged() == want).await;
        // It dies before its start event came: its die is stamped after the hint.
        engine.emit_at(EventKind::Die, "web1", wall_ns() + 1);
        until("released", || ns.handles() == 0).await;
        assert_eq!(metric(&m, "symroute_containers_managed"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_start_listed_before_it_ends_is_inspected_by_the_lists_task_not_the_event_path() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "early");
    // The quick inspect waits (Podman: for the start's lock) 80 ms.
    engine.state().quick_delay = Duration::from_millis(80);
    let ns1 = web_ns(&spaces, 1, "/proc/101/ns/net");
    let ns2 = web_ns(&spaces, 2, "/proc/102/ns/net");
    let info1 = web("web1", 101);
    let info2 = web("web2", 102);
    let want1 = expected(&info1, &ns1.kernel());
    let want2 = expected(&info2, &ns2.kernel());
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        engine.put(info1.clone());
        engine.state().starting.push("web1".into());
        std::fs::write(folder.0.join("netns-e"), b"").expect("create the namespace file");
        until("web1's quick inspect asked", || {
            engine.state().quick == ["web1".to_string()]
        })
        .await;
        // While it waits, another start's event is handled at once.
        engine.put(info2.clone());
        engine.emit(EventKind::Start, "web2");
        until("web2 converged", || ns2.tagged() == want2).await;
        assert!(
            ns1.tagged().0.is_empty(),
            "web2 went first: the event path did not wait for web1's inspect"
        );
        until("web1 converged", || ns1.tagged() == want1).await;
        assert_eq!(
            engine.inspections("web1").len(),
            1,
            "inspected once, by the list's task"
        );
        assert_eq!(metric(&m, "symroute_containers_managed"), 2.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_early_inspect_older_than_the_containers_events_is_dropped() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "stale");
    engine.state().quick_delay = Duration::from_millis(80);
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let info = web("web1", 101);
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        engine.put(info.clone());
        engine.state().starting.push("web1".into());
        std::fs::write(folder.0.join("netns-s"), b"").expect("create the namespace file");
        until("web1's quick inspect asked", || {
            engine.state().quick == ["web1".to_string()]
        })
        .await;
        // While it waits: the start's event, then the container dies (a crash loop).
        engine.emit(EventKind::Start, "web1");
        until("managed by its event", || ns.handles() == 1).await;
        engine.emit_at(EventKind::Die, "web1", wall_ns());
        until("released on its die", || ns.handles() == 0).await;
        // The early answer (running, from before both) comes now: dropped.
        idle(Duration::from_millis(200)).await;
        assert_eq!(ns.handles(), 0, "not opened again from the older answer");
        assert_eq!(metric(&m, "symroute_containers_managed"), 0.0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_early_inspect_that_finds_no_running_container_does_nothing() {
    let (engine, spaces, m) = world();
    let folder = watched(&engine, "created");
    let ns = web_ns(&spaces, 1, "/proc/101/ns/net");
    let mut info = web("web1", 101);
    info.running = false;
    info.pid = None;
    with_daemon(options(), &engine, &spaces, &m, async {
        until("subscribed and listed", || engine.ready()).await;
        // Created, never started: the newest container when another start's file appears.
        engine.put(info.clone());
        engine.state().starting.push("web1".into());
        std::fs::write(folder.0.join("netns-c"), b"").expect("create the namespace file");
        until("inspected by the list's task", || {
            engine.state().quick == ["web1".to_string()]
        })
        .await;
        idle(Duration::from_millis(200)).await;
        assert_eq!(engine.inspections("web1").len(), 1, "not inspected again");
        assert!(spaces.opened().is_empty());
        assert_eq!(ns.handles(), 0);
        assert_eq!(metric(&m, "symroute_containers_managed"), 0.0);
        assert_eq!(metric(&m, "symroute_errors_total"), 0.0);
    })
    .await;
}
