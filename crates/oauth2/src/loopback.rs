//! The one-shot loopback redirect listener of a native app's login
//! (RFC 8252 §7.3): `http://127.0.0.1:{port}{path}`, port chosen by the OS.
//!
//! Invariants:
//!
//! - It listens on 127.0.0.1 only, and only until one request for the
//!   redirect path has come, or the timeout: dropping it closes the socket.
//! - Every read is bounded: [`MAX_REQUEST`] bytes of request head, a
//!   per-connection read timeout, [`MAX_CONNECTIONS`] connections. Requests
//!   for other paths (a browser's `/favicon.ico`) and connections that send
//!   nothing (a browser's preconnect) are answered or dropped and do not
//!   end the wait.
//! - The page sent back to the browser quotes nothing of the request.

use std::{
    future::poll_fn,
    net::{Ipv4Addr, SocketAddr},
    task::Poll,
    time::Duration,
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use super::{LoginError, redact::form_decode};
use crate::{BoxFuture, Error, ErrorKind};

/// The largest request head read from the browser.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// The most connections accepted while waiting for the redirect.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// How long one connection may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

const DONE_PAGE: &str = "<!doctype html><title>Signed in</title>\
    <p>You can close this window and return to the application.</p>";
const FAILED_PAGE: &str = "<!doctype html><title>Sign-in failed</title>\
    <p>Sign-in did not complete. Return to the application.</p>";

/// A bound, not yet answered, redirect listener.
pub(crate) struct Loopback {
    listener: TcpListener,
    port: u16,
}

/// What the redirect carried: its query parameters, decoded.
#[derive(Debug)]
pub(crate) struct Redirect {
    params: Vec<(String, String)>,
}

impl Redirect {
    /// The value of `name`; a parameter given twice is an error (RFC 6749
    /// §3.1: parameters must not repeat).
    pub(crate) fn get(&self, name: &str) -> Result<Option<&str>, LoginError> {
        let mut found = self.params.iter().filter(|(n, _)| n == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(LoginError::BadCallback("a parameter is repeated"));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }
}

impl Loopback {
    /// Binds `127.0.0.1:0`.
    pub(crate) async fn bind() -> Result<Self, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Policy,
                    "cannot listen on 127.0.0.1 for the redirect",
                )
                .with_source(e)
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| {
                Error::new(ErrorKind::Policy, "cannot read the listener's port").with_source(e)
            })?
            .port();
        Ok(Loopback { listener, port })
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub(crate) fn redirect_uri(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for the one `GET {path}?…` request, answers it and closes.
    /// `ok` picks the page sent back: the browser learns whether the login
    /// goes on, nothing more.
    pub(crate) async fn redirect(
        self,
        path: &str,
        timeout: Duration,
        ok: impl Fn(&Redirect) -> bool,
    ) -> Result<Redirect, LoginError> {
        let deadline = Instant::now() + timeout;
        let mut reads: FuturesUnordered<BoxFuture<'static, Option<(TcpStream, Head)>>> =
            FuturesUnordered::new();
        let mut accepted = 0;
        loop {
            // Bounded: each pass accepts one of MAX_CONNECTIONS connections
            // or finishes one of their reads, and the deadline ends it all.
            if accepted >= MAX_CONNECTIONS && reads.is_empty() {
                return Err(LoginError::BadCallback(
                    "too many requests that were not the redirect",
                ));
            }
            let next = poll_fn(|cx| {
                if accepted < MAX_CONNECTIONS
                    && let Poll::Ready(result) = self.listener.poll_accept(cx)
                {
                    return Poll::Ready(Event::Accepted(result.ok()));
                }
                match reads.poll_next_unpin(cx) {
                    Poll::Ready(Some(read)) => Poll::Ready(Event::Read(read)),
                    _ => Poll::Pending,
                }
            });
            let event = tokio::time::timeout_at(deadline, next)
                .await
                .map_err(|_| LoginError::TimedOut)?;
            match event {
                Event::Accepted(Some((stream, peer))) => {
                    accepted += 1;
                    if !is_local(peer) {
                        continue;
                    }
                    reads.push(Box::pin(read_head(stream)));
                }
                // A failed accept counts too: a listener that keeps
                // failing (out of file descriptors) must not spin.
                Event::Accepted(None) => accepted += 1,
                Event::Read(None) => {}
                Event::Read(Some((mut stream, head))) => {
                    let Head::Get { path: got, query } = head else {
                        respond(&mut stream, "400 Bad Request", FAILED_PAGE).await;
                        continue;
                    };
                    if got != path {
                        respond(&mut stream, "404 Not Found", "").await;
                        continue;
                    }
                    let redirect = parse_query(&query);
                    let page = match &redirect {
                        Ok(r) if ok(r) => ("200 OK", DONE_PAGE),
                        _ => ("400 Bad Request", FAILED_PAGE),
                    };
                    respond(&mut stream, page.0, page.1).await;
                    return redirect;
                }
            }
        }
    }
}

enum Event {
    Accepted(Option<(TcpStream, SocketAddr)>),
    Read(Option<(TcpStream, Head)>),
}

enum Head {
    Get { path: String, query: String },
    Other,
}

fn is_local(peer: SocketAddr) -> bool {
    peer.ip().is_loopback()
}

/// Reads one request head (up to the blank line), bounded in size and
/// time. `None`: the connection closed or stalled before a whole head.
async fn read_head(mut stream: TcpStream) -> Option<(TcpStream, Head)> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if buf.len() > MAX_REQUEST {
                return Some(());
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.ok()??;
    let head = parse_head(&buf);
    Some((stream, head))
}

fn parse_head(buf: &[u8]) -> Head {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Head::Other;
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Head::Other;
    };
    let mut parts = line.split(' ');
    let (Some("GET"), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Other;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Head::Other;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Head::Get {
        path: path.to_owned(),
        query: query.to_owned(),
    }
}

fn parse_query(query: &str) -> Result<Redirect, LoginError> {
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            String::from_utf8(form_decode(s.as_bytes()))
                .map_err(|_| LoginError::BadCallback("a parameter is not UTF-8"))
        };
        params.push((decode(name)?, decode(value)?));
    }
    Ok(Redirect { params })
}

async fn respond(stream: &mut TcpStream, status: &str, page: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    // The browser's page is a courtesy: a failure to send it changes
    // nothing for the login.
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_an_origin_form_target_is_a_redirect() {
        let Head::Get { path, query } =
            parse_head(b"GET /cb?code=a%2Bb&state=s HTTP/1.1\r\nHost: x\r\n\r\n")
        else {
            panic!("not parsed")
        };
        assert_eq!(
            (path.as_str(), query.as_str()),
            ("/cb", "code=a%2Bb&state=s")
        );
        for bad in [
            &b"POST /cb HTTP/1.1\r\n\r\n"[..],
            b"GET http://evil/cb HTTP/1.1\r\n\r\n",
            b"GET /cb HTTP/2\r\n\r\n",
            b"GET /cb\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"no line end",
        ] {
            assert!(matches!(parse_head(bad), Head::Other), "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_form_decoded_and_may_not_repeat() {
        let r = parse_query("code=a%2Bb+c&state=s&empty").unwrap();
        assert_eq!(r.get("code").unwrap(), Some("a+b c"));
        assert_eq!(r.get("empty").unwrap(), Some(""));
        assert_eq!(r.get("missing").unwrap(), None);
        let r = parse_query("code=1&code=2").unwrap();
        assert!(r.get("code").is_err());
        assert!(parse_query("code=%FF").is_err());
    }
}
