//! A throwaway `redis-server` for the benchmarks that need one (`bench locks`, `bench
//! quota`) and for the tests.
//!
//! [`RedisServer::start`] picks a free port on 127.0.0.1, runs `redis-server` with its
//! own temporary directory (`--save "" --appendonly no`, so it writes a dump only when
//! told to with `SAVE`), waits until it answers `PING` and kills it on drop.
//! [`RedisServer::restart`] starts a new process on the same port, directory and
//! `dbfilename`, so a saved dump is loaded again (the zombie-lock scenario of seed 004).
//! It lives with the benchmarks, outside the product: nothing below `bench` imports it
//! (tests may).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `redis-server` may take to answer `PING` after it was spawned.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How often the readiness probe retries.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Free-port races with other tests are retried this many times.
const PORT_ATTEMPTS: usize = 5;
/// The dump file name inside the server's directory.
pub const DB_FILENAME: &str = "dump.rdb";

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh server on a free port with an empty temporary directory.
    pub fn start() -> io::Result<RedisServer> {
        RedisServer::start_with_args(&[])
    }

    /// Like [`RedisServer::start`] with extra `redis-server` arguments (for example
    /// `["--requirepass", "secret"]`); they are reused by [`RedisServer::restart`].
    pub fn start_with_args(extra_args: &[&str]) -> io::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("marketsync-redis-")
            .tempdir()?;
        let mut server = RedisServer {
            port: 0,
            dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                // Most likely another test took the port between probe and bind.
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (holds `dump.rdb` after a `SAVE`, and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, like a crash: nothing is saved on the way out) and
    /// reaps it. The directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts a new one on the same port, directory and
    /// dump file, waiting until it answers `PING` (after loading the dump).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--dbfilename")
            .arg(DB_FILENAME)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot run redis-server (is it installed?): {err}"),
            )
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(io::Error::other(format!(
                        "redis-server on port {} exited with {status}: {}",
                        self.port,
                        log.lines().last().unwrap_or("")
                    )));
                }
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-server on port {} did not answer PING", self.port),
                ));
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Whether the server on `port` is serving: `PING` answers `+PONG`, or `-NOAUTH` when it
/// requires a password (but not `-LOADING` while it reads its dump).
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(read) => reply[..read].starts_with(b"+PONG") || reply[..read].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}
