//! Hosts on real network boundaries (issue 17, point 4): daemons run as separate hosts,
//! each in its own network namespace, against services that sit behind a bridge.
//!
//! Topology of one [`Net`] (every name carries the test process's pid and a counter, so
//! parallel tests and the namespaces of a crashed earlier run never collide):
//!
//! ```text
//!  netns ms-PID-N-infra                        netns ms-PID-N-h1        netns ms-PID-N-h2
//!  ┌─────────────────────────────────────┐    ┌────────────────────┐   ┌────────────────────┐
//!  │ br0 10.77.0.1  redis-server :6379   │    │ eth0 10.77.0.11    │   │ eth0 10.77.0.12    │
//!  │     10.77.0.2  postgres     :5432   │◄───┤ marketsync run     │   │ marketsync run     │
//!  │     10.77.0.3:8000 ─► 127.0.0.1:8000│◄───┤ 127.0.0.1:8000 ─►  │   │ 127.0.0.1:8000 ─►  │
//!  │                   marketsync sim    │    │   10.77.0.3:8000   │   │   10.77.0.3:8000   │
//!  │ veth-h1, veth-h2 enslaved to br0    │    │ lo up              │   │ lo up              │
//!  └─────────────────────────────────────┘    └────────────────────┘   └────────────────────┘
//! ```
//!
//! The simulator is reached through two forwarders run by the test (`─►`; see
//! [`Forwarder`] for why: the daemon fetches plain-http documents only from loopback).
//!
//! The services live in a namespace of their own, not in the root namespace: the
//! addresses never touch the machine's routing, so every `Net` uses the same 10.77.0.0/24
//! without colliding with another. Each service has its own address, so a host can be cut
//! from one service and not another: [`Host::cut_from`] adds a `blackhole` route to that
//! one address in the host's namespace (nothing leaves the host for it: an established
//! connection stops getting answers, a new one fails at once), [`Host::heal`] removes it.
//!
//! The test process itself stays in the root namespace; it reaches the services (to read
//! a lease in Redis, the simulator's counts) through sockets opened by a short-lived
//! thread that entered the infra namespace (`setns`): [`Net::lease`], [`Net::sim_get`].
//!
//! Everything is torn down on drop, also when the test panics: daemons and services are
//! killed, whatever is left in a namespace is killed, the namespaces are deleted (the veth
//! pairs go with them). Namespaces named `ms-PID-...` whose PID is no longer running are
//! left-overs of a crashed run and are removed when the first `Net` of a run is made.
//!
//! Needs root (`ip netns`); a test started without it fails saying so.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use super::{with_test_env, DaemonProcess};

/// Names of every namespace made here start with this (the stale-namespace sweep only
/// ever looks at these).
const NAME_PREFIX: &str = "ms-";
/// How long a service may take to answer after it was started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// One connection attempt of a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The bridge's own MAC address (locally administered), fixed for the bridge's life.
const BRIDGE_MAC: &str = "02:00:0a:4d:00:01";

/// A per-process counter: with the pid, it makes every `Net`'s names unique.
static NEXT_NET: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The services of a [`Net`], each on its own address on the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Redis,
    Postgres,
    Simulator,
}

impl Service {
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Service::Redis => Ipv4Addr::new(10, 77, 0, 1),
            Service::Postgres => Ipv4Addr::new(10, 77, 0, 2),
            Service::Simulator => Ipv4Addr::new(10, 77, 0, 3),
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Service::Redis => 6379,
            Service::Postgres => 5432,
            Service::Simulator => 8000,
        }
    }

    pub fn socket(self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.addr(), self.port()))
    }
}

/// `redis://10.77.0.1:6379/`.
pub fn redis_url() -> String {
    format!("redis://{}/", Service::Redis.socket())
}

/// `postgres://postgres@10.77.0.2:5432/postgres` (trust authentication on the bridge).
pub fn postgres_url() -> String {
    format!(
        "postgres://postgres@{}/postgres",
        Service::Postgres.socket()
    )
}

