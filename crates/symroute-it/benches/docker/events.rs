//! The engine's container `start` events, read by the benchmark itself from the Engine
//! API's `/events` stream on the lab's socket (the same endpoint for dockerd and for
//! Podman's service): container id -> the event's `timeNano`, the engine's own timestamp
//! of the start, from which every latency is measured.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::docker::api::API_VERSION;

/// id -> (timeNano, when this program read the event: CLOCK_REALTIME ns).
type Seen = Arc<(Mutex<HashMap<String, (i64, i64)>>, Condvar)>;

/// The stream (closed on drop, which ends its reader thread).
pub struct StartEvents {
    stream: UnixStream,
    seen: Seen,
}

/// `{"type":["container"],"event":["start"]}`, URL-encoded.
const FILTERS: &str = "%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%5D%7D";

impl StartEvents {
    /// Subscribe; returns once the engine has answered the request's head (so every start
    /// from now on is seen).
    pub fn start(socket: &Path) -> StartEvents {
        let mut stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        write!(
            stream,
            "GET /{API_VERSION}/events?filters={FILTERS} HTTP/1.0\r\nHost: docker\r\n\r\n"
        )
        .expect("send the events request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("events: status line");
        assert!(status.contains(" 200 "), "GET /events: {status}");
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("events: head");
            if n == 0 || line.trim().is_empty() {
                break;
            }
        }
        let seen: Seen = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            // One JSON object per line (chunk-size lines, if any, are not JSON).
            for line in reader.lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                let id = v["id"].as_str().or_else(|| v["Actor"]["ID"].as_str());
                let (Some(id), Some(t)) = (id, v["timeNano"].as_i64()) else {
                    continue;
                };
                let (map, cv) = &*shared;
                map.lock()
                    .expect("events map")
                    .insert(id.to_string(), (t, crate::realtime_ns()));
                cv.notify_all();
            }
        });
        StartEvents { stream, seen }
    }

    /// The start event's timestamp of container `id`, waiting up to `timeout` for it.
    pub fn wait(&self, id: &str, timeout: Duration) -> Option<i64> {
        let (map, cv) = &*self.seen;
        let deadline = Instant::now() + timeout;
        let mut m = map.lock().expect("events map");
        loop {
            if let Some((t, _)) = m.get(id) {
                return Some(*t);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            m = cv.wait_timeout(m, left).expect("events map").0;
        }
    }
}

impl StartEvents {
    /// When this program read container `id`'s start event (CLOCK_REALTIME ns).
    pub fn read_at(&self, id: &str) -> Option<i64> {
        let (map, _) = &*self.seen;
        map.lock().expect("events map").get(id).map(|(_, r)| *r)
    }
}

impl Drop for StartEvents {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
