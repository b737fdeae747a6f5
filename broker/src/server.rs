//! Starting and stopping a broker node: data directory lock, listeners, shards, shutdown.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shards::net::BoundListener;
use shards::task::{spawn_in, Queue};
use shards::{run_shards, Mesh, ShardContext, ShardId};
use tracing::{error, info, warn};

use crate::config::node::SHARDS_PER_NODE_MAX;
use crate::config::{Advertised, BrokerConfig, ConfigError};
use crate::limits::{
    CONNECTIONS_PER_SHARD_MAX, FILE_DESCRIPTORS_PER_PARTITION, FILE_DESCRIPTORS_RESERVED,
    LOG_MEMORY_PER_SHARD_BYTES, OPEN_SEGMENTS_PER_SHARD, SHUTDOWN_DRAIN_TIMEOUT,
};
use crate::node::NodeLimits;
use crate::shard::{NodeInfo, Shard, ShardMessage};

const LOCK_FILE: &str = ".lock";
const CLEAN_SHUTDOWN_MARKER: &str = ".clean_shutdown";

/// How often each shard checks for a shutdown request from the signal thread. Only shutdown
/// waits on it; nothing on the data path does.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// Locked memory wanted per shard: io_uring rings and their registered buffer arena.
const LOCKED_MEMORY_PER_SHARD_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error(
        "data directory {path} is in use by another broker (it holds {lock}); stop it or use \
         another --data-dir"
    )]
    DataDirInUse { path: PathBuf, lock: PathBuf },
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("{0}")]
    Sharding(#[from] shards::ShardingError),
    #[error("{0}")]
    LockedMemory(String),
    #[error("{0}")]
    Profile(#[from] tuning::profile::ProfileError),
    #[error("preflight checks failed and profile {profile} refuses to start: {failures}")]
    Preflight { profile: String, failures: String },
    #[error(
        "the broker did not stop cleanly (a shard failed to start, or a log could not be \
         closed or was offline); see the log above. The next start runs recovery"
    )]
    ShardFailed,
}

/// An exclusive `flock` on the data directory, held for the life of the process.
struct DataDirLock {
    _file: File,
}

fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, StartError> {
    let lock = data_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|error| StartError::DataDir {
            path: data_dir.to_path_buf(),
            reason: error.to_string(),
        })?;
    // SAFETY: flock on a file descriptor we own and keep open for as long as the lock is held.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status != 0 {
        return Err(StartError::DataDirInUse {
            path: data_dir.to_path_buf(),
            lock,
        });
    }
    Ok(DataDirLock { _file: file })
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Reads and removes the clean-shutdown marker: if this run crashes, the next one must recover.
fn take_clean_shutdown_marker(data_dir: &Path) -> Result<bool, StartError> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let failed = |error: std::io::Error| StartError::DataDir {
        path: data_dir.to_path_buf(),
        reason: error.to_string(),
    };
    if !marker.exists() {
        return Ok(false);
    }
    std::fs::remove_file(&marker).map_err(failed)?;
    sync_dir(data_dir).map_err(failed)?;
    Ok(true)
}

fn write_clean_shutdown_marker(data_dir: &Path) -> std::io::Result<()> {
    File::create(data_dir.join(CLEAN_SHUTDOWN_MARKER))?.sync_all()?;
    sync_dir(data_dir)
}

/// The host clients are told to connect to: the advertised one, else the listener's own
/// (`localhost` where it binds every interface).
fn advertised_host(advertised: &Advertised, listen: &SocketAddr) -> String {
    if let Some(host) = &advertised.host {
        return host.clone();
    }
    match listen.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        IpAddr::V6(ip) => format!("{ip}"),
        ip => ip.to_string(),
    }
}

/// How long a busy port is retried. A broker killed a moment ago can still hold its listening
/// sockets: its io_uring rings, which have an accept in flight on them, are torn down by the
/// kernel asynchronously after the process is gone. A restart right after a crash (systemd's
/// `Restart=always`) waits that out instead of failing; a port held by a live process still
/// fails, after this long, with a clear message.
const BUSY_PORT_RETRY_FOR: Duration = Duration::from_secs(3);
const BUSY_PORT_RETRY_EVERY: Duration = Duration::from_millis(50);