/// Where a host's daemon finds the simulator: `http://127.0.0.1:8000`, the host's
/// forwarder to 10.77.0.3:8000 (see [`Forwarder`] for why).
pub fn simulator_url() -> String {
    format!("http://{SIMULATOR_LOOPBACK}")
}

/// Where a host's daemon serves its API (the default `[http] listen`, inside the host).
const DAEMON_API: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// The simulator's own listen address in the infra namespace, and each host's forwarder
/// to it: the same, so the document URLs the simulator writes work on every host.
const SIMULATOR_LOOPBACK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8000));

/// Fails the test unless it runs as root: `ip netns` needs it, and a silent skip would
/// pass a suite that proved nothing.
fn require_root() {
    let output = Command::new("id").arg("-u").output().expect("run id -u");
    let uid = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "the multi-host tests need root for `ip netns` (network namespaces, veth pairs, routes); \
         this process runs as uid {uid}: run them as root, as CI does"
    );
}

/// Runs `ip ARGS`, panicking with its stderr when it fails (setup steps).
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs `ip ARGS`, ignoring failure (teardown steps: the thing may be gone already).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces of earlier runs that died without cleaning up: `ms-PID-...` whose
/// PID is no longer a running process. Namespaces of live runs are left alone.
fn sweep_stale_namespaces() {
    for name in namespaces() {
        let name = name.as_str();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!("removing network namespace {name} left by a run that died (pid {pid})");
            kill_everything_in(name);
            ip_quiet(&["netns", "del", name]);
        }
    }
}

