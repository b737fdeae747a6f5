//! Broker and topic configuration, by Kafka's property names.
//!
//! The broker runs with no config at all (the embedded default: one node on 127.0.0.1:9092, data
//! under `./data`, every core, topics auto-created). A TOML file and `--set key=value` flags may
//! override any property below; TOML's dotted keys (`num.partitions = 3`) read as Kafka's names.
//! Topic configs fall back to the broker's `log.*` defaults, as in Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use storage::partition_log::compaction::Compaction;

pub mod node;
pub use node::{Advertised, Listener, NodeSettings, Voter};
use storage::{FlushPolicy, LogConfig, ProduceRules, Retention};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config {name:?}")]
    Unknown { name: String },
    #[error("config {name} is not supported here: {reason}")]
    NotSupported { name: String, reason: &'static str },
    #[error(
        "config {name} cannot be changed while the broker runs; set it in the config file or \
         with --set and restart"
    )]
    NotDynamic { name: String },
    #[error("config {name} = {value:?}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("reading config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    /// A long with an upper bound of ours where Kafka has none (the reason is at the entry).
    Bounded {
        min: i64,
        max: i64,
    },
    /// A decimal number in `min..=max`.
    Double {
        min: f64,
        max: f64,
    },
    Boolean,
    Choice(&'static [&'static str]),
    Text,
}

/// A topic config: its name, the broker property its default comes from, that default, and how
/// values are checked.
struct TopicConfigDef {
    name: &'static str,
    broker_default_from: Option<&'static str>,
    default: &'static str,
    kind: Kind,
}

const LONG_MAX: &str = "9223372036854775807";

const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_default_from: Some("log.cleanup.policy"),
        default: "delete",
        kind: Kind::Choice(&["delete", "compact", "compact,delete", "delete,compact"]),
    },
    TopicConfigDef {
        name: "compression.type",
        broker_default_from: Some("compression.type"),
        default: "producer",
        kind: Kind::Choice(&["producer"]),
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_default_from: Some("log.cleaner.delete.retention.ms"),
        default: "86400000",
        kind: Kind::Long { min: 0 },
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_default_from: Some("log.flush.interval.messages"),
        default: LONG_MAX,
        kind: Kind::Long { min: 1 },
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_default_from: Some("log.flush.interval.ms"),
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
    },
    // Bounded: recovery takes a length field above `MAX_BATCH_BYTES` for garbage, so a larger
    // batch, once stored, would read back as corruption.
    TopicConfigDef {
        name: "max.message.bytes",
        broker_default_from: Some("message.max.bytes"),
        default: "1048588",
        kind: Kind::Bounded {
            min: 0,
            max: storage::limits::MAX_BATCH_BYTES as i64,
        },
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_default_from: Some("log.cleaner.max.compaction.lag.ms"),
        default: LONG_MAX,
        kind: Kind::Long { min: 1 },
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_default_from: Some("log.message.timestamp.after.max.ms"),
        default: "3600000",
        kind: Kind::Long { min: 0 },
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_default_from: Some("log.message.timestamp.before.max.ms"),
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_default_from: Some("log.message.timestamp.type"),
        default: "CreateTime",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_default_from: Some("log.cleaner.min.cleanable.ratio"),
        default: "0.5",
        kind: Kind::Double { min: 0.0, max: 1.0 },
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_default_from: Some("log.cleaner.min.compaction.lag.ms"),
        default: "0",
        kind: Kind::Long { min: 0 },
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_default_from: Some("min.insync.replicas"),
        default: "1",
        kind: Kind::Long { min: 1 },
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_default_from: Some("log.retention.bytes"),
        default: "-1",
        kind: Kind::Long { min: -1 },
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_default_from: Some("log.retention.ms"),
        default: "604800000",
        kind: Kind::Long { min: -1 },
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_default_from: Some("log.segment.bytes"),
        default: "1073741824",
        kind: Kind::Long { min: 14 },
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_default_from: Some("log.roll.ms"),
        default: "604800000",
        kind: Kind::Long { min: 1 },
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_default_from: Some("unclean.leader.election.enable"),
        default: "false",
        kind: Kind::Boolean,
    },
];

/// Kafka properties that have no meaning here: refused, saying why, rather than stored and
/// silently ignored.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "log.cleaner.threads",
        "each shard runs one cleaner over the partitions it owns; there is no cleaner thread \
         pool to size (log.cleaner.dedupe.buffer.size and log.cleaner.io.max.bytes.per.second \
         are per shard)",
    ),
    (
        "log.cleaner.io.buffer.size",
        "the cleaner reads a segment a chunk at a time and each batch whole",
    ),
    (
        "log.cleaner.io.buffer.load.factor",
        "the cleaner's map holds as many keys as log.cleaner.dedupe.buffer.size allows",
    ),
    (
        "file.delete.delay.ms",
        "a removed segment is unlinked at once; reads in flight keep their open file",
    ),
    (
        "log.segment.delete.delay.ms",
        "a removed segment is unlinked at once; reads in flight keep their open file",
    ),
    (
        "index.interval.bytes",
        "the offset index takes an entry every 4096 bytes of a segment",
    ),
    (
        "log.index.interval.bytes",
        "the offset index takes an entry every 4096 bytes of a segment",
    ),
];

