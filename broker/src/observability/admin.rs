//! The admin HTTP listener, served by shard 0: `/metrics` (Prometheus text format, every shard's
//! metrics gathered over the mesh at scrape time), `/v1/status/ready` (503 until every shard has
//! recovered its logs) and `/v1/status/live`.
//!
//! Why by hand: three GET endpoints answered with `Connection: close` need no HTTP stack, and
//! none of the well-kept ones runs on glommio without an adapter larger than this file. The
//! request head is bounded (`ADMIN_REQUEST_HEAD_BYTES_MAX`) and anything but GET gets 405.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shards::net::{Connection, Listener};
use tracing::{debug, warn};

use crate::observability::metrics::render;
use crate::shard::Shard;

/// A request head larger than this is refused: scrapers send a few hundred bytes.
pub const ADMIN_REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a client may take to send its request head.
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(shard: Rc<Shard>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                shards::task::spawn(answer(shard.clone(), connection)).detach();
            }
            Err(error) => {
                warn!(%error, "admin accept failed");
                shards::task::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The request line's method and path, once the head is complete.
fn parse_head(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or(target).to_string();
    parts
        .next()?
        .starts_with("HTTP/1.")
        .then_some((method, path))
}

async fn read_head(reader: &mut shards::net::ConnectionReader) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    loop {
        let read = reader.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            return Some(head);
        }
        if head.len() > ADMIN_REQUEST_HEAD_BYTES_MAX {
            return None;
        }
    }
}

/// The ready answer: serving, and what is not being served (partitions whose log is offline,
/// writes refused on a full disk) for an operator to look at. Still 200: the node serves every
/// other partition, and taking it out of service would make things worse.
fn readiness(shard: &Shard) -> String {
    let mut text = "ready\n".to_string();
    for partition in shard.offline_partitions() {
        text.push_str(&format!(
            "offline partition {}-{}: {}\n",
            partition.topic, partition.partition, partition.reason
        ));
    }
    if shard.disk_full() {
        text.push_str(
            "disk full: appends are refused until free space is above storage_min_free_bytes\n",
        );
    }
    text
}

async fn answer(shard: Rc<Shard>, connection: Connection) {
    let (mut reader, mut writer) = connection.split();
    let head = shards::task::timeout(ADMIN_REQUEST_TIMEOUT, read_head(&mut reader)).await;
    let (status, content_type, body) = match head.flatten().as_deref().and_then(parse_head) {
        None => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        Some((method, _)) if method != "GET" => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
        Some((_, path)) => match path.as_str() {
            "/metrics" => match render(shard.collect_metrics().await) {
                Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "metrics could not be encoded\n".to_string(),
                ),
            },
            "/v1/status/live" => ("200 OK", "text/plain", "live\n".to_string()),
            "/v1/status/ready" if shard.node_ready() => ("200 OK", "text/plain", readiness(&shard)),
            "/v1/status/ready" => (
                "503 Service Unavailable",
                "text/plain",
                "recovering logs\n".to_string(),
            ),
            _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
        },
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(error) = writer.write_all_chunks(&[Bytes::from(response)]).await {
        debug!(%error, "admin response not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_strangers_do_not() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET".into(), "/metrics".into()))
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_head(b"\xff\xfe\r\n\r\n"), None);
        assert_eq!(
            parse_head(b"POST /v1/status/live HTTP/1.0\r\n\r\n"),
            Some(("POST".into(), "/v1/status/live".into()))
        );
    }
}
