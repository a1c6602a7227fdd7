//! The daemon's Prometheus metrics, kept in a `prometheus-client` registry
//! and rendered in its text exposition (OpenMetrics 1.0, which Prometheus
//! scrapes as it does the classic text format: the same sample lines). The
//! HTTP endpoint serving them is [`super::http`].
//!
//! Samples (names and help texts as before the move to `prometheus-client`;
//! in OpenMetrics a counter's `# HELP`/`# TYPE` lines name the family
//! without `_total`, the sample keeps it):
//!
//! - `symroute_containers_managed` gauge;
//! - `symroute_reconciles_total{outcome="changed"|"unchanged"|"error"}`;
//! - `symroute_errors_total`, `symroute_docker_events_total` counters;
//! - `symroute_docker_connected` gauge (0 or 1);
//! - `symroute_event_to_converged_seconds` histogram ([`LATENCY_BUCKETS`]);
//! - `symroute_resyncs_total` counter (resyncs completed: the engine's list
//!   and every running container reconciled) and
//!   `symroute_resync_duration_seconds` histogram ([`RESYNC_BUCKETS`]: from
//!   asking the engine for the list to the last container applied).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the event-to-converged latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds (seconds) of the resync duration histogram.
pub const RESYNC_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Outcome of one reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The kernel was changed.
    Changed,
    /// Already in sync.
    Unchanged,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Changed, Outcome::Unchanged, Outcome::Error];

    fn label(self) -> [(&'static str, &'static str); 1] {
        [(
            "outcome",
            match self {
                Outcome::Changed => "changed",
                Outcome::Unchanged => "unchanged",
                Outcome::Error => "error",
            },
        )]
    }
}

type OutcomeLabel = [(&'static str, &'static str); 1];

/// The daemon's metrics; cheap to update from the loop, rendered on scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    managed: Gauge,
    reconciles: Family<OutcomeLabel, Counter>,
    errors: Counter,
    docker_connected: Gauge,
    events: Counter,
    latency: Histogram,
    resyncs: Counter,
    resync_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let managed = Gauge::default();
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let errors = Counter::default();
        let docker_connected = Gauge::default();
        let events = Counter::default();
        let latency = Histogram::new(LATENCY_BUCKETS);
        let resyncs = Counter::default();
        let resync_duration = Histogram::new(RESYNC_BUCKETS);
        // Every outcome is exposed from the start, at 0.
        for o in Outcome::ALL {
            let _ = reconciles.get_or_create(&o.label());
        }
        // prometheus-client ends every help text with a full stop itself.
        let mut registry = Registry::default();
        registry.register(
            "symroute_containers_managed",
            "Containers whose namespace symroute manages",
            managed.clone(),
        );
        registry.register(
            "symroute_reconciles",
            "Reconciles by outcome",
            reconciles.clone(),
        );
        registry.register(
            "symroute_errors",
            "Errors (Docker API, namespaces, kernel)",
            errors.clone(),
        );
        registry.register(
            "symroute_docker_connected",
            "Whether the Docker event stream is connected",
            docker_connected.clone(),
        );
        registry.register(
            "symroute_docker_events",
            "Docker events acted on",
            events.clone(),
        );
        registry.register(
            "symroute_event_to_converged_seconds",
            "From a Docker event's timestamp to symroute's rules being in the kernel",
            latency.clone(),
        );
        registry.register(
            "symroute_resyncs",
            "Resyncs completed (the engine's list, every running container reconciled)",
            resyncs.clone(),
        );
        registry.register(
            "symroute_resync_duration_seconds",
            "From asking the engine for its list to the last container of the resync applied",
            resync_duration.clone(),
        );
        Metrics {
            registry,
            managed,
            reconciles,
            errors,
            docker_connected,
            events,
            latency,
            resyncs,
            resync_duration,
        }
    }
}

impl Metrics {
    pub(crate) fn set_managed(&self, n: usize) {
        self.managed.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn reconcile(&self, o: Outcome) {
        self.reconciles.get_or_create(&o.label()).inc();
    }

    pub(crate) fn error(&self) {
        self.errors.inc();
    }

    pub(crate) fn event(&self) {
        self.events.inc();
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.docker_connected.set(i64::from(up));
    }

    pub(crate) fn latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    pub(crate) fn resynced(&self, took: Duration) {
        self.resyncs.inc();
        self.resync_duration.observe(took.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_and_cumulative_buckets() {
        let m = Metrics::default();
        m.set_managed(3);
        m.reconcile(Outcome::Changed);
        m.reconcile(Outcome::Unchanged);
        m.reconcile(Outcome::Unchanged);
        m.latency(Duration::from_millis(3));
        m.latency(Duration::from_millis(30));
        m.resynced(Duration::from_millis(300));
        let t = m.render();
        for line in [
            "# HELP symroute_containers_managed Containers whose namespace symroute manages.",
            "symroute_containers_managed 3",
            "# HELP symroute_reconciles Reconciles by outcome.",
            "symroute_reconciles_total{outcome=\"changed\"} 1",
            "symroute_reconciles_total{outcome=\"unchanged\"} 2",
            "symroute_reconciles_total{outcome=\"error\"} 0",
            "# HELP symroute_errors Errors (Docker API, namespaces, kernel).",
            "symroute_errors_total 0",
            "# HELP symroute_docker_connected Whether the Docker event stream is connected.",
            "symroute_docker_connected 0",
            "# HELP symroute_docker_events Docker events acted on.",
            "symroute_docker_events_total 0",
            "# HELP symroute_event_to_converged_seconds From a Docker event's timestamp to symroute's rules being in the kernel.",
            "# TYPE symroute_event_to_converged_seconds histogram",
            "symroute_event_to_converged_seconds_bucket{le=\"0.0025\"} 0",
            "symroute_event_to_converged_seconds_bucket{le=\"0.005\"} 1",
            "symroute_event_to_converged_seconds_bucket{le=\"0.05\"} 2",
            "symroute_event_to_converged_seconds_bucket{le=\"+Inf\"} 2",
            "symroute_event_to_converged_seconds_count 2",
            "symroute_resyncs_total 1",
            "# TYPE symroute_resync_duration_seconds histogram",
            "symroute_resync_duration_seconds_bucket{le=\"0.25\"} 0",
            "symroute_resync_duration_seconds_bucket{le=\"0.5\"} 1",
            "symroute_resync_duration_seconds_count 1",
        ] {
            assert!(t.lines().any(|l| l == line), "no line {line:?} in:\n{t}");
        }
        assert!(t.ends_with("# EOF\n"));
    }
}