/// Refuses a property Kafka has and this broker does not, with why.
fn refuse_unsupported(name: &str) -> Result<(), ConfigError> {
    match NOT_SUPPORTED.iter().find(|(known, _)| *known == name) {
        Some((_, reason)) => Err(ConfigError::NotSupported {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Broker properties that are not topic defaults.
const BROKER_CONFIGS: &[(&str, &str, Kind)] = &[
    // The node's place in a cluster (Kafka's KRaft names), checked together by
    // `node_settings`.
    (
        "node.id",
        "0",
        Kind::Bounded {
            min: 0,
            max: node::NODE_ID_MAX,
        },
    ),
    ("process.roles", "broker,controller", Kind::Text),
    ("listeners", "PLAINTEXT://127.0.0.1:9092", Kind::Text),
    (
        "listener.security.protocol.map",
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        Kind::Text,
    ),
    ("controller.listener.names", "CONTROLLER", Kind::Text),
    ("advertised.listeners", "", Kind::Text),
    // Ours (Kafka removed it in 3.0): the advertised host alone, as `--advertised-host` sets it.
    ("advertised.host.name", "", Kind::Text),
    ("controller.quorum.voters", "", Kind::Text),
    // Kafka's: how often a node heartbeats to the controller, and how long the controller
    // waits for one before it fences the node (with other voters only).
    (
        "broker.heartbeat.interval.ms",
        "2000",
        Kind::Long { min: 1 },
    ),
    ("broker.session.timeout.ms", "9000", Kind::Long { min: 1 }),
    // Replication (Kafka's names and defaults): a follower that has not caught up with its
    // leader for this long leaves the ISR; followers' fetches and their bounds.
    ("replica.lag.time.max.ms", "30000", Kind::Long { min: 1 }),
    (
        "replica.fetch.max.bytes",
        "1048576",
        Kind::Bounded {
            min: 1024,
            max: 64 * 1024 * 1024,
        },
    ),
    (
        "replica.fetch.response.max.bytes",
        "10485760",
        Kind::Bounded {
            min: 1024,
            max: 32 * 1024 * 1024,
        },
    ),
    (
        "replica.fetch.wait.max.ms",
        "500",
        Kind::Bounded { min: 0, max: 30000 },
    ),
    (
        "replica.fetch.backoff.ms",
        "1000",
        Kind::Bounded {
            min: 0,
            max: 60000,
        },
    ),
    ("controller.quorum.bootstrap.servers", "", Kind::Text),
    ("broker.rack", "", Kind::Text),
    ("log.dirs", "./data", Kind::Text),
    // The metadata log (Kafka's names and defaults): replaced by a snapshot of the metadata
    // after this many bytes of records, or this long after the last snapshot (0: never by time).
    // Bounded: the log is read whole at start, up to 1 GiB.
    (
        "metadata.log.max.record.bytes.between.snapshots",
        "20971520",
        Kind::Bounded {
            min: 1,
            max: 256 * 1024 * 1024,
        },
    ),
    (
        "metadata.log.max.snapshot.interval.ms",
        "3600000",
        Kind::Long { min: 0 },
    ),
    ("cores", "", Kind::Text),
    ("auto.create.topics.enable", "true", Kind::Boolean),
    ("num.partitions", "1", Kind::Long { min: 1 }),
    ("default.replication.factor", "1", Kind::Long { min: 1 }),
    (
        "socket.request.max.bytes",
        "104857600",
        Kind::Long { min: 1024 },
    ),
    (
        "producer.id.expiration.ms",
        "86400000",
        Kind::Long { min: 1 },
    ),
    ("admin.listen", "127.0.0.1:9644", Kind::Text),
    // Kafka's name and meaning (how often the recovery point is written); Kafka's default is a
    // minute, ours is shorter so less of a log is rescanned after a crash.
    (
        "log.flush.offset.checkpoint.interval.ms",
        "5000",
        Kind::Long { min: 1 },
    ),
    // Consumer groups (Kafka's names). Kafka makes 50 offsets partitions; each costs a
    // directory and a flusher task on its shard, so we start with 16 (Redpanda's choice).
    ("offsets.topic.num.partitions", "16", Kind::Long { min: 1 }),
    // Kafka's default. A node alone (no controller.quorum.voters) makes it 1; a cluster
    // creates the offsets topic once this many nodes are live, as Kafka does.
    (
        "offsets.topic.replication.factor",
        "3",
        Kind::Bounded { min: 1, max: 32767 },
    ),
    // Kafka's offsets.commit.timeout.ms: how long a commit waits for the offsets partition's
    // ISR before REQUEST_TIMED_OUT.
    (
        "offsets.commit.timeout.ms",
        "5000",
        Kind::Long { min: 1 },
    ),
    (
        "offsets.topic.segment.bytes",
        "104857600",
        Kind::Long { min: 4096 },
    ),
    ("offset.metadata.max.bytes", "4096", Kind::Long { min: 0 }),
    (
        "group.min.session.timeout.ms",
        "6000",
        Kind::Long { min: 1 },
    ),
    (
        "group.max.session.timeout.ms",
        "1800000",
        Kind::Long { min: 1 },
    ),
    (
        "group.initial.rebalance.delay.ms",
        "3000",
        Kind::Long { min: 0 },
    ),
    // Kafka's default is unbounded; every member holds its protocol metadata in memory, so
    // a group is capped (members plus ids handed out by MEMBER_ID_REQUIRED).
    ("group.max.size", "1000", Kind::Long { min: 1 }),
    // Kafka's offsets retention: an empty group's offsets are deleted after this long.
    ("offsets.retention.minutes", "10080", Kind::Long { min: 1 }),
    (
        "offsets.retention.check.interval.ms",
        "600000",
        Kind::Long { min: 1 },
    ),
    (
        "producer.id.expiration.check.interval.ms",
        "600000",
        Kind::Long { min: 1 },
    ),
    // Connections, with Kafka's names and defaults (no limit but the open-file limit, which the
    // broker divides between partitions and connections at start).
    ("max.connections", "2147483647", Kind::Long { min: 1 }),
    (
        "max.connections.per.ip",
        "2147483647",
        Kind::Long { min: 1 },
    ),
    ("connections.max.idle.ms", "600000", Kind::Long { min: 1 }),
    // Redpanda's names (Kafka has neither). A shard holds at most this many partitions; each
    // keeps an open file, a flusher and memory. Appends are refused while the data directory's
    // free space is below the threshold (capped at 5% of the filesystem).
    ("topic_partitions_per_shard", "1000", Kind::Long { min: 1 }),
    (
        "storage_min_free_bytes",
        "1073741824",
        Kind::Long { min: 0 },
    ),
    // Ours: log (with its stack) every time a shard runs this many milliseconds past its
    // task queue's budget without yielding; 0 is off. A diagnostic: glommio samples the stack
    // with a signal and a timer thread per shard.
    ("shard_stall_threshold_ms", "0", Kind::Long { min: 0 }),
    // Retention, with Kafka's names and defaults: `log.retention.ms` (a topic default, above)
    // wins over `.minutes`, which wins over `.hours`; how often the shards look for segments
    // to delete.
    ("log.retention.hours", "168", Kind::Long { min: -1 }),
    ("log.retention.minutes", "10080", Kind::Long { min: -1 }),
    (
        "log.retention.check.interval.ms",
        "300000",
        Kind::Long { min: 1 },
    ),
    // Seastar's --idle-poll-time-us: how long an idle shard polls its rings before it sleeps
    // in the kernel; -1 polls for ever (the core stays busy; give the broker cores of its own,
    // since each fdatasync runs on an io_uring worker thread on the same core). Bounded: a
    // finite value above a second would be polling for ever by another name.
    (
        "shard_idle_poll_us",
        "50",
        Kind::Bounded {
            min: -1,
            max: 1_000_000,
        },
    ),
    ("tuning.profile", "", Kind::Text),
    // Compaction, with Kafka's names and defaults. Each shard runs one cleaner over the
    // compacted partitions it owns: the dedupe buffer (the map of keys to their latest
    // offsets) and the I/O rate are per shard; how long a cleaner with nothing to do waits.
    ("log.cleaner.enable", "true", Kind::Boolean),
    (
        "log.cleaner.dedupe.buffer.size",
        "134217728",
        Kind::Bounded {
            min: 1024 * 1024,
            max: 1 << 40,
        },
    ),
    (
        "log.cleaner.io.max.bytes.per.second",
        "1.7976931348623157E308",
        Kind::Double {
            min: 1.0,
            max: f64::MAX,
        },
    ),
    ("log.cleaner.backoff.ms", "15000", Kind::Long { min: 0 }),
    // Kafka's: incremental fetch sessions (KIP-227) kept, per shard here (Kafka's is per
    // broker, and each shard is one); 0 turns sessions off.
    (
        "max.incremental.fetch.session.cache.slots",
        "1000",
        Kind::Bounded {
            min: 0,
            max: 1_000_000,
        },
    ),
    // Kafka's: the most partitions one DescribeTopicPartitions answer lists.
    (
        "max.request.partition.size.limit",
        "2000",
        Kind::Bounded {
            min: 1,
            max: i32::MAX as i64,
        },
    ),
];

fn check_value(name: &str, kind: Kind, value: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    match kind {
        Kind::Long { min } => {
            let parsed: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("expected an integer".into()))?;
            if parsed < min {
                return Err(invalid(format!("must be at least {min}")));
            }
        }
        Kind::Bounded { min, max } => {
            let parsed: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("expected an integer".into()))?;
            if !(min..=max).contains(&parsed) {
                return Err(invalid(format!("must be between {min} and {max}")));
            }
        }
        Kind::Double { min, max } => {
            let parsed: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("expected a number".into()))?;
            if !(min..=max).contains(&parsed) {
                return Err(invalid(format!("must be between {min} and {max}")));
            }
        }
        Kind::Boolean => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(invalid("expected true or false".into()));
            }
        }
        Kind::Choice(choices) => {
            if !choices.contains(&value.trim()) {
                return Err(invalid(format!("expected one of {}", choices.join(", "))));
            }
        }
        Kind::Text => {}
    }
    Ok(())
}