/// The pids of the processes in namespace `name`.
pub fn pids_in(name: &str) -> Vec<u32> {
    let Ok(output) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// The names of the network namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// SIGKILLs every process still in namespace `name`.
fn kill_everything_in(name: &str) {
    for pid in pids_in(name) {
        let pid = pid.to_string();
        let _ = Command::new("kill")
            .args(["-KILL", &pid])
            .stderr(Stdio::null())
            .status();
    }
}

/// Moves the calling thread into network namespace `name` (for good: threads it spawns
/// afterwards start there too).
fn join_namespace(name: &str) -> io::Result<()> {
    let file = std::fs::File::open(Path::new("/run/netns").join(name))?;
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    Ok(())
}

/// Runs `work` on a thread that entered network namespace `name`: sockets it opens
/// belong to that namespace (and keep working once handed back to another thread).
fn enter_namespace<T: Send>(
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                join_namespace(name)?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// A TCP forwarder run by the test inside one namespace: it listens on `listen` and
/// connects each accepted connection to `target`, both from inside that namespace (so the
/// namespace's routes, and a cut, apply to the onward connection). Stopped on drop, its
/// open connections shut down.
///
/// Why: the daemon downloads report documents over plain http only from a loopback
/// address (pre-signed URLs never travel in clear over a network), and the simulator
/// names its own listen address in those URLs. So the simulator listens on 127.0.0.1 in
/// the infra namespace behind a forwarder on 10.77.0.3, and every host reaches it through
/// a forwarder on its own 127.0.0.1 (a sidecar, as a TLS-terminating proxy would be).
struct Forwarder {
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An idle forwarded connection is closed after this long (so a connection whose far
/// end went silent behind a cut does not hold a thread for ever).
const FORWARD_IDLE: Duration = Duration::from_secs(120);

impl Forwarder {
    fn start(namespace: &str, listen: SocketAddr, target: SocketAddr) -> Forwarder {
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = {
            let (stop, open) = (Arc::clone(&stop), Arc::clone(&open));
            let namespace = namespace.to_string();
            std::thread::spawn(move || {
                let bound = join_namespace(&namespace).and_then(|()| {
                    let listener = std::net::TcpListener::bind(listen)?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                });
                let listener = match bound {
                    Ok(listener) => {
                        let _ = ready.send(Ok(()));
                        listener
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let open = Arc::clone(&open);
                            // Spawned here, so the onward connect happens in the namespace.
                            std::thread::spawn(move || forward(client, target, &open));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        started
            .recv()
            .expect("forwarder thread")
            .unwrap_or_else(|err| panic!("forwarder on {listen} in {namespace}: {err}"));
        Forwarder {
            stop,
            open,
            thread: Some(thread),
        }
    }
}

/// Connects `client` to `target` and copies both ways until either side closes; a
/// target that cannot be reached closes the client at once.
fn forward(client: TcpStream, target: SocketAddr, open: &Mutex<Vec<TcpStream>>) {
    let Ok(server) = TcpStream::connect_timeout(&target, PROBE_TIMEOUT) else {
        return;
    };
    let streams = (|| -> io::Result<_> {
        client.set_nonblocking(false)?;
        for stream in [&client, &server] {
            stream.set_read_timeout(Some(FORWARD_IDLE))?;
            stream.set_nodelay(true)?;
        }
        let mut registry = open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.push(client.try_clone()?);
        registry.push(server.try_clone()?);
        Ok((client.try_clone()?, server.try_clone()?))
    })();
    let Ok((mut client_reader, mut server_writer)) = streams else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut client_reader, &mut server_writer);
        let _ = server_writer.shutdown(std::net::Shutdown::Write);
    });
    let (mut server_reader, mut client_writer) = (server, client);
    let _ = io::copy(&mut server_reader, &mut client_writer);
    let _ = client_writer.shutdown(std::net::Shutdown::Both);
    let _ = server_reader.shutdown(std::net::Shutdown::Both);
    let _ = upstream.join();
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for stream in self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A TCP connection to `target` from inside network namespace `name`.
fn connect_in(name: &str, target: SocketAddr) -> io::Result<TcpStream> {
    enter_namespace(name, || {
        let stream = TcpStream::connect_timeout(&target, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        Ok(stream)
    })
}

/// Whether a PostgreSQL server answers on `stream`: the startup protocol's SSLRequest
/// gets `N` (no TLS) or `S`.
pub fn postgres_answers(stream: &mut TcpStream) -> bool {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut reply = [0u8; 1];
    stream.write_all(&SSL_REQUEST).is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && matches!(&reply, b"N" | b"S")
}

/// Whether a Redis server answers `PING` on `stream`.
pub fn redis_answers(stream: &mut TcpStream) -> bool {
    resp_command(stream, &["PING"]).is_ok_and(|reply| reply == Resp::Simple("PONG".to_string()))
}

/// Whether the simulator answers `GET /_sim/stats` on `stream`.
pub fn simulator_answers(stream: &mut TcpStream) -> bool {
    http_get_json(stream, "/_sim/stats").is_ok()
}

/// A network namespace with its loopback up; on drop, whatever still runs in it is
/// killed and the namespace deleted (its veth ends go with it).
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: String) -> Namespace {
        ip(&["netns", "add", &name]);
        let namespace = Namespace { name };
        ip(&["-n", &namespace.name, "link", "set", "lo", "up"]);
        namespace
    }

    /// A TCP connection to `target` from inside this namespace.
    fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        connect_in(&self.name, target)
    }

    /// A command run inside this namespace (`ip netns exec NAME PROGRAM`; `ip` execs the
    /// program, so the child's pid is the program's own).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kill_everything_in(&self.name);
        ip_quiet(&["netns", "del", &self.name]);
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service process started in the infra namespace, with its log file.
struct ServiceProcess {
    process: Process,
    log: PathBuf,
}

impl ServiceProcess {
    fn spawn(mut command: Command, log: PathBuf) -> ServiceProcess {
        let file = std::fs::File::create(&log).expect("service log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .spawn()
            .expect("spawn service");
        ServiceProcess {
            process: Process { child },
            log,
        }
    }

    /// Panics (with the log) if the process has exited.
    fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.process.child.try_wait() {
            panic!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The bridge, the services and the namespace they share; hosts are made with
/// [`Net::add_host`].
pub struct Net {
    /// `ms-PID-N`: the prefix of every namespace of this net.
    id: String,
    redis: Option<ServiceProcess>,
    simulator: Option<ServiceProcess>,
    /// 10.77.0.3:8000 → the simulator on 127.0.0.1:8000.
    simulator_front: Option<Forwarder>,
    postgres: Option<Postgres>,
    next_host: u8,
    infra: Namespace,
    /// Logs and data of the services (PostgreSQL has its own, owned by its user).
    dir: tempfile::TempDir,
}

impl Net {
    /// The infra namespace with its bridge and the three service addresses; no service
    /// runs yet.
    pub fn new() -> Net {
        require_root();
        SWEEP.call_once(sweep_stale_namespaces);
        let id = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NEXT_NET.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("marketsync-net-")
            .tempdir()
            .expect("tempdir");
        let infra = Namespace::create(format!("{id}-infra"));
        ip(&["-n", &infra.name, "link", "add", "br0", "type", "bridge"]);
        // A fixed address: a bridge without one takes the lowest of its ports', so it
        // changes when a host (its veth) goes away, and every other host's ARP entry for
        // the services goes stale: Redis and PostgreSQL stop answering them for tens of
        // seconds (seen after a host was dropped mid-test).
        ip(&[
            "-n",
            &infra.name,
            "link",
            "set",
            "br0",
            "address",
            BRIDGE_MAC,
        ]);
        ip(&["-n", &infra.name, "link", "set", "br0", "up"]);
        for service in [Service::Redis, Service::Postgres, Service::Simulator] {
            let address = format!("{}/24", service.addr());
            ip(&["-n", &infra.name, "addr", "add", &address, "dev", "br0"]);
        }
        Net {
            id,
            redis: None,
            simulator: None,
            simulator_front: None,
            postgres: None,
            next_host: 0,
            infra,
            dir,
        }
    }

    /// A private redis-server bound to 10.77.0.1 (no persistence); waits until it answers
    /// `PING`.
    pub fn start_redis(&mut self) {
        let mut command = self.infra.command("redis-server");
        command
            .args(["--bind", &Service::Redis.addr().to_string()])
            .args(["--port", &Service::Redis.port().to_string()])
            // Reachable from the hosts' addresses without a password: the bridge is private.
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let mut redis = ServiceProcess::spawn(command, self.dir.path().join("redis.log"));
        let ready = poll_until(STARTUP_DEADLINE, || {
            redis.assert_running("redis-server");
            self.infra
                .connect(Service::Redis.socket())
                .is_ok_and(|mut stream| redis_answers(&mut stream))
        });
        assert!(ready, "redis-server did not answer PING on 10.77.0.1");
        self.redis = Some(redis);
    }

    /// `marketsync sim ARGS`, reachable on 10.77.0.3:8000 (it listens on 127.0.0.1:8000 of
    /// the infra namespace, see [`Forwarder`]); waits until it answers over HTTP.
    pub fn start_simulator(&mut self, args: &[&str]) {
        let mut command = self.infra.command(env!("CARGO_BIN_EXE_marketsync"));
        with_test_env(&mut command);
        command
            .arg("sim")
            .args(["--listen", &SIMULATOR_LOOPBACK.to_string()])
            .args(args);
        self.simulator_front = Some(Forwarder::start(
            &self.infra.name,
            Service::Simulator.socket(),
            SIMULATOR_LOOPBACK,
        ));
        let mut simulator = ServiceProcess::spawn(command, self.dir.path().join("sim.log"));
        let ready = poll_until(STARTUP_DEADLINE, || {
            simulator.assert_running("marketsync sim");
            self.sim_get("/_sim/stats").is_ok()
        });
        assert!(ready, "the simulator did not answer on {}", simulator_url());
        self.simulator = Some(simulator);
    }

    /// A private PostgreSQL (initdb into a temp dir, run as the `postgres` user: it
    /// refuses to run as root) listening on 10.77.0.2; waits until it answers.
    pub fn start_postgres(&mut self) {
        let postgres = Postgres::init(&self.infra);
        self.postgres = Some(postgres);
        self.postgres_mut().start();
    }

    /// The name of the namespace holding the bridge and the services.
    pub fn infra_namespace(&self) -> &str {
        &self.infra.name
    }

    /// The running PostgreSQL (to stop and start it mid-run).
    pub fn postgres_mut(&mut self) -> &mut Postgres {
        self.postgres
            .as_mut()
            .expect("start_postgres was called before")
    }

    /// A new host: its own namespace, a veth pair into the bridge, address 10.77.0.(10+n).
    pub fn add_host(&mut self) -> Host {
        self.next_host += 1;
        let number = self.next_host;
        assert!(number < 200, "at most 199 hosts per net");
        let label = format!("h{number}");
        let addr = Ipv4Addr::new(10, 77, 0, 10 + number);
        let namespace = Namespace::create(format!("{}-{label}", self.id));
        let bridge_end = format!("veth-{label}");
        ip(&[
            "-n",
            &self.infra.name,
            "link",
            "add",
            &bridge_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &namespace.name,
        ]);
        ip(&[
            "-n",
            &self.infra.name,
            "link",
            "set",
            &bridge_end,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            &namespace.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &namespace.name, "link", "set", "eth0", "up"]);
        let dir = tempfile::Builder::new()
            .prefix(&format!("marketsync-{label}-"))
            .tempdir()
            .expect("tempdir");
        let simulator_sidecar = Forwarder::start(
            &namespace.name,
            SIMULATOR_LOOPBACK,
            Service::Simulator.socket(),
        );
        Host {
            label,
            addr,
            daemon: None,
            _simulator_sidecar: simulator_sidecar,
            dir,
            namespace,
        }
    }

    /// One Redis command from the test (through the infra namespace).
    pub fn redis_command(&self, args: &[&str]) -> io::Result<Resp> {
        let mut stream = self.infra.connect(Service::Redis.socket())?;
        resp_command(&mut stream, args)
    }

    /// The lease of `scope` as the Redis lock backend stores it (default prefix), if any.
    pub fn lease(&self, scope: &str) -> io::Result<Option<LeaseView>> {
        match self.redis_command(&["GET", &format!("marketsync:lock:{scope}")])? {
            Resp::Bulk(Some(json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|err| io::Error::other(format!("lease of {scope}: {err}: {json}"))),
            Resp::Bulk(None) => Ok(None),
            other => Err(io::Error::other(format!("GET lease: {other:?}"))),
        }
    }

    /// Runs `work` with a client of the infra PostgreSQL (`postgres_url`), connected from
    /// inside the infra namespace (the sync client runs on a plain thread there).
    pub fn postgres<T: Send>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> io::Result<T> {
        enter_namespace(&self.infra.name, || {
            let mut client = postgres::Config::new()
                .host(&Service::Postgres.addr().to_string())
                .port(Service::Postgres.port())
                .user(POSTGRES_USER)
                .dbname("postgres")
                .connect_timeout(PROBE_TIMEOUT)
                .connect(postgres::NoTls)
                .map_err(io::Error::other)?;
            work(&mut client).map_err(io::Error::other)
        })
    }

    /// `GET path` on the simulator, its JSON body.
    pub fn sim_get(&self, path: &str) -> io::Result<serde_json::Value> {
        let mut stream = self.infra.connect(Service::Simulator.socket())?;
        http_get_json(&mut stream, path)
    }
}

impl Default for Net {
    fn default() -> Net {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Processes before their namespace (the fields below drop in declaration order).
        self.redis.take();
        self.simulator_front.take();
        self.simulator.take();
        self.postgres.take();
    }
}

/// A lease as the Redis backend stores it (`marketsync:lock:{scope}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct LeaseView {
    pub owner: String,
    pub fence: u64,
    pub expires_at_ms: i64,
}

impl LeaseView {
    /// The pid in the owner (`task:PID@host#instance`).
    pub fn owner_pid(&self) -> Option<u32> {
        marketsync::lock::parse_owner(&self.owner).map(|(_, pid, _)| pid)
    }
}

/// One host: a namespace, its address on the bridge, a data dir, at most one daemon.
pub struct Host {
    pub label: String,
    pub addr: Ipv4Addr,
    daemon: Option<DaemonProcess>,
    /// 127.0.0.1:8000 in this host → the simulator (see [`Forwarder`]).
    _simulator_sidecar: Forwarder,
    dir: tempfile::TempDir,
    /// After the daemon: the namespace is deleted once the daemon is dead.
    namespace: Namespace,
}

impl Host {
    /// The host's data dir (its own SQLite file).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Runs `marketsync run` in this host's namespace with `config` (the file's text
    /// without `data_dir`: the host's own goes first), JSON log lines, `rust_log` as
    /// `RUST_LOG` and the variables `env` (credentials, the PostgreSQL URL) on top of the
    /// test environment. A daemon still running is killed first.
    pub fn spawn_daemon(&mut self, config: &str, rust_log: &str, env: &[(String, String)]) {
        self.daemon.take();
        let text = format!("data_dir = \"{}\"\n{config}", self.data_dir().display());
        std::fs::write(self.config_path(), text).expect("write host config");
        // A host has a hostname of its own (a UTS namespace; `unshare` and `sh` exec, so
        // the child's pid is the daemon's): lease owners name `pid@hostname`, and an
        // owner on "this host" whose pid is gone is provably dead, its lease deleted at
        // once by the hygiene pass. Sharing the hostname would turn every failover into
        // that shortcut instead of a lease expiry.
        let mut command = self.namespace.command("unshare");
        command
            .args(["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(self.hostname())
            .arg(env!("CARGO_BIN_EXE_marketsync"));
        with_test_env(&mut command);
        command
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", rust_log)
            .args(["--log-format", "json", "--config"])
            .arg(self.config_path())
            .arg("run");
        self.daemon = Some(DaemonProcess::spawn_command(command));
    }

    /// The daemon's hostname (in its lease owners): `ms-PID-N-hK`, unique per run.
    pub fn hostname(&self) -> &str {
        &self.namespace.name
    }

    /// The daemon (running, frozen or dead: its log stays readable).
    pub fn daemon(&self) -> &DaemonProcess {
        self.daemon
            .as_ref()
            .expect("spawn_daemon was called before")
    }

    pub fn daemon_mut(&mut self) -> &mut DaemonProcess {
        self.daemon
            .as_mut()
            .expect("spawn_daemon was called before")
    }

    /// The daemon's pid (the owner of its leases names it).
    pub fn pid(&self) -> u32 {
        self.daemon().pid()
    }

    /// The daemon's log, one [`LogLine`] per JSON line.
    pub fn log(&self) -> Vec<LogLine> {
        parse_log(&self.daemon().logs())
    }

    /// SIGKILL, like a host that dies: no shutdown, no lease released. Reaped at once.
    pub fn kill(&mut self) {
        let daemon = self.daemon_mut();
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
    }

    /// SIGSTOP: the daemon stops dead (no timer fires, no renewal) until [`Host::thaw`].
    pub fn freeze(&self) {
        self.daemon().signal("STOP");
    }

    /// SIGCONT after [`Host::freeze`].
    pub fn thaw(&self) {
        self.daemon().signal("CONT");
    }

    /// Cuts this host off from `service` only: a `blackhole` route to the service's
    /// address in the host's namespace. Nothing leaves the host for that address: an
    /// established connection gets no more answers, a new one fails at once (EINVAL).
    pub fn cut_from(&self, service: Service) {
        let route = format!("{}/32", service.addr());
        ip(&[
            "-n",
            &self.namespace.name,
            "route",
            "add",
            "blackhole",
            &route,
        ]);
    }

    /// Undoes [`Host::cut_from`].
    pub fn heal(&self, service: Service) {
        let route = format!("{}/32", service.addr());
        ip(&[
            "-n",
            &self.namespace.name,
            "route",
            "del",
            "blackhole",
            &route,
        ]);
    }

    /// `GET path` on this host's daemon API (its default 127.0.0.1:8080, inside the
    /// host): the status and the JSON body. What an operator on that host would see.
    pub fn api_get(&self, path: &str) -> io::Result<(u16, serde_json::Value)> {
        let mut stream = self.namespace.connect(DAEMON_API)?;
        // Longer than the API's own bounds (a lock backend that does not answer: 3 s).
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        http_get(&mut stream, path, DAEMON_API)
    }

    /// A TCP connection from this host to `service`, the way its daemon connects (to the
    /// simulator through the host's forwarder on 127.0.0.1).
    pub fn connect(&self, service: Service) -> io::Result<TcpStream> {
        let target = match service {
            Service::Simulator => SIMULATOR_LOOPBACK,
            other => other.socket(),
        };
        self.namespace.connect(target)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The daemon first (SIGKILL works on a frozen one too), then the namespace.
        self.daemon.take();
    }
}

/// A PostgreSQL cluster in a temp dir owned by the `postgres` user, run in the infra
/// namespace; stopped (immediate shutdown) on drop.
pub struct Postgres {
    /// Owned by the postgres user; removed (by root) on drop.
    dir: tempfile::TempDir,
    /// `ip netns exec INFRA setpriv ...` (setpriv execs postgres: the child is the
    /// postmaster itself).
    command: Vec<String>,
    /// The infra namespace, to probe the server from the test.
    namespace: String,
    server: Option<Process>,
}

/// The non-root user PostgreSQL runs as.
const POSTGRES_USER: &str = "postgres";

/// `initdb`/`postgres` on PATH, else in /usr/local/bin or Debian's versioned directory.
fn postgres_program(name: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(Path::new("/usr/local/bin").join(name));
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        versions.sort();
        candidates.extend(versions.iter().rev().map(|dir| dir.join("bin").join(name)));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH, in /usr/local/bin or /usr/lib/postgresql/*/bin; install PostgreSQL"))
}

impl Postgres {
    fn init(infra: &Namespace) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("marketsync-pg-")
            .tempdir()
            .expect("tempdir");
        let chown = Command::new("chown")
            .arg(format!("{POSTGRES_USER}:"))
            .arg(dir.path())
            .output()
            .expect("run chown");
        assert!(
            chown.status.success(),
            "chown {POSTGRES_USER} {}: {} (the PostgreSQL tests need a user named {POSTGRES_USER}: \
             postgres refuses to run as root)",
            dir.path().display(),
            String::from_utf8_lossy(&chown.stderr).trim()
        );
        let data = dir.path().join("data");
        let initdb = Command::new("runuser")
            .args(["-u", POSTGRES_USER, "--"])
            .arg(postgres_program("initdb"))
            // --no-sync: a throwaway cluster (three times faster to make on a busy machine).
            .args([
                "--no-sync",
                "-A",
                "trust",
                "-U",
                POSTGRES_USER,
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))
            .expect("pg_hba.conf");
        writeln!(hba, "host all all 10.77.0.0/24 trust").expect("write pg_hba.conf");
        let mut command: Vec<String> = ["ip", "netns", "exec", &infra.name, "setpriv"]
            .iter()
            .map(|part| part.to_string())
            .collect();
        command.extend([
            format!("--reuid={POSTGRES_USER}"),
            format!("--regid={POSTGRES_USER}"),
            "--init-groups".to_string(),
            postgres_program("postgres").display().to_string(),
            "-D".to_string(),
            data.display().to_string(),
            "-c".to_string(),
            format!("listen_addresses={}", Service::Postgres.addr()),
            "-c".to_string(),
            format!("port={}", Service::Postgres.port()),
            "-c".to_string(),
            format!("unix_socket_directories={}", dir.path().display()),
            // A test database: durability across a power cut is not what is tested.
            "-c".to_string(),
            "fsync=off".to_string(),
        ]);
        Postgres {
            dir,
            command,
            namespace: infra.name.clone(),
            server: None,
        }
    }

    /// Starts the server (again) and waits until it answers; a no-op when it runs.
    pub fn start(&mut self) {
        if self.server.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        let mut server = Process { child };
        let ready = poll_until(STARTUP_DEADLINE, || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("postgres exited with {status}: {}", self.log());
            }
            connect_in(&self.namespace, Service::Postgres.socket())
                .is_ok_and(|mut stream| postgres_answers(&mut stream))
        });
        assert!(
            ready,
            "postgres did not answer on {}: {}",
            Service::Postgres.socket(),
            self.log()
        );
        self.server = Some(server);
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, like a crash: recovery on
    /// the next start) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &server.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still there: the Process guard SIGKILLs it.
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis reply (the kinds the harness reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
}

/// Sends one command as a RESP array and reads one reply.
fn resp_command(stream: &mut TcpStream, args: &[&str]) -> io::Result<Resp> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = io::BufReader::new(stream);
    let mut line = String::new();
    io::BufRead::read_line(&mut reader, &mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Resp::Simple(rest.to_string())),
        "-" => Ok(Resp::Error(rest.to_string())),
        ":" => rest
            .parse()
            .map(Resp::Integer)
            .map_err(|_| io::Error::other(format!("bad integer reply {line:?}"))),
        "$" => {
            let length: i64 = rest
                .parse()
                .map_err(|_| io::Error::other(format!("bad bulk reply {line:?}")))?;
            let Ok(length) = usize::try_from(length) else {
                return Ok(Resp::Bulk(None));
            };
            let mut body = vec![0u8; length + 2];
            reader.read_exact(&mut body)?;
            body.truncate(length);
            String::from_utf8(body)
                .map(|text| Resp::Bulk(Some(text)))
                .map_err(|_| io::Error::other("bulk reply is not utf-8"))
        }
        _ => Err(io::Error::other(format!("unexpected reply {line:?}"))),
    }
}

/// `GET path` over HTTP/1.1 (`Connection: close`), the body parsed as JSON; an answer
/// other than 200 is an error.
fn http_get_json(stream: &mut TcpStream, path: &str) -> io::Result<serde_json::Value> {
    match http_get(stream, path, Service::Simulator.socket())? {
        (200, body) => Ok(body),
        (status, body) => Err(io::Error::other(format!("GET {path}: {status} {body}"))),
    }
}

/// `GET path` over HTTP/1.1 (`Connection: close`) with `Host: host`: the status and the
/// body parsed as JSON.
fn http_get(
    stream: &mut TcpStream,
    path: &str,
    host: SocketAddr,
) -> io::Result<(u16, serde_json::Value)> {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of headers"))?;
    let status: u16 = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("GET {path}: no status line")))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(io::Error::other(format!("GET {path}: chunked body")));
    }
    let body =
        serde_json::from_str(body).map_err(|err| io::Error::other(format!("GET {path}: {err}")))?;
    Ok((status, body))
}

/// Polls `check` every 20 ms until it holds or `deadline` passes (blocking: service
/// startup, before any daemon runs).
fn poll_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of a daemon's JSON log (`--log-format json`).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: chrono::DateTime<chrono::Utc>,
    pub level: String,
    pub message: String,
    /// Every field, `message` included.
    pub fields: serde_json::Value,
}

impl LogLine {
    /// The string value of `field`, if any.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(|value| value.as_str())
    }

    /// Milliseconds since the epoch, to compare with a lease's `expires_at_ms`.
    pub fn at_ms(&self) -> i64 {
        self.at.timestamp_millis()
    }
}

/// Parses the JSON lines of a log; lines that are not JSON (a panic message) are skipped.
pub fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|value| {
            let at = chrono::DateTime::parse_from_rfc3339(value["timestamp"].as_str()?)
                .ok()?
                .with_timezone(&chrono::Utc);
            let fields = value["fields"].clone();
            Some(LogLine {
                at,
                level: value["level"].as_str().unwrap_or("").to_string(),
                message: fields["message"].as_str().unwrap_or("").to_string(),
                fields,
            })
        })
        .collect()
}
