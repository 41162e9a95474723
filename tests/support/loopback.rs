//! The small HTTP/1.1 server behind the tests' own services (the fault-injecting IdP, the
//! static IdP of the adversarial tests, the command-line tool's registration server):
//! loopback only, one thread per connection, one request per connection (`connection:
//! close`). Each service answers in its own way; reading a request, writing an answer and the
//! accept loop, bounded in time like every wait in the tests, are here once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request head or body read; a test's request is far smaller.
const MAX_READ: usize = 65536;

/// One HTTP/1.1 request as a test service sees it.
pub struct Request {
    /// The request target as sent, query included.
    pub path: String,
    /// The header lines, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serves on a free loopback port, calling `handle` on its own thread for each connection,
/// until `stop` is set or `lifetime` has passed; returns the port.
pub fn serve(
    lifetime: Duration,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local address").port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        let deadline = Instant::now() + lifetime;
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    std::thread::spawn(move || {
                        let _ = stream.set_nonblocking(false);
                        handle(stream)
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    port
}

/// Reads one request: its head up to the blank line and as much body as `content-length`
/// says (both bounded), waiting at most 5 s for each read. `None` if the peer sent no
/// complete head.
pub fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 || raw.len() > MAX_READ {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length.min(MAX_READ) {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Writes one answer and closes: `status`, the `extra` header lines (each ending in CRLF),
/// `content-type` and `content-length`, then `body`.
pub fn respond(stream: &mut TcpStream, status: u16, extra: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\n{extra}content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}