/// Binds `address` (retrying a busy port for `BUSY_PORT_RETRY_FOR`) and returns the listener
/// with the address it got, which differs from `address` when the port was 0.
fn bind_listener(address: SocketAddr) -> Result<(BoundListener, SocketAddr), StartError> {
    let failed = |error: std::io::Error| StartError::Listen {
        address,
        reason: if error.kind() == std::io::ErrorKind::AddrInUse {
            "address already in use (another broker or program is listening there)".into()
        } else {
            error.to_string()
        },
    };
    let deadline = std::time::Instant::now() + BUSY_PORT_RETRY_FOR;
    let mut warned = false;
    loop {
        match BoundListener::bind(address) {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !warned {
                    warn!(%address, "address in use; retrying for a few seconds");
                    warned = true;
                }
                std::thread::sleep(BUSY_PORT_RETRY_EVERY);
            }
            Err(error) => return Err(failed(error)),
            Ok(listener) => {
                let bound = listener.local_addr().map_err(failed)?;
                return Ok((listener, bound));
            }
        }
    }
}

/// Raises the soft open-file limit to the hard one (as Kafka's and Redpanda's service units
/// ask operators to), and returns the limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass by valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// What each shard may hold, from the config and the open-file limit: every partition keeps
/// descriptors open, every connection one, and the sealed-segment cache its share. A
/// `topic_partitions_per_shard` the limit cannot carry is lowered, with a warning.
fn node_limits(config: &BrokerConfig, shard_count: usize, open_files: u64) -> NodeLimits {
    let per_shard = (open_files as usize)
        .saturating_sub(FILE_DESCRIPTORS_RESERVED)
        .checked_div(shard_count.max(1))
        .unwrap_or(0)
        .max(64);
    let open_segments = OPEN_SEGMENTS_PER_SHARD.min(per_shard / 8).max(4);
    let left = per_shard.saturating_sub(open_segments);
    // At most half of what is left goes to partitions, the rest to connections.
    let partitions_fit = (left / 2 / FILE_DESCRIPTORS_PER_PARTITION).max(1);
    let wanted = config.topic_partitions_per_shard();
    let partitions = wanted.min(partitions_fit);
    if partitions < wanted {
        warn!(
            open_files,
            partitions_per_shard = partitions,
            topic_partitions_per_shard = wanted,
            "the open-file limit cannot carry topic_partitions_per_shard; raise `ulimit -n` \
             (LimitNOFILE= in a systemd unit)"
        );
    }
    let connections = left
        .saturating_sub(partitions * FILE_DESCRIPTORS_PER_PARTITION)
        .clamp(16, CONNECTIONS_PER_SHARD_MAX);
    NodeLimits {
        partitions_per_shard: partitions,
        connections_per_shard: connections,
        open_segments_per_shard: open_segments,
        log_memory_per_shard_bytes: LOG_MEMORY_PER_SHARD_BYTES,
    }
}

/// The host checks of `tuning::preflight`: failures are logged, and refuse the start when the
/// profile says so (with no profile they only warn).
fn run_preflight(
    profile: Option<&tuning::profile::Profile>,
    data_dir: &Path,
) -> Result<(), StartError> {
    use tuning::profile::OnPreflightFailure;
    let failing: Vec<tuning::knobs::Row> =
        tuning::preflight::preflight(Path::new("/"), Some(data_dir))
            .into_iter()
            .filter(|row| row.status != tuning::knobs::Status::Ok)
            .collect();
    for row in &failing {
        warn!(
            check = %row.knob,
            current = %row.current,
            wanted = %row.wanted,
            note = %row.note,
            "preflight check failed"
        );
    }
    let refuse = profile.is_some_and(|profile| profile.preflight == OnPreflightFailure::Refuse);
    let fatal: Vec<String> = failing
        .iter()
        .filter(|row| row.is_fatal_failure())
        .map(|row| format!("{} is {} (wanted {})", row.knob, row.current, row.wanted))
        .collect();
    if refuse && !fatal.is_empty() {
        return Err(StartError::Preflight {
            profile: profile
                .map(|profile| profile.name.clone())
                .unwrap_or_default(),
            failures: fatal.join("; "),
        });
    }
    Ok(())
}

