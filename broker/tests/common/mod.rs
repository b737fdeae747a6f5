//! Test harness: the real `broker` binary on free ports, and librdkafka clients for it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub struct Broker {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub bootstrap: String,
    pub shard_addresses: Vec<String>,
    /// The admin HTTP listener (`/metrics`, health), on a free port.
    pub admin_address: String,
    log: PathBuf,
    extra_args: Vec<String>,
    working_dir: Option<PathBuf>,
    listen: String,
    /// Environment variables the next launch adds (a test hook such as `BROKER_TEST_CRASH_AT`).
    pub env: Vec<(String, String)>,
}

impl Broker {
    fn unlaunched(
        data_dir: PathBuf,
        log: PathBuf,
        extra_args: Vec<String>,
        working_dir: Option<PathBuf>,
        listen: String,
    ) -> Broker {
        Broker {
            child: None,
            data_dir,
            bootstrap: String::new(),
            shard_addresses: Vec::new(),
            admin_address: String::new(),
            log,
            extra_args,
            working_dir,
            listen,
            env: Vec::new(),
        }
    }

    /// Starts a broker on `data_dir` with every shard on a free port (`--listen 127.0.0.1:0`).
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Broker {
        let mut broker = Broker::unlaunched(
            data_dir.to_path_buf(),
            data_dir.with_extension("log"),
            extra_args.iter().map(|arg| arg.to_string()).collect(),
            None,
            "127.0.0.1:0".into(),
        );
        broker.launch();
        broker
    }

    /// Starts one node of a cluster: `listen` is its whole `listeners` value (a client listener
    /// on port 0 and its CONTROLLER listener), its log beside `data_dir`.
    pub fn start_node(data_dir: &Path, listen: &str, extra_args: &[&str]) -> Broker {
        let mut broker = Broker::unlaunched(
            data_dir.to_path_buf(),
            data_dir.with_extension("log"),
            extra_args.iter().map(|arg| arg.to_string()).collect(),
            None,
            listen.to_string(),
        );
        broker.launch();
        broker
    }

    /// Starts a broker whose shards keep their ports across restarts: shard s on `base + s`,
    /// with a base whose ports were free a moment ago (retried if another process takes one).
    pub fn start_on_fixed_ports(data_dir: &Path, extra_args: &[&str]) -> Broker {
        let shards = std::thread::available_parallelism().map_or(1, |count| count.get());
        // Below Linux's ephemeral range (32768 and up): a client reconnecting to a stopped
        // shard could otherwise be given that very port as its own and connect to itself.
        let mut candidate = 20_000 + (std::process::id() % 6_000) as u16 * 2;
        for _ in 0..50 {
            candidate = 20_000 + (candidate - 20_000 + 97) % 12_000;
            let base = candidate;
            let free = (0..shards as u16)
                .all(|shard| std::net::TcpListener::bind(("127.0.0.1", base + shard)).is_ok());
            if !free {
                continue;
            }
            let mut broker = Broker::unlaunched(
                data_dir.to_path_buf(),
                data_dir.with_extension("log"),
                extra_args.iter().map(|arg| arg.to_string()).collect(),
                None,
                format!("127.0.0.1:{base}"),
            );
            if broker.try_launch() {
                return broker;
            }
        }
        panic!("no free run of ports for the broker's shards");
    }

    /// Starts a broker in `working_dir` with the relative `--data-dir data`, as a user running
    /// the default would.
    pub fn start_relative(working_dir: &Path) -> Broker {
        let mut broker = Broker::unlaunched(
            PathBuf::from("data"),
            working_dir.join("broker.log"),
            Vec::new(),
            Some(working_dir.to_path_buf()),
            "127.0.0.1:0".into(),
        );
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        assert!(
            self.try_launch(),
            "broker exited early; log:\n{}",
            self.log_text()
        );
    }

