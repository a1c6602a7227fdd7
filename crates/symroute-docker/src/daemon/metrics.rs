//! Prometheus metrics in the text exposition format, and a minimal HTTP
//! endpoint serving them at /metrics.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the event-to-converged latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Outcome of one reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel was changed.
    Changed,
    /// Already in sync.
    Unchanged,
    Error,
}

#[derive(Debug, Default)]
pub struct Metrics {
    managed: AtomicU64,
    changed: AtomicU64,
    unchanged: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
    docker_connected: AtomicU64,
    events: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl Metrics {
    pub fn set_managed(&self, n: usize) {
        self.managed.store(n as u64, Ordering::Relaxed);
    }
    pub fn reconcile(&self, o: Outcome) {
        match o {
            Outcome::Changed => &self.changed,
            Outcome::Unchanged => &self.unchanged,
            Outcome::Error => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
    pub fn set_connected(&self, up: bool) {
        self.docker_connected
            .store(u64::from(up), Ordering::Relaxed);
    }
    pub fn latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP symroute_containers_managed Containers whose namespace symroute manages.\n# TYPE symroute_containers_managed gauge\nsymroute_containers_managed {}",
            g(&self.managed)
        );
        let _ = writeln!(
            s,
            "# HELP symroute_reconciles_total Reconciles by outcome.\n# TYPE symroute_reconciles_total counter\nsymroute_reconciles_total{{outcome=\"changed\"}} {}\nsymroute_reconciles_total{{outcome=\"unchanged\"}} {}\nsymroute_reconciles_total{{outcome=\"error\"}} {}",
            g(&self.changed),
            g(&self.unchanged),
            g(&self.failed)
        );
        let _ = writeln!(
            s,
            "# HELP symroute_errors_total Errors (Docker API, namespaces, kernel).\n# TYPE symroute_errors_total counter\nsymroute_errors_total {}",
            g(&self.errors)
        );
        let _ = writeln!(
            s,
            "# HELP symroute_docker_connected Whether the Docker event stream is connected.\n# TYPE symroute_docker_connected gauge\nsymroute_docker_connected {}",
            g(&self.docker_connected)
        );
        let _ = writeln!(
            s,
            "# HELP symroute_docker_events_total Docker events acted on.\n# TYPE symroute_docker_events_total counter\nsymroute_docker_events_total {}",
            g(&self.events)
        );
        let _ = writeln!(
            s,
            "# HELP symroute_event_to_converged_seconds From a Docker event's timestamp to symroute's rules being in the kernel.\n# TYPE symroute_event_to_converged_seconds histogram"
        );
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "symroute_event_to_converged_seconds_bucket{{le=\"{b}\"}} {}",
                g(&self.buckets[i])
            );
        }
        let count = g(&self.latency_count);
        let _ = writeln!(
            s,
            "symroute_event_to_converged_seconds_bucket{{le=\"+Inf\"}} {count}\nsymroute_event_to_converged_seconds_sum {}\nsymroute_event_to_converged_seconds_count {count}",
            g(&self.latency_sum_ns) as f64 / 1e9
        );
        s
    }
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            // Read the request head (bounded in size and time).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "not found: try /metrics\n".to_string())
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Bind the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
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
        let t = m.render();
        assert!(t.contains("symroute_containers_managed 3"));
        assert!(t.contains("symroute_reconciles_total{outcome=\"changed\"} 1"));
        assert!(t.contains("symroute_reconciles_total{outcome=\"unchanged\"} 2"));
        assert!(t.contains("symroute_event_to_converged_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(t.contains("symroute_event_to_converged_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("symroute_event_to_converged_seconds_bucket{le=\"0.05\"} 2"));
        assert!(t.contains("symroute_event_to_converged_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(t.contains("symroute_event_to_converged_seconds_count 2"));
    }
}
