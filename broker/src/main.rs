//! `broker start`: command line -> config -> shards -> serve until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use broker::config::BrokerConfig;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "broker",
    version,
    about = "A Kafka-compatible, thread-per-core event-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker node (the default when no command is given).
    Start(StartArgs),
}

#[derive(Args, Default)]
struct StartArgs {
    /// Directory for partition logs and cluster metadata (Kafka: log.dirs) [default: ./data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The client listener, PLAINTEXT://HOST:PORT or HOST:PORT, for shard 0; shard s listens
    /// on PORT+s, and port 0 lets every shard pick a free port (Kafka: listeners)
    /// [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Cores to run shards on, one shard per core, e.g. 0-3,6 [default: every core this process
    /// may run on]
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// TOML file of Kafka broker properties, e.g. `num.partitions = 3` [default: none]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Host name advertised to clients in Metadata (advertised.listeners gives the port too)
    /// [default: the listen address]
    #[arg(long, value_name = "HOST")]
    advertised_host: Option<String>,
    /// This node's id (Kafka: node.id); shard s is advertised as broker id NODE*1000+s [default: 0]
    #[arg(long, value_name = "N")]
    node_id: Option<u32>,
    /// Tuning profile (dev, production, low-latency, or a profile file): its cores unless
    /// --cores is given, and whether failed preflight checks refuse the start or warn
    /// [default: none; preflight failures warn]
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// Address of the admin HTTP listener: /metrics (Prometheus), /v1/status/ready,
    /// /v1/status/live; an empty value disables it [default: 127.0.0.1:9644]
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Set any Kafka broker property, e.g. --set auto.create.topics.enable=false; repeatable.
    /// Defaults: auto.create.topics.enable=true, num.partitions=1,
    /// socket.request.max.bytes=104857600, log.segment.bytes=1073741824,
    /// message.max.bytes=1048588; log.flush.interval.messages/ms unset (durable mode: every
    /// acknowledgement waits for fdatasync)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

fn build_config(args: StartArgs) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("reading config file {}: {error}", path.display()))?;
        config
            .apply_toml(&text, path)
            .map_err(|error| error.to_string())?;
    }
    for assignment in &args.set {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("--set {assignment:?}: expected NAME=VALUE"))?;
        config
            .set(name.trim(), value)
            .map_err(|error| error.to_string())?;
    }
    let flags = [
        (
            "log.dirs",
            args.data_dir.map(|dir| dir.display().to_string()),
        ),
        ("listeners", args.listen),
        ("cores", args.cores),
        ("advertised.host.name", args.advertised_host),
        ("node.id", args.node_id.map(|id| id.to_string())),
        ("admin.listen", args.admin_listen),
        ("tuning.profile", args.profile),
    ];
    for (name, value) in flags {
        if let Some(value) = value {
            config
                .set(name, &value)
                .map_err(|error| error.to_string())?;
        }
    }
    config.node_settings().map_err(|error| error.to_string())?;
    config
        .admin_listen_address()
        .map_err(|error| error.to_string())?;
    Ok(config)
}

/// A panic anywhere stops the node at once and whole: a shard that died while the others serve
/// would leave its partitions unanswered and the controller waiting on it forever. What was
/// acknowledged is on disk; the next start runs recovery. (Release builds also set
/// `panic = "abort"`; this covers every build and says why on the way out.)
fn abort_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("broker: a thread panicked; stopping the node (the next start runs recovery)");
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    abort_on_panic();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Start(args)) => args,
        None => StartArgs::default(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let config = match build_config(args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("broker: {message}");
            return ExitCode::from(2);
        }
    };
    match broker::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("broker: {error}");
            ExitCode::FAILURE
        }
    }
}