/// Runs a broker node until SIGTERM or SIGINT. Prints one line per shard with its address.
pub fn run(config: BrokerConfig) -> Result<(), StartError> {
    let configured_dir = config.data_dir();
    std::fs::create_dir_all(&configured_dir).map_err(|error| StartError::DataDir {
        path: configured_dir.clone(),
        reason: error.to_string(),
    })?;
    // Absolute from here on: glommio's directory handles fail on relative paths such as the
    // default `./data`, and log lines should name the real place.
    let data_dir = std::fs::canonicalize(&configured_dir).map_err(|error| StartError::DataDir {
        path: configured_dir.clone(),
        reason: error.to_string(),
    })?;
    let _lock = lock_data_dir(&data_dir)?;
    let profile = config
        .tuning_profile()
        .map(|name| tuning::profile::load(&name))
        .transpose()?;
    run_preflight(profile.as_ref(), &data_dir)?;
    let cores_wanted = config
        .cores()
        .or_else(|| profile.as_ref().and_then(|profile| profile.cores.clone()));
    let cores = shards::cpu::plan_cores(cores_wanted.as_deref())?;
    let locked =
        storage::dma::ensure_locked_memory(LOCKED_MEMORY_PER_SHARD_BYTES * cores.len() as u64)
            .map_err(StartError::LockedMemory)?;
    // Each executor registers its arena with three rings; leave room for all of them.
    let io_memory = (locked / (cores.len() as u64 * 4)).clamp(64 * 1024, 16 * 1024 * 1024) as usize;

    let settings = config.node_settings()?;
    if cores.len() > SHARDS_PER_NODE_MAX {
        return Err(StartError::Config(ConfigError::Invalid {
            name: "cores".into(),
            value: format!("{} cores", cores.len()),
            reason: format!(
                "a node runs at most {SHARDS_PER_NODE_MAX} shards (shard s of node n is broker \
                 n*1000+s)"
            ),
        }));
    }
    let listen = settings.client_listener.address;
    let mut listeners = Vec::with_capacity(cores.len());
    let mut advertised = Vec::with_capacity(cores.len());
    // Where this machine reaches each shard (printed for operators and scripts), and where
    // clients are told to.
    let mut reachable = Vec::with_capacity(cores.len());
    let local_host = advertised_host(&Advertised::default(), &listen);
    let host = advertised_host(&settings.advertised, &listen);
    for index in 0..cores.len() {
        let port = if listen.port() == 0 {
            0
        } else {
            listen
                .port()
                .checked_add(index as u16)
                .ok_or_else(|| StartError::Listen {
                    address: listen,
                    reason: format!("shard {index} would need a port above 65535"),
                })?
        };
        let address = SocketAddr::new(listen.ip(), port);
        let (listener, bound) = bind_listener(address)?;
        // An advertised port is shard 0's; the others follow it as the listeners do.
        let port = match settings.advertised.port {
            Some(port) => port.checked_add(index as u16).ok_or_else(|| {
                StartError::Config(ConfigError::Invalid {
                    name: "advertised.listeners".into(),
                    value: config.get("advertised.listeners").into(),
                    reason: format!("shard {index} would be advertised above port 65535"),
                })
            })?,
            None => bound.port(),
        };
        advertised.push((host.clone(), port));
        reachable.push(format!("{local_host}:{}", bound.port()));
        listeners.push(Some(listener));
    }
    // With other voters, shard 0 serves them on the CONTROLLER listener: bound now, so a port
    // in use fails the start here, as the client listener does.
    let controller_listener = match &settings.controller_listener {
        Some(listener) => {
            let (bound, address) = bind_listener(listener.address)?;
            println!("controller listening on {address}");
            Some(bound)
        }
        None => None,
    };
    let admin = match config.admin_listen_address()? {
        Some(address) => {
            let (listener, bound) = bind_listener(address)?;
            println!("admin listening on {bound}");
            Some(listener)
        }
        None => None,
    };
    let clean_shutdown = take_clean_shutdown_marker(&data_dir)?;
    crate::disk_space::ensure_reserve(&data_dir);
    let open_files = raise_open_files_limit();
    let limits = node_limits(&config, cores.len(), open_files);
    info!(
        open_files,
        partitions_per_shard = limits.partitions_per_shard,
        connections_per_shard = limits.connections_per_shard,
        "resource limits"
    );
    let node = Arc::new(NodeInfo {
        node_id: settings.node_id,
        rack: settings.rack.clone(),
        voters: settings.voters.clone(),
        shard_count: cores.len(),
        advertised,
        data_dir: data_dir.clone(),
        clean_shutdown,
        limits,
        controller_listener: Mutex::new(controller_listener),
        connections: crate::connections::ConnectionQuotas::new(
            config.max_connections(),
            config.max_connections_per_ip(),
        ),
        config,
    });
    for (index, (host, port)) in node.advertised.iter().enumerate() {
        let advertised = format!("{host}:{port}");
        let shown = if advertised == reachable[index] {
            String::new()
        } else {
            format!(" (advertised as {advertised})")
        };
        println!(
            "shard {index} (broker id {}) on core {}{shown} listening on {}",
            node.broker_id(ShardId(index as u16)),
            cores[index],
            reachable[index],
        );
    }
    println!("bootstrap {}", reachable[0]);
    info!(
        data_dir = %data_dir.display(),
        shards = cores.len(),
        clean_shutdown,
        "broker starting"
    );

    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone()).map_err(|error| {
            StartError::DataDir {
                path: data_dir.clone(),
                reason: format!("cannot install the signal handler: {error}"),
            }
        })?;
    }
    let listeners = Arc::new(Mutex::new(listeners));
    let admin = Arc::new(Mutex::new(admin));
    let executor_options = shards::ExecutorOptions {
        io_memory_bytes: io_memory,
        stall_threshold: node.config.shard_stall_threshold(),
        idle_poll: node.config.shard_idle_poll(),
    };
    let results = run_shards(&cores, &executor_options, {
        let node = node.clone();
        let shutdown = shutdown.clone();
        move |context: ShardContext<ShardMessage>| {
            let node = node.clone();
            let shutdown = shutdown.clone();
            let listener = listeners
                .lock()
                .ok()
                .and_then(|mut listeners| listeners.get_mut(context.shard.0 as usize)?.take());
            // The admin listener goes to shard 0, which answers for the whole node.
            let admin = (context.shard == ShardId(0))
                .then(|| admin.lock().ok().and_then(|mut admin| admin.take()))
                .flatten();
            shard_main(context, node, listener, admin, shutdown)
        }
    })?;
    if results.iter().all(|clean| *clean) {
        if let Err(error) = write_clean_shutdown_marker(&data_dir) {
            warn!(%error, "could not record the clean shutdown; the next start will recover");
        }
        info!("broker stopped cleanly");
        Ok(())
    } else {
        Err(StartError::ShardFailed)
    }
}