    /// Starts the process; false if it exited before listening (a port was taken meanwhile).
    fn try_launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
        if let Some(directory) = &self.working_dir {
            command.current_dir(directory);
        }
        let mut child = command
            .args([
                "start",
                "--admin-listen",
                "127.0.0.1:0",
                "--listen",
                &self.listen,
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .envs(
                self.env
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the broker binary");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        self.shard_addresses.clear();
        loop {
            let Some(Ok(line)) = lines.next() else {
                child.wait().ok();
                return false;
            };
            if let Some(address) = line.strip_prefix("admin listening on ") {
                self.admin_address = address.to_string();
            }
            if let Some(address) = line.strip_prefix("bootstrap ") {
                self.bootstrap = address.to_string();
                break;
            }
            if let Some((_, address)) = line
                .strip_prefix("shard ")
                .and_then(|line| line.rsplit_once("listening on "))
            {
                self.shard_addresses.push(address.to_string());
            }
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        true
    }

    /// The broker process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// Resident memory of the broker process, in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid().unwrap())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap();
        kib * 1024
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` (SIGTERM or SIGINT), then waits for the exit; true if the status was 0.
    pub fn stop_with(&mut self, signal: i32) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on the pid of a child we started and have not reaped yet.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                panic!("broker did not stop within 30 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to `limit`) for the process to end by itself; whether it did. The broker is
    /// then stopped, ready for `restart`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return true;
                }
            } else {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.launch();
    }

    /// Restarts with other extra arguments (another `--cores`, say).
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|arg| arg.to_string()).collect();
        self.restart();
    }

    /// Waits (up to a minute) until `/v1/status/ready` answers 200.
    pub fn wait_ready(&self) {
        self.wait_ready_within(Duration::from_secs(60));
    }

    /// Waits up to `limit` until `/v1/status/ready` answers 200.
    pub fn wait_ready_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while http(&self.admin_address, "GET", "/v1/status/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "the broker did not become ready within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("broker.address.family", "v4")
            .set("log_level", "3");
        // TEST_RDKAFKA_DEBUG=eos,protocol (say) turns on librdkafka's debug log when a test
        // needs diagnosing.
        if let Ok(debug) = std::env::var("TEST_RDKAFKA_DEBUG") {
            config
                .set("debug", debug)
                .set("log_level", "7")
                .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        config
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- broker log (last 40 lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A record as a consumer saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: Option<i64>,
}

impl Seen {
    pub fn from_message(message: &BorrowedMessage<'_>) -> Seen {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        (
                            header.key.to_string(),
                            header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Seen {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message.timestamp().to_millis(),
        }
    }
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived (or
/// the deadline passed) and returns them in arrival order.
pub fn consume_all(broker: &Broker, topic: &str, partitions: i32, expected: usize) -> Vec<Seen> {
    let all: Vec<i32> = (0..partitions).collect();
    consume_all_of(broker, topic, &all, expected)
}

/// `consume_all` for some partitions only.
pub fn consume_all_of(
    broker: &Broker,
    topic: &str,
    partitions: &[i32],
    expected: usize,
) -> Vec<Seen> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("enable.partition.eof", "false")
        // assign() needs a group id in rdkafka; nothing is committed (the group is never joined).
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => seen.push(Seen::from_message(&message)),
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
    }
    // Anything beyond `expected` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
            seen.push(Seen::from_message(&message));
        }
    }
    seen
}

pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("broker-test")
        .tempdir()
        .unwrap()
}

use rdkafka::client::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::{Arc, Mutex};

/// A delivery report: which record (by index), where it landed, or why it failed.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub index: usize,
    pub partition: i32,
    pub offset: i64,
    pub error: Option<String>,
    /// When the report arrived.
    pub at: Instant,
}

#[derive(Clone, Default)]
pub struct Deliveries(pub Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for Deliveries {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        eprintln!("librdkafka {facility}: {message}");
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let delivery = match result {
            Ok(message) => Delivery {
                index: *index,
                partition: message.partition(),
                offset: message.offset(),
                error: None,
                at: Instant::now(),
            },
            Err((error, message)) => Delivery {
                index: *index,
                partition: message.partition(),
                offset: -1,
                error: Some(error.to_string()),
                at: Instant::now(),
            },
        };
        self.0.lock().unwrap().push(delivery);
    }
}

pub fn producer(
    broker: &Broker,
    settings: &[(&str, &str)],
) -> (BaseProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let mut config = broker.client_config();
    config.set("linger.ms", "5");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer = config
        .create_with_context(deliveries.clone())
        .expect("create producer");
    (producer, deliveries)
}

/// The record number `index` of a test run: key, value, headers and timestamp all derive from it.
pub struct TestRecord {
    pub key: String,
    pub value: String,
    pub header: String,
    pub timestamp: i64,
}

pub fn test_record(index: usize, base_timestamp: i64) -> TestRecord {
    TestRecord {
        key: format!("key-{index}"),
        value: format!("value-{index}-{}", "x".repeat(index % 97)),
        header: format!("trace-{index}"),
        timestamp: base_timestamp + index as i64,
    }
}

/// Sends records `0..count` to `topic`, record i to partition `i % partitions`, polling while
/// the queue is full. Does not wait for delivery.
pub fn send_records(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
    base_timestamp: i64,
) {
    for index in range {
        let record = test_record(index, base_timestamp);
        let mut pending = BaseRecord::with_opaque_to(topic, Box::new(index))
            .partition((index % partitions as usize) as i32)
            .key(record.key.as_bytes())
            .payload(record.value.as_bytes())
            .timestamp(record.timestamp)
            .headers(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some(record.header.as_bytes()),
            }));
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((_, returned)) => {
                    pending = returned;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
}

/// Flushes the producer and returns every delivery report, sorted by record index.
pub fn flush(producer: &BaseProducer<Deliveries>, deliveries: &Deliveries) -> Vec<Delivery> {
    producer.flush(Duration::from_secs(60)).expect("flush");
    let mut reports = deliveries.0.lock().unwrap().clone();
    reports.sort_by_key(|delivery| delivery.index);
    reports
}

/// Produces records (acks=all, no retries) to `topic` from a background thread and SIGKILLs
/// the broker once `acknowledged` deliveries have come back, or after a minute. Returns the
/// deliveries that were acknowledged and how many records had been sent by then.
pub fn kill_while_producing(
    broker: &mut Broker,
    topic: &str,
    partitions: i32,
    base_timestamp: i64,
    acknowledged: usize,
) -> (Vec<Delivery>, usize) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (producer, deliveries) = producer(
        broker,
        &[
            ("acks", "all"),
            ("message.timeout.ms", "5000"),
            ("retries", "0"),
        ],
    );
    let producer = Arc::new(producer);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let producer = producer.clone();
        let stop = stop.clone();
        let topic = topic.to_string();
        std::thread::spawn(move || {
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) && next < 200_000 {
                send_records(
                    &producer,
                    &topic,
                    partitions,
                    next..next + 50,
                    base_timestamp,
                );
                next += 50;
                producer.poll(Duration::from_millis(1));
            }
            next
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries.0.lock().unwrap().len() < acknowledged && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    producer.flush(Duration::from_secs(10)).ok();
    let acknowledged = deliveries
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|delivery| delivery.error.is_none())
        .cloned()
        .collect();
    (acknowledged, sent)
}

/// One past the highest acknowledged offset of each partition: what a consumer must reach.
pub fn acknowledged_ends(acknowledged: &[Delivery], partitions: usize) -> Vec<i64> {
    let mut ends = vec![0i64; partitions];
    for delivery in acknowledged {
        let end = &mut ends[delivery.partition as usize];
        *end = (*end).max(delivery.offset + 1);
    }
    ends
}

/// Checks that every acknowledged record is in `seen` at its acknowledged offset, with the
/// content `send_records` gave it.
pub fn assert_acknowledged_present(seen: &[Seen], acknowledged: &[Delivery], base_timestamp: i64) {
    for delivery in acknowledged {
        let record = test_record(delivery.index, base_timestamp);
        let found = seen
            .iter()
            .find(|seen| seen.partition == delivery.partition && seen.offset == delivery.offset)
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged record {} at {}-{} is missing",
                    delivery.index, delivery.partition, delivery.offset
                )
            });
        assert_eq!(found.value.as_deref(), Some(record.value.as_bytes()));
    }
}

/// Checks that `seen` holds exactly records `0..count` as `send_records` sent them: right
/// content, each partition's records in send order at dense offsets from 0.
pub fn assert_exactly_the_sent_records(
    seen: &[Seen],
    partitions: i32,
    count: usize,
    base_timestamp: i64,
) {
    assert_eq!(seen.len(), count, "records consumed");
    for partition in 0..partitions {
        let in_partition: Vec<&Seen> = seen.iter().filter(|s| s.partition == partition).collect();
        let expected: Vec<usize> = (0..count)
            .filter(|index| index % partitions as usize == partition as usize)
            .collect();
        assert_eq!(in_partition.len(), expected.len(), "partition {partition}");
        for (position, (seen, index)) in in_partition.iter().zip(expected).enumerate() {
            let record = test_record(index, base_timestamp);
            assert_eq!(
                seen.offset, position as i64,
                "partition {partition} offsets are dense"
            );
            assert_eq!(seen.key.as_deref(), Some(record.key.as_bytes()));
            assert_eq!(seen.value.as_deref(), Some(record.value.as_bytes()));
            assert_eq!(
                seen.headers,
                vec![("trace".to_string(), record.header.into_bytes())]
            );
            assert_eq!(seen.timestamp, Some(record.timestamp));
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The segment files (`*.log`) in a partition directory: how many, and their bytes together.
fn segment_file_sizes(partition_dir: &Path) -> Vec<u64> {
    std::fs::read_dir(partition_dir)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .collect()
}

pub fn segment_files(partition_dir: &Path) -> usize {
    segment_file_sizes(partition_dir).len()
}

pub fn segment_bytes(partition_dir: &Path) -> u64 {
    segment_file_sizes(partition_dir).iter().sum()
}

/// Creates a topic through the Admin API (CreateTopics) and waits for the result.
pub fn create_topic(broker: &Broker, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    create_replicated_topic(broker, topic, partitions, 1, configs)
}

/// `create_topic` with `replication_factor` replicas of each partition.
pub fn create_replicated_topic(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        broker.client_config().create().unwrap();
    let mut new_topic = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results =
        futures_lite::future::block_on(admin.create_topics(&[new_topic], &AdminOptions::new()))
            .expect("create_topics");
    for result in results {
        result.unwrap_or_else(|(name, error)| panic!("creating {name}: {error}"));
    }
}

/// The leader broker id of each partition of `topic`, from Metadata.
pub fn leaders(broker: &Broker, topic: &str) -> Vec<i32> {
    let consumer: BaseConsumer = broker.client_config().create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let topic = &metadata.topics()[0];
    let mut partitions: Vec<_> = topic
        .partitions()
        .iter()
        .map(|partition| (partition.id(), partition.leader()))
        .collect();
    partitions.sort();
    partitions.into_iter().map(|(_, leader)| leader).collect()
}

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A raw connection for protocol-level tests, with a read timeout so a silent broker fails the
/// test instead of hanging it.
pub fn connect(address: &str) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Frames a request with kafka-protocol's encoder: the tests' codec, independent of the broker's.
pub fn request_frame<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    buffer.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("broker-test")))
        .encode(&mut buffer, api_key.request_header_version(version))
        .unwrap();
    body.encode(&mut buffer, version).unwrap();
    let size = (buffer.len() - 4) as i32;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    buffer.to_vec()
}

/// Asserts that the broker closes `stream` (end of stream or reset) within ten seconds, rather
/// than leaving it open, waiting for more.
pub fn assert_closed_by_broker(stream: &mut std::net::TcpStream, what: &str) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the broker to close the connection, got {other:?}"),
    }
}

/// Reads one response frame (without its size); `None` if the broker closed the connection.
pub fn read_frame(stream: &mut std::net::TcpStream) -> Option<Bytes> {
    use std::io::Read;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

pub fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// A raw connection to the shard that coordinates `group` (FindCoordinator v3 on the bootstrap).
pub fn coordinator(broker: &Broker, group: &str) -> std::net::TcpStream {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let found: FindCoordinatorResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(text(group)),
    );
    connect(&format!("{}:{}", found.host, found.port))
}

/// Sends one request and decodes its response.
pub fn kafka_call<Q: Encodable, R: Decodable>(
    stream: &mut std::net::TcpStream,
    api_key: ApiKey,
    version: i16,
    request: &Q,
) -> R {
    use std::io::Write;
    stream
        .write_all(&request_frame(api_key, version, 1, request))
        .unwrap();
    let mut response = read_frame(stream).expect("a response");
    ResponseHeader::decode(&mut response, api_key.response_header_version(version)).unwrap();
    R::decode(&mut response, version).unwrap()
}

/// Decodes one response frame read from `stream`.
pub fn read_response<R: Decodable>(
    stream: &mut std::net::TcpStream,
    api_key: ApiKey,
    version: i16,
) -> R {
    let mut response = read_frame(stream).expect("a response");
    ResponseHeader::decode(&mut response, api_key.response_header_version(version)).unwrap();
    R::decode(&mut response, version).unwrap()
}

/// (status code, body) of one HTTP request to the admin listener.
pub fn http(address: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

/// Sum of a metric's samples over shards whose line contains `labels`.
/// The value of an unlabelled metric in a Prometheus scrape.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub fn metric_sum(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// What `consumer`'s group has committed for partitions `0..partitions` of `topic` (-1 where
/// nothing is).
pub fn committed(consumer: &BaseConsumer, topic: &str, partitions: i32) -> Vec<i64> {
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let offsets = consumer
        .committed_offsets(wanted, Duration::from_secs(30))
        .unwrap();
    (0..partitions)
        .map(
            |partition| match offsets.find_partition(topic, partition).unwrap().offset() {
                Offset::Offset(offset) => offset,
                _ => -1,
            },
        )
        .collect()
}
