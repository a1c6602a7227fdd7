//! The metrics endpoint: `GET /metrics` over HTTP/1.1, served by hyper (the
//! one bollard already links), one task per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::debug;

use super::metrics::{self, Metrics};

/// A client gets this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind the metrics listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if req.uri().path() == "/metrics" && matches!(*req.method(), Method::GET | Method::HEAD) {
            (StatusCode::OK, metrics::CONTENT_TYPE, metrics.render())
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: try /metrics\n".to_string(),
            )
        };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(conn, metrics).await {
                debug!(peer = %peer, error = %e, "metrics connection");
            }
        });
    }
}

/// Answer the requests of one connection.
async fn serve_connection<IO>(io: IO, metrics: Arc<Metrics>) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let resp = answer(&req, &metrics);
        async move { Ok::<_, Infallible>(resp) }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over an in-memory pipe: the whole answer.
    async fn ask(request: &str) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let metrics = Arc::new(Metrics::default());
        metrics.set_managed(2);
        let task = tokio::spawn(serve_connection(server, metrics));
        client.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        task.await.expect("served").expect("no HTTP error");
        answer
    }

    #[tokio::test]
    async fn get_metrics_answers_the_exposition_and_closes_for_http_1_0() {
        let a = ask("GET /metrics HTTP/1.0\r\n\r\n").await;
        let (head, body) = a.split_once("\r\n\r\n").expect("head and body");
        // hyper answers an HTTP/1.0 request in HTTP/1.0, and closes.
        assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {}", metrics::CONTENT_TYPE)),
            "{head}"
        );
        assert!(
            body.lines().any(|l| l == "symroute_containers_managed 2"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn http_1_1_with_close_and_other_paths() {
        let a = ask("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 200 OK"), "{a}");
        let a = ask("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(a.starts_with("HTTP/1.1 404 Not Found"), "{a}");
        assert!(a.ends_with("not found: try /metrics\n"), "{a}");
    }
}