/// Checks a topic-level config name and value (CreateTopics, auto-creation).
pub fn check_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    refuse_unsupported(name)?;
    let definition = TOPIC_CONFIGS
        .iter()
        .find(|definition| definition.name == name)
        .ok_or_else(|| ConfigError::Unknown {
            name: name.to_string(),
        })?;
    check_value(name, definition.kind, value)
}

/// Kafka's default of a broker property.
pub(crate) fn default_of(name: &str) -> Option<String> {
    BROKER_CONFIGS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, default, _)| default.to_string())
        .or_else(|| {
            TOPIC_CONFIGS
                .iter()
                .find(|definition| definition.broker_default_from == Some(name))
                .map(|definition| definition.default.to_string())
        })
}

/// One config (of a topic or a broker) as DescribeConfigs and CreateTopics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    /// Where the value comes from: a topic's override, or one of the broker's sources.
    pub source: ConfigSource,
    /// Kafka's ConfigType: 1 boolean, 2 string, 5 long, 6 double.
    pub config_type: i8,
    /// Not changeable by AlterConfigs (broker properties read once at start; never a topic's).
    pub read_only: bool,
    /// Every value in the chain behind it, in precedence order (a topic's override first).
    pub synonyms: Vec<Synonym>,
}

/// The consumer-group properties, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    pub offsets_partitions: i32,
    pub offsets_segment_bytes: i64,
    pub offsets_replication_factor: usize,
    pub offsets_commit_timeout: Duration,
    pub offset_metadata_max_bytes: usize,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub initial_rebalance_delay: Duration,
    pub max_size: usize,
    /// `offsets.retention.minutes`
    pub offsets_retention: Duration,
}

/// Where a config's value comes from: Kafka's ConfigSource codes, as DescribeConfigs reports
/// them, in precedence order (a topic's override first, Kafka's default last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

impl ConfigSource {
    pub fn code(self) -> i8 {
        self as i8
    }
}

/// A config value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

