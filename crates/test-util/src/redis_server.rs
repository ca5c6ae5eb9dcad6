//! A throwaway `redis-server` for tests and examples (feature `redis`).

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
    tls: Option<Tls>,
}

/// The certificates of a TLS server: a throwaway certificate authority
/// and a certificate for 127.0.0.1 it signed, in a temporary directory.
#[derive(Debug)]
struct Tls {
    dir: std::path::PathBuf,
    ca_pem: Vec<u8>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        Self::start_with(None, None, None).await
    }

    /// Like [`start`](Self::start), serving TLS only (`rediss://`), with a
    /// certificate for 127.0.0.1 from a throwaway certificate authority
    /// made with the `openssl` command ([`ca_pem`](Self::ca_pem)).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), or when `openssl` is missing.
    pub async fn start_tls() -> io::Result<RedisServer> {
        let tls = make_certificates()?;
        Self::start_with(None, None, Some(tls)).await
    }

    /// The certificate authority of a [`start_tls`](Self::start_tls) server (PEM).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|t| t.ca_pem.as_slice())
    }

    /// Like [`start`](Self::start), requiring `password` (AUTH).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_with_password(password: &str) -> io::Result<RedisServer> {
        Self::start_with(None, Some(password.to_owned()), None).await
    }

    /// Starts again on the same port after [`stop`](Self::stop) (as a Redis
    /// restart would; persistence is off, so it starts empty).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let tls = self.tls.take();
        let again = Self::start_with(Some(self.port), self.password.clone(), tls).await?;
        *self = again;
        Ok(())
    }

    async fn start_with(
        port: Option<u16>,
        password: Option<String>,
        tls: Option<Tls>,
    ) -> io::Result<RedisServer> {
        let port = match port {
            Some(p) => p,
            None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let mut cmd = Command::new("redis-server");
        match &tls {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(tls) => {
                let file = |name: &str| tls.dir.join(name).to_string_lossy().into_owned();
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cert-file", &file("server.crt")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.crt")])
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        cmd.args(["--bind", "127.0.0.1"])
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
            tls,
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
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
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

fn make_certificates() -> io::Result<Tls> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ttr-redis-tls-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    let mut tls = Tls {
        dir,
        ca_pem: Vec::new(),
    };
    let run = |args: &[&str]| -> io::Result<()> {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&tls.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {} failed",
                args.join(" ")
            )))
        }
    };
    std::fs::write(tls.dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n")?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    tls.ca_pem = std::fs::read(tls.dir.join("ca.crt"))?;
    Ok(tls)
}