/// How long a stopping node of a cluster waits for its leaderships to move.
const HANDOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn wait_for_shutdown(shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Relaxed) {
        shards::task::sleep(SHUTDOWN_POLL).await;
    }
}

/// One shard's life: join the mesh, receive metadata, serve until shutdown, close its logs.
/// Returns whether it stopped cleanly.
async fn shard_main(
    context: ShardContext<ShardMessage>,
    node: Arc<NodeInfo>,
    listener: Option<BoundListener>,
    admin: Option<BoundListener>,
    shutdown: Arc<AtomicBool>,
) -> bool {
    let id = context.shard;
    let Some(listener) = listener else {
        error!(shard = %id, "no listener for this shard");
        shutdown.store(true, Ordering::Relaxed);
        return false;
    };
    let mut mesh = match Mesh::join(context.mesh).await {
        Ok(mesh) => mesh,
        Err(reason) => {
            error!(shard = %id, %reason, "mesh");
            shutdown.store(true, Ordering::Relaxed);
            return false;
        }
    };
    let receivers = mesh.take_receivers();
    let shard = Shard::new(id, node, mesh);
    for (peer, receiver) in receivers {
        let shard = shard.clone();
        shards::task::spawn(async move {
            while let Some(message) = receiver.recv().await {
                shard.handle_message(peer, message).await;
            }
        })
        .detach();
    }
    // Serving health and metrics from the start: ready stays 503 while logs recover.
    let _admin = admin.map(|admin| {
        spawn_in(
            Queue::Background,
            crate::observability::admin::serve(shard.clone(), admin.into_listener()),
        )
    });
    if let Err(reason) = shard.bootstrap_metadata().await {
        error!(%reason, "cannot load the cluster metadata");
        shutdown.store(true, Ordering::Relaxed);
        return false;
    }
    if shard.controller.is_some() {
        // The snapshot was applied on every shard before bootstrap returned.
        shard.set_node_ready();
    }
    futures_lite::future::or(shard.wait_ready(), wait_for_shutdown(&shutdown)).await;
    let listener = listener.into_listener();
    // Connections (their tasks run where the accept loop runs) and the logs' write paths are
    // in the request queue; timers and answers no client request waits for are not.
    let accepting = spawn_in(
        Queue::Requests,
        crate::connections::accept_loop(shard.clone(), listener),
    );
    let housekeeping = spawn_in(Queue::Background, shard.clone().run_housekeeping());
    let retention = spawn_in(Queue::Background, shard.clone().run_retention());
    let cleaner = spawn_in(Queue::Background, shard.clone().run_cleaner());
    let isr_checks = spawn_in(Queue::Background, shard.clone().run_isr_checks());
    let group_clock = spawn_in(Queue::Background, {
        let shard = shard.clone();
        async move {
            loop {
                shards::task::sleep(crate::groups::GROUP_TICK).await;
                shard.groups.tick(std::time::Instant::now());
            }
        }
    });
    info!(shard = %id, "shard ready");
    wait_for_shutdown(&shutdown).await;
    // Stop taking connections and requests, answer what was read, then flush and close.
    shard.set_closing();
    drop(isr_checks);
    shard.hand_over_leaderships(HANDOVER_TIMEOUT).await;
    drop(accepting);
    shard.connections.drain(SHUTDOWN_DRAIN_TIMEOUT).await;
    drop(group_clock);
    drop(housekeeping);
    drop(retention);
    drop(cleaner);
    let clean = shard.close_logs().await;
    info!(shard = %id, clean, "shard stopped");
    clean
}