/// The broker's configuration: every known property with its value, from the config file and
/// `--set` flags (static) and from AlterConfigs on the broker resources (dynamic, persisted in
/// the cluster metadata; a shard's view layers its own broker's entries over the cluster-wide
/// defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    properties: BTreeMap<String, String>,
    /// The properties given a value (the rest hold their defaults): where Kafka lets one
    /// property stand in for another unless that one is set (`log.retention.ms` over
    /// `.minutes` over `.hours`).
    explicit: BTreeSet<String>,
    /// Dynamic cluster-wide defaults (the broker resource named "").
    dynamic_default: BTreeMap<String, String>,
    /// Dynamic entries of this shard's broker (the broker resource named by its id).
    dynamic_broker: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let mut properties = BTreeMap::new();
        for (name, default, _) in BROKER_CONFIGS {
            properties.insert(name.to_string(), default.to_string());
        }
        for definition in TOPIC_CONFIGS {
            if let Some(broker_name) = definition.broker_default_from {
                properties.insert(broker_name.to_string(), definition.default.to_string());
            }
        }
        BrokerConfig {
            properties,
            explicit: BTreeSet::new(),
            dynamic_default: BTreeMap::new(),
            dynamic_broker: BTreeMap::new(),
        }
    }
}

/// The broker properties that AlterConfigs may change while the broker runs: the defaults of
/// topic configs (Kafka's DynamicLogConfig: the first synonym of each, so `log.retention.ms`
/// but not `.minutes` or `.hours`), which every live log picks up. Everything else is read once
/// at start.
fn is_dynamic_broker_config(name: &str) -> bool {
    TOPIC_CONFIGS
        .iter()
        .any(|definition| definition.broker_default_from == Some(name))
}

/// Checks a dynamic broker config name and value (AlterConfigs on a broker resource).
pub fn check_dynamic_broker_config(name: &str, value: &str) -> Result<(), ConfigError> {
    refuse_unsupported(name)?;
    let kind = broker_config_kind(name).ok_or_else(|| ConfigError::Unknown {
        name: name.to_string(),
    })?;
    if !is_dynamic_broker_config(name) {
        return Err(ConfigError::NotDynamic {
            name: name.to_string(),
        });
    }
    check_value(name, kind, value)
}

/// How a broker property's values are checked, or `None` for a name the broker does not know.
fn broker_config_kind(name: &str) -> Option<Kind> {
    BROKER_CONFIGS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, _, kind)| *kind)
        .or_else(|| {
            TOPIC_CONFIGS
                .iter()
                .find(|definition| definition.broker_default_from == Some(name))
                .map(|definition| definition.kind)
        })
}

/// Kafka's ConfigType of a value kind: 1 boolean, 2 string, 5 long.
fn config_type(kind: Kind) -> i8 {
    match kind {
        Kind::Boolean => 1,
        Kind::Long { .. } | Kind::Bounded { .. } => 5,
        Kind::Double { .. } => 6,
        Kind::Choice(_) | Kind::Text => 2,
    }
}

/// A list-valued config (`cleanup.policy`), which IncrementalAlterConfigs may APPEND to and
/// SUBTRACT from.
pub fn is_list_config(name: &str) -> bool {
    matches!(name, "cleanup.policy" | "log.cleanup.policy")
}

/// A topic config's default as Kafka's LogConfig has it (what APPEND and SUBTRACT start from
/// when the topic has no override).
pub fn topic_config_default(name: &str) -> Option<&'static str> {
    TOPIC_CONFIGS
        .iter()
        .find(|definition| definition.name == name)
        .map(|definition| definition.default)
}

/// The broker properties a topic config falls back to, in Kafka's order
/// (`ServerTopicConfigSynonyms`): `retention.ms` has three, the rest one.
fn broker_synonyms(definition: &TopicConfigDef) -> Vec<&'static str> {
    match definition.name {
        "retention.ms" => vec![
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        _ => definition.broker_default_from.into_iter().collect(),
    }
}

