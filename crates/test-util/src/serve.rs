//! The accept loop shared by both servers.
//!
//! `axum::serve` cannot close a connection in the middle of a request, which
//! [`Fault::DropConnection`](crate::Fault::DropConnection) needs, so each
//! connection is served by hyper directly with a [`ConnControl`] in the
//! request extensions that a handler can use to drop it, or to hand work to
//! the server that must end even if its client hangs up (hyper drops a
//! handler whose connection closes).

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use axum::{Router, body::Body};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
    task::{JoinHandle, JoinSet},
};
use tower::ServiceExt;

/// A running server: its address and the task that runs it. Dropping it stops
/// the server and every open connection.
pub(crate) struct ServerTask {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServerTask {
    /// Binds 127.0.0.1 on a free port and serves `router` from a task spawned
    /// on the current runtime (so a paused test clock applies to it).
    pub(crate) async fn spawn(router: Router) -> std::io::Result<ServerTask> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, router));
        Ok(ServerTask { addr, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        // Aborting the accept loop drops its `JoinSet`, which aborts the
        // connection tasks too.
        self.task.abort();
    }
}

impl fmt::Debug for ServerTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTask")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Work handed to the server with [`ConnControl::detach`].
type Detached = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Lets a handler close the connection its request came on, without a
/// response, or [`detach`](Self::detach) work from it.
#[derive(Clone)]
pub(crate) struct ConnControl {
    kill: Arc<Notify>,
    detached: mpsc::UnboundedSender<Detached>,
}

impl ConnControl {
    /// Closes the connection. The handler should then never complete.
    pub(crate) fn drop_connection(&self) {
        self.kill.notify_one();
    }

    /// Runs `work` to its end whether or not the connection stays open: the
    /// server runs it beside its connections, so only stopping the server
    /// stops it.
    pub(crate) fn detach(&self, work: impl Future<Output = ()> + Send + 'static) {
        // The accept loop holds the receiver until the server stops; after
        // that, dropping `work` is what stopping the server means.
        let _ = self.detached.send(Box::pin(work));
    }
}

async fn accept_loop(listener: TcpListener, router: Router) {
    // Connections and detached work alike: dropping the set (when the
    // server stops) aborts them all.
    let mut tasks = JoinSet::new();
    // The loop keeps a sender, so `recv` never ends while it runs.
    let (detach, mut detached) = mpsc::unbounded_channel();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tasks.spawn(serve_connection(stream, router.clone(), detach.clone()));
                }
                // Out of file descriptors and the like: pass, then try again
                // rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(work) = detached.recv() => {
                tasks.spawn(work);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    detached: mpsc::UnboundedSender<Detached>,
) {
    // Small request/response pairs: do not let Nagle add latency to benches.
    let _ = stream.set_nodelay(true);
    let control = ConnControl {
        kill: Arc::new(Notify::new()),
        detached,
    };
    let kill = control.kill.clone();
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(control.clone());
        let router = router.clone();
        async move {
            let response: Result<http::Response<Body>, Infallible> = router.oneshot(req).await;
            response
        }
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Errors here are the client's doing (reset, garbage); nothing to report.
        _ = connection => {}
        // Dropping the connection closes the socket with no response.
        () = kill.notified() => {}
    }
}
