//! TCP servers and probes inside lab namespaces.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the lab module, split by concern"
)]
use super::*;

impl Ns {
    /// Listen on `addr` inside the namespace and answer every connection
    /// with `banner` and a newline, then close it. Serves on a background
    /// thread until the returned [`TcpServer`] is dropped.
    pub fn tcp_server(&self, addr: SocketAddr, banner: &str) -> Result<TcpServer, LabError> {
        let what = || format!("listen on tcp {addr}");
        let listener = self
            .run(|| TcpListener::bind(addr))?
            .map_err(|source| self.io_err(what(), source))?;
        let local = listener
            .local_addr()
            .map_err(|source| self.io_err(what(), source))?;
        listener
            .set_nonblocking(true)
            .map_err(|source| self.io_err(what(), source))?;
        let stop = Arc::new(AtomicBool::new(false));
        let reply = format!("{banner}\n");
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .spawn(move || serve(&listener, &flag, reply.as_bytes()))
            .map_err(|source| self.io_err(format!("start tcp server on {addr}"), source))?;
        Ok(TcpServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// Connect to `target` from inside the namespace, read until the server
    /// closes, and return what it sent. `timeout` bounds the connection and
    /// each read. A refused or timed-out connection is an error naming the
    /// target and the namespace.
    pub fn tcp_probe(&self, target: SocketAddr, timeout: Duration) -> Result<String, LabError> {
        let result = self.run(|| -> Result<String, (&'static str, io::Error)> {
            let mut stream =
                TcpStream::connect_timeout(&target, timeout).map_err(|e| ("connect", e))?;
            stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| ("read", e))?;
            let mut text = String::new();
            stream.read_to_string(&mut text).map_err(|e| ("read", e))?;
            Ok(text)
        })?;
        result.map_err(|(stage, source)| self.io_err(format!("tcp {stage} to {target}"), source))
    }
}

/// Poll interval of the TCP server's accept loop (also its worst-case stop
/// latency).
const ACCEPT_POLL: Duration = Duration::from_millis(10);

fn serve(listener: &TcpListener, stop: &AtomicBool, reply: &[u8]) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, reply),
            // WouldBlock, or a transient failure (aborted connection, out of
            // descriptors): wait and try again.
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

fn answer(mut stream: TcpStream, reply: &[u8]) {
    // A client that vanished is not the server's problem: ignore failures.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(reply);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A TCP banner server running in a namespace (see [`Ns::tcp_server`]).
/// Dropping it stops the server and closes the listening socket.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// The address it listens on (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The loop checks the flag at least every ACCEPT_POLL; a panic in
            // it has nothing left to clean up.
            let _ = thread.join();
        }
    }
}