impl BrokerConfig {
    /// Sets a broker property, checking its name and value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        refuse_unsupported(name)?;
        let kind = broker_config_kind(name).ok_or_else(|| ConfigError::Unknown {
            name: name.to_string(),
        })?;
        check_value(name, kind, value)?;
        self.properties
            .insert(name.to_string(), value.trim().to_string());
        self.explicit.insert(name.to_string());
        Ok(())
    }

    /// Applies a TOML file whose keys are Kafka property names (dotted keys nest in TOML, so
    /// `num.partitions = 3` and `"num.partitions" = 3` both work).
    pub fn apply_toml(&mut self, text: &str, path: &std::path::Path) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| ConfigError::File {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                })?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (name, value) in flat {
            self.set(&name, &value)?;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> &str {
        self.dynamic_broker
            .get(name)
            .or_else(|| self.dynamic_default.get(name))
            .or_else(|| self.properties.get(name))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// This config with dynamic entries layered over it: the cluster-wide defaults, then one
    /// broker's own. Names that are not dynamic (a metadata file written by another version)
    /// are left out.
    pub fn with_dynamic(
        &self,
        cluster_default: Option<&BTreeMap<String, String>>,
        broker: Option<&BTreeMap<String, String>>,
    ) -> BrokerConfig {
        let dynamic_only = |entries: Option<&BTreeMap<String, String>>| {
            entries
                .into_iter()
                .flatten()
                .filter(|(name, value)| check_dynamic_broker_config(name, value).is_ok())
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        };
        BrokerConfig {
            properties: self.properties.clone(),
            explicit: self.explicit.clone(),
            dynamic_default: dynamic_only(cluster_default),
            dynamic_broker: dynamic_only(broker),
        }
    }

    /// Whether a property has a value other than Kafka's default, from any source.
    fn is_set(&self, name: &str) -> bool {
        self.dynamic_broker.contains_key(name)
            || self.dynamic_default.contains_key(name)
            || self.explicit.contains(name)
    }

    /// A broker property's values from every source that sets it, in precedence order, ending
    /// with Kafka's default (DescribeConfigs' synonyms).
    pub fn synonyms(&self, name: &str) -> Vec<Synonym> {
        let mut found = Vec::new();
        let mut push = |value: Option<&String>, source| {
            if let Some(value) = value {
                found.push(Synonym {
                    name: name.to_string(),
                    value: value.clone(),
                    source,
                });
            }
        };
        push(self.dynamic_broker.get(name), ConfigSource::DynamicBroker);
        push(
            self.dynamic_default.get(name),
            ConfigSource::DynamicDefaultBroker,
        );
        if self.explicit.contains(name) {
            push(self.properties.get(name), ConfigSource::StaticBroker);
        }
        push(default_of(name).as_ref(), ConfigSource::Default);
        found
    }

    /// Every broker property with its effective value, where it comes from, Kafka's config
    /// type and whether AlterConfigs may change it (DescribeConfigs on a broker resource).
    pub fn broker_entries(&self) -> Vec<ConfigEntry> {
        self.properties
            .keys()
            .map(|name| {
                let synonyms = self.synonyms(name);
                ConfigEntry {
                    name: name.clone(),
                    value: self.get(name).to_string(),
                    source: synonyms
                        .first()
                        .map_or(ConfigSource::Default, |synonym| synonym.source),
                    config_type: broker_config_kind(name).map_or(2, config_type),
                    read_only: !is_dynamic_broker_config(name),
                    synonyms,
                }
            })
            .collect()
    }

    /// The dynamic cluster-wide defaults only (DescribeConfigs on the broker resource "").
    pub fn dynamic_default_entries(&self) -> Vec<ConfigEntry> {
        self.dynamic_default
            .iter()
            .map(|(name, value)| ConfigEntry {
                name: name.clone(),
                value: value.clone(),
                source: ConfigSource::DynamicDefaultBroker,
                config_type: broker_config_kind(name).map_or(2, config_type),
                read_only: false,
                synonyms: vec![Synonym {
                    name: name.clone(),
                    value: value.clone(),
                    source: ConfigSource::DynamicDefaultBroker,
                }],
            })
            .collect()
    }

    pub fn long(&self, name: &str) -> i64 {
        self.get(name).parse().unwrap_or(0)
    }

    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    pub fn node_id(&self) -> i32 {
        self.long("node.id") as i32
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get("log.dirs"))
    }

    /// The admin HTTP listener's address (`/metrics`, health), or `None` when set to "".
    pub fn admin_listen_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let raw = self.get("admin.listen");
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse().map(Some).map_err(|_| ConfigError::Invalid {
            name: "admin.listen".into(),
            value: raw.into(),
            reason: "expected HOST:PORT with a numeric IP, such as 127.0.0.1:9644".into(),
        })
    }

    /// The tuning profile (built-in name or file) whose cores and preflight policy apply.
    pub fn tuning_profile(&self) -> Option<String> {
        Some(self.get("tuning.profile").to_string()).filter(|profile| !profile.is_empty())
    }

    pub fn cores(&self) -> Option<String> {
        Some(self.get("cores").to_string()).filter(|cores| !cores.is_empty())
    }

    pub fn auto_create_topics(&self) -> bool {
        self.get("auto.create.topics.enable") == "true"
    }

    /// `default.replication.factor`: what a topic created without one (auto-creation, or
    /// CreateTopics with -1) asks for.
    pub fn default_replication_factor(&self) -> i64 {
        self.long("default.replication.factor").max(1)
    }

    pub fn num_partitions(&self) -> i32 {
        self.long("num.partitions").clamp(1, i32::MAX as i64) as i32
    }

    /// Consumer-group settings, read once per use (they are plain numbers).
    pub fn group_settings(&self) -> GroupSettings {
        let millis = |name: &str| Duration::from_millis(self.long(name).max(0) as u64);
        GroupSettings {
            offsets_partitions: self
                .long("offsets.topic.num.partitions")
                .clamp(1, crate::limits::PARTITIONS_PER_TOPIC_MAX as i64)
                as i32,
            offsets_segment_bytes: self.long("offsets.topic.segment.bytes"),
            offsets_replication_factor: self.long("offsets.topic.replication.factor").max(1)
                as usize,
            offsets_commit_timeout: millis("offsets.commit.timeout.ms"),
            // The stored record's metadata string has an i16 length.
            offset_metadata_max_bytes: self
                .long("offset.metadata.max.bytes")
                .clamp(0, i64::from(i16::MAX)) as usize,
            min_session_timeout: millis("group.min.session.timeout.ms"),
            max_session_timeout: millis("group.max.session.timeout.ms"),
            initial_rebalance_delay: millis("group.initial.rebalance.delay.ms"),
            max_size: self.long("group.max.size").clamp(1, i32::MAX as i64) as usize,
            offsets_retention: Duration::from_secs(
                self.long("offsets.retention.minutes")
                    .clamp(1, i64::MAX / 60) as u64
                    * 60,
            ),
        }
    }

    /// A property in milliseconds, as a duration (negative ones count as zero).
    pub fn millis(&self, name: &str) -> Duration {
        Duration::from_millis(self.long(name).max(0) as u64)
    }

    pub fn storage_min_free_bytes(&self) -> u64 {
        self.long("storage_min_free_bytes").max(0) as u64
    }

    /// `shard_stall_threshold_ms`, if stall detection is on.
    pub fn shard_stall_threshold(&self) -> Option<Duration> {
        u64::try_from(self.long("shard_stall_threshold_ms"))
            .ok()
            .filter(|milliseconds| *milliseconds > 0)
            .map(Duration::from_millis)
    }

    /// `shard_idle_poll_us`: how long an idle shard polls before it sleeps (`Duration::MAX`
    /// for -1, polling for ever).
    pub fn shard_idle_poll(&self) -> Duration {
        u64::try_from(self.long("shard_idle_poll_us")).map_or(Duration::MAX, Duration::from_micros)
    }

    /// When the metadata log is replaced by a snapshot.
    pub fn metadata_snapshot_policy(&self) -> crate::controller::quorum::SnapshotPolicy {
        crate::controller::quorum::SnapshotPolicy {
            max_bytes: self
                .long("metadata.log.max.record.bytes.between.snapshots")
                .max(1) as u64,
            max_interval: u64::try_from(self.long("metadata.log.max.snapshot.interval.ms"))
                .ok()
                .filter(|milliseconds| *milliseconds > 0)
                .map(Duration::from_millis),
        }
    }

    /// `max.incremental.fetch.session.cache.slots`.
    pub fn fetch_session_slots(&self) -> usize {
        self.long("max.incremental.fetch.session.cache.slots")
            .max(0) as usize
    }

    /// `max.request.partition.size.limit`.
    pub fn partition_listing_limit(&self) -> i32 {
        self.long("max.request.partition.size.limit")
            .clamp(1, i64::from(i32::MAX)) as i32
    }

    pub fn topic_partitions_per_shard(&self) -> usize {
        self.long("topic_partitions_per_shard").max(1) as usize
    }

    pub fn max_connections(&self) -> usize {
        self.long("max.connections").max(1) as usize
    }

    pub fn max_connections_per_ip(&self) -> usize {
        self.long("max.connections.per.ip").max(1) as usize
    }

    pub fn socket_request_max_bytes(&self) -> usize {
        self.long("socket.request.max.bytes") as usize
    }

    /// The broker's default `retention.ms`, Kafka's way: `log.retention.ms` if set, else
    /// `log.retention.minutes` if set, else `log.retention.hours`; negative means unlimited.
    pub fn log_retention_ms(&self) -> i64 {
        let set = |name: &str| self.is_set(name);
        let value = if set("log.retention.ms") {
            self.long("log.retention.ms")
        } else if set("log.retention.minutes") {
            self.long("log.retention.minutes").saturating_mul(60_000)
        } else {
            self.long("log.retention.hours").saturating_mul(3_600_000)
        };
        if value < 0 {
            -1
        } else {
            value
        }
    }

    /// A topic's effective value of config `name`: its override, else the broker default.
    pub fn topic_value(&self, overrides: &BTreeMap<String, String>, name: &str) -> Option<String> {
        let definition = TOPIC_CONFIGS
            .iter()
            .find(|definition| definition.name == name)?;
        if let Some(value) = overrides.get(name) {
            return Some(value.clone());
        }
        if name == "retention.ms" {
            return Some(self.log_retention_ms().to_string());
        }
        Some(
            definition
                .broker_default_from
                .map(|broker| self.get(broker).to_string())
                .unwrap_or_else(|| definition.default.to_string()),
        )
    }

    /// Every topic config with its effective value and where that comes from.
    pub fn topic_configs(&self, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
        TOPIC_CONFIGS
            .iter()
            .map(|definition| {
                let mut synonyms: Vec<Synonym> = overrides
                    .get(definition.name)
                    .map(|value| Synonym {
                        name: definition.name.to_string(),
                        value: value.clone(),
                        source: ConfigSource::DynamicTopic,
                    })
                    .into_iter()
                    .collect();
                // Kafka's order: by source first, then in the synonyms' order.
                let mut from_broker: Vec<Synonym> = broker_synonyms(definition)
                    .into_iter()
                    .flat_map(|broker| self.synonyms(broker))
                    .filter(|synonym| synonym.source != ConfigSource::Default)
                    .collect();
                from_broker.sort_by_key(|synonym| synonym.source);
                synonyms.extend(from_broker);
                // Kafka names the default of the last synonym that has one (`retention.ms`:
                // `log.retention.hours`, 168).
                synonyms.push(match definition.name {
                    "retention.ms" => Synonym {
                        name: "log.retention.hours".into(),
                        value: default_of("log.retention.hours").unwrap_or_default(),
                        source: ConfigSource::Default,
                    },
                    _ => Synonym {
                        name: definition
                            .broker_default_from
                            .unwrap_or(definition.name)
                            .to_string(),
                        value: definition.default.to_string(),
                        source: ConfigSource::Default,
                    },
                });
                ConfigEntry {
                    name: definition.name.to_string(),
                    value: self
                        .topic_value(overrides, definition.name)
                        .unwrap_or_default(),
                    source: synonyms
                        .first()
                        .map_or(ConfigSource::Default, |synonym| synonym.source),
                    config_type: config_type(definition.kind),
                    read_only: false,
                    synonyms,
                }
            })
            .collect()
    }

    /// The storage settings of a topic with these overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let long = |name: &str| -> i64 {
            self.topic_value(overrides, name)
                .and_then(|value| value.parse().ok())
                .unwrap_or(i64::MAX)
        };
        let flush_messages = long("flush.messages");
        let flush_ms = long("flush.ms");
        // Kafka's defaults (Long.MAX) mean "never force a flush": for us that is durable mode,
        // where every acknowledgement waits for its fdatasync, and so is `flush.messages=1`
        // (Kafka: fsync after every message). A larger `flush.messages`, or a `flush.ms`, opts in
        // to relaxed mode: acknowledged once written, synced by those settings.
        let flush = if flush_messages == 1 || (flush_messages == i64::MAX && flush_ms == i64::MAX) {
            FlushPolicy::Durable
        } else {
            FlushPolicy::Relaxed {
                messages: (flush_messages != i64::MAX).then_some(flush_messages.max(1) as u64),
                interval: (flush_ms != i64::MAX)
                    .then(|| Duration::from_millis(flush_ms.max(0) as u64)),
            }
        };
        LogConfig {
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms"),
            flush,
            produce_rules: ProduceRules {
                max_message_bytes: long("max.message.bytes").clamp(0, i32::MAX as i64) as usize,
                timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
                timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
                log_append_time: self
                    .topic_value(overrides, "message.timestamp.type")
                    .is_some_and(|value| value == "LogAppendTime"),
                keys_required: self
                    .topic_value(overrides, "cleanup.policy")
                    .is_some_and(|value| value.contains("compact")),
            },
            recovery_point_interval: Duration::from_millis(
                self.long("log.flush.offset.checkpoint.interval.ms").max(1) as u64,
            ),
            producer_id_expiration_ms: self.long("producer.id.expiration.ms"),
            min_insync_replicas: long("min.insync.replicas").max(1),
            retention: if self
                .topic_value(overrides, "cleanup.policy")
                .is_some_and(|value| value.split(',').any(|policy| policy.trim() == "delete"))
            {
                Retention {
                    ms: long("retention.ms"),
                    bytes: long("retention.bytes"),
                }
            } else {
                Retention::UNLIMITED
            },
            compaction: self
                .topic_value(overrides, "cleanup.policy")
                .is_some_and(|value| value.split(',').any(|policy| policy.trim() == "compact"))
                .then(|| Compaction {
                    min_cleanable_ratio: self
                        .topic_value(overrides, "min.cleanable.dirty.ratio")
                        .and_then(|value| value.trim().parse().ok())
                        .unwrap_or(0.5),
                    min_lag_ms: long("min.compaction.lag.ms").max(0),
                    max_lag_ms: long("max.compaction.lag.ms").max(1),
                    delete_retention_ms: long("delete.retention.ms").max(0),
                }),
        }
    }

    /// Whether the shards run their cleaners (`log.cleaner.enable`).
    pub fn cleaner_enabled(&self) -> bool {
        self.get("log.cleaner.enable") == "true"
    }

    /// Keys a shard's cleaner maps per pass: `log.cleaner.dedupe.buffer.size` at 64 bytes a
    /// key (a 16-byte fingerprint and an 8-byte offset in a hash map, counted at its largest
    /// before it grows).
    pub fn cleaner_map_entries(&self) -> usize {
        (self.long("log.cleaner.dedupe.buffer.size").max(1 << 20) / 64) as usize
    }

    /// `log.cleaner.io.max.bytes.per.second`, if it is a limit at all.
    pub fn cleaner_io_bytes_per_second(&self) -> Option<f64> {
        self.get("log.cleaner.io.max.bytes.per.second")
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|rate| *rate < 1e18)
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, inner, out);
            }
        }
        toml::Value::String(text) => out.push((prefix.to_string(), text.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_settings_stay_within_what_the_offsets_records_can_hold() {
        let mut config = BrokerConfig::default();
        let defaults = config.group_settings();
        assert_eq!(defaults.offsets_partitions, 16);
        assert_eq!(defaults.offset_metadata_max_bytes, 4096);
        assert_eq!(defaults.min_session_timeout, Duration::from_secs(6));
        config.set("offset.metadata.max.bytes", "100000").unwrap();
        assert_eq!(config.group_settings().offset_metadata_max_bytes, 32767);
        assert!(config.set("group.max.size", "0").is_err());
    }

    #[test]
    fn max_message_bytes_stops_where_recovery_would_take_a_batch_for_garbage() {
        assert!(check_topic_config("max.message.bytes", "134217728").is_ok());
        let error = check_topic_config("max.message.bytes", "134217729").unwrap_err();
        assert!(
            error.to_string().contains("between 0 and 134217728"),
            "{error}"
        );
        assert!(BrokerConfig::default()
            .set("message.max.bytes", "999999999999")
            .is_err());
    }

    #[test]
    fn retention_defaults_follow_kafkas_precedence_and_policy() {
        let mut config = BrokerConfig::default();
        let none = BTreeMap::new();
        assert_eq!(config.log_retention_ms(), 168 * 3_600_000);
        assert_eq!(
            config.log_config(&none).retention,
            Retention {
                ms: 168 * 3_600_000,
                bytes: -1
            }
        );
        config.set("log.retention.hours", "2").unwrap();
        assert_eq!(config.log_retention_ms(), 2 * 3_600_000);
        config.set("log.retention.minutes", "3").unwrap();
        assert_eq!(
            config.log_retention_ms(),
            3 * 60_000,
            "minutes win over hours"
        );
        config.set("log.retention.ms", "4000").unwrap();
        assert_eq!(config.log_retention_ms(), 4000, "ms wins over both");
        config.set("log.retention.ms", "-1").unwrap();
        assert_eq!(config.log_retention_ms(), -1);
        let overrides = BTreeMap::from([
            ("retention.ms".to_string(), "60000".to_string()),
            ("retention.bytes".to_string(), "1024".to_string()),
        ]);
        assert_eq!(
            config.log_config(&overrides).retention,
            Retention {
                ms: 60000,
                bytes: 1024
            }
        );
        let mut compacted = overrides.clone();
        compacted.insert("cleanup.policy".into(), "compact".into());
        assert_eq!(
            config.log_config(&compacted).retention,
            Retention::UNLIMITED
        );
        compacted.insert("cleanup.policy".into(), "compact,delete".into());
        assert_eq!(config.log_config(&compacted).retention.bytes, 1024);
    }

    #[test]
    fn dynamic_entries_layer_over_static_ones_and_report_their_source() {
        let mut config = BrokerConfig::default();
        config.set("log.retention.hours", "2").unwrap();
        config.set("log.segment.bytes", "2048").unwrap();
        let cluster = BTreeMap::from([
            ("log.segment.bytes".to_string(), "4096".to_string()),
            ("log.dirs".to_string(), "/elsewhere".to_string()),
        ]);
        let own = BTreeMap::from([("log.retention.ms".to_string(), "5000".to_string())]);
        let layered = config.with_dynamic(Some(&cluster), Some(&own));
        assert_eq!(layered.get("log.dirs"), "./data", "not dynamic: left out");
        let none = BTreeMap::new();
        assert_eq!(layered.log_config(&none).segment_bytes, 4096);
        assert_eq!(
            layered.log_retention_ms(),
            5000,
            "ms wins over the static hours"
        );
        assert_eq!(
            config.log_config(&none).segment_bytes,
            2048,
            "the static one unchanged"
        );

        let sources = |entry: &ConfigEntry| -> Vec<(String, ConfigSource)> {
            entry
                .synonyms
                .iter()
                .map(|synonym| (synonym.name.clone(), synonym.source))
                .collect()
        };
        let entries = layered.topic_configs(&none);
        let retention = entries.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(retention.value, "5000");
        assert_eq!(retention.source, ConfigSource::DynamicBroker);
        assert_eq!(
            sources(retention),
            vec![
                ("log.retention.ms".into(), ConfigSource::DynamicBroker),
                ("log.retention.hours".into(), ConfigSource::StaticBroker),
                ("log.retention.hours".into(), ConfigSource::Default),
            ]
        );
        let overridden = BTreeMap::from([("segment.bytes".to_string(), "100".to_string())]);
        let entries = layered.topic_configs(&overridden);
        let segment = entries.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("100", ConfigSource::DynamicTopic)
        );
        assert_eq!(
            sources(segment),
            vec![
                ("segment.bytes".into(), ConfigSource::DynamicTopic),
                (
                    "log.segment.bytes".into(),
                    ConfigSource::DynamicDefaultBroker
                ),
                ("log.segment.bytes".into(), ConfigSource::StaticBroker),
                ("log.segment.bytes".into(), ConfigSource::Default),
            ]
        );
        let untouched = entries.iter().find(|e| e.name == "flush.ms").unwrap();
        assert_eq!(untouched.source, ConfigSource::Default);

        let brokers = layered.broker_entries();
        let find = |name: &str| brokers.iter().find(|entry| entry.name == name).unwrap();
        assert!(find("log.dirs").read_only);
        assert_eq!(find("log.dirs").source, ConfigSource::Default);
        assert!(!find("log.segment.bytes").read_only);
        assert_eq!(
            find("log.segment.bytes").source,
            ConfigSource::DynamicDefaultBroker
        );
        assert_eq!(find("log.segment.bytes").value, "4096");
        assert!(
            find("log.retention.hours").read_only,
            "only the first synonym is dynamic"
        );
        assert_eq!(
            find("log.retention.hours").source,
            ConfigSource::StaticBroker
        );
        let defaults = layered.dynamic_default_entries();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].name, "log.segment.bytes");
    }

    #[test]
    fn settings_that_mean_nothing_here_are_refused_with_why() {
        let error = BrokerConfig::default()
            .set("log.cleaner.threads", "4")
            .unwrap_err();
        assert!(error.to_string().contains("one cleaner"), "{error}");
        let error = check_topic_config("file.delete.delay.ms", "1000").unwrap_err();
        assert!(
            error.to_string().contains("file.delete.delay.ms")
                && error.to_string().contains("not supported"),
            "{error}"
        );
        assert!(check_dynamic_broker_config("log.index.interval.bytes", "1").is_err());
        let none = BTreeMap::new();
        assert!(!BrokerConfig::default()
            .topic_configs(&none)
            .iter()
            .any(|entry| entry.name == "index.interval.bytes"));
        assert!(check_topic_config("min.cleanable.dirty.ratio", "2").is_err());
        assert!(check_topic_config("min.cleanable.dirty.ratio", "0.1").is_ok());
        let compacted = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let config = BrokerConfig::default();
        assert!(config.log_config(&none).compaction.is_none());
        let compaction = config.log_config(&compacted).compaction.unwrap();
        assert_eq!(compaction.min_cleanable_ratio, 0.5);
        assert_eq!(compaction.delete_retention_ms, 86_400_000);
    }

    #[test]
    fn idle_poll_is_bounded_and_minus_one_polls_for_ever() {
        let mut config = BrokerConfig::default();
        assert_eq!(config.shard_idle_poll(), Duration::from_micros(50));
        config.set("shard_idle_poll_us", "200").unwrap();
        assert_eq!(config.shard_idle_poll(), Duration::from_micros(200));
        config.set("shard_idle_poll_us", "-1").unwrap();
        assert_eq!(config.shard_idle_poll(), Duration::MAX);
        assert!(config.set("shard_idle_poll_us", "-2").is_err());
        assert!(config.set("shard_idle_poll_us", "1000001").is_err());
    }

    #[test]
    fn toml_dotted_keys_are_kafka_property_names() {
        let mut config = BrokerConfig::default();
        config
            .apply_toml(
                "num.partitions = 3\n\"auto.create.topics.enable\" = false\nlog.dirs = \"/tmp/x\"\n",
                std::path::Path::new("test.toml"),
            )
            .unwrap();
        assert_eq!(config.num_partitions(), 3);
        assert!(!config.auto_create_topics());
        assert_eq!(config.data_dir(), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_and_invalid_properties_are_refused_with_their_name() {
        let mut config = BrokerConfig::default();
        let error = config.set("num.partitionz", "3").unwrap_err();
        assert!(error.to_string().contains("num.partitionz"));
        let error = config.set("num.partitions", "-2").unwrap_err();
        assert!(error.to_string().contains("at least 1"));
        assert!(check_topic_config("cleanup.policy", "sometimes").is_err());
        assert!(check_topic_config("retention.ms", "1000").is_ok());
    }

    #[test]
    fn flush_settings_choose_the_durability_mode() {
        let config = BrokerConfig::default();
        assert_eq!(
            config.log_config(&BTreeMap::new()).flush,
            FlushPolicy::Durable
        );
        let every_message = BTreeMap::from([
            ("flush.messages".to_string(), "1".to_string()),
            ("flush.ms".to_string(), "100".to_string()),
        ]);
        assert_eq!(
            config.log_config(&every_message).flush,
            FlushPolicy::Durable,
            "flush.messages=1 means an fsync before every acknowledgement"
        );
        let relaxed = BTreeMap::from([("flush.ms".to_string(), "100".to_string())]);
        assert_eq!(
            config.log_config(&relaxed).flush,
            FlushPolicy::Relaxed {
                messages: None,
                interval: Some(Duration::from_millis(100))
            }
        );
        let overrides = BTreeMap::from([("segment.bytes".to_string(), "4096".to_string())]);
        assert_eq!(config.log_config(&overrides).segment_bytes, 4096);
        assert_eq!(
            config
                .topic_value(&BTreeMap::new(), "max.message.bytes")
                .as_deref(),
            Some("1048588")
        );
    }
}
