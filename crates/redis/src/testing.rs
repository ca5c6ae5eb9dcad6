//! A throwaway `redis-server` for tests and examples (feature `testing`).

use std::{
    io,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A `redis-server` child process on a free port of 127.0.0.1, with
/// persistence off. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) on a free loopback port and waits
    /// until it answers.
    ///
    /// # Errors
    ///
    /// When `redis-server` is not installed (install the `redis-server`
    /// package) or does not come up within five seconds.
    pub async fn start() -> io::Result<RedisServer> {
        Self::start_with(None, None).await
    }

    /// Like [`start`](Self::start), requiring `password` (AUTH).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_with_password(password: &str) -> io::Result<RedisServer> {
        Self::start_with(None, Some(password.to_owned())).await
    }

    /// Starts again on the same port after [`stop`](Self::stop) (as a Redis
    /// restart would; persistence is off, so it starts empty).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let again = Self::start_with(Some(self.port), self.password.clone()).await?;
        *self = again;
        Ok(())
    }

    async fn start_with(port: Option<u16>, password: Option<String>) -> io::Result<RedisServer> {
        let port = match port {
            Some(p) => p,
            None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &password {
            cmd.args(["--requirepass", pw]);
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start redis-server ({e}); install the redis-server package"),
            )
        })?;
        let server = RedisServer {
            child: Some(child),
            port,
            password,
        };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not come up",
        ))
    }

    /// The URL to connect to (with the password, if any).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server now (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
