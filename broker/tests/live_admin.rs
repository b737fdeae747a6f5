//! Live administration against the real binary and librdkafka's admin client: AlterConfigs on
//! topics and brokers changes what live logs do (retention, segment size) without a restart,
//! DescribeConfigs shows the new values with their sources, the changes survive a crash, and
//! CreatePartitions adds partitions that producers use and a consumer group is rebalanced onto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, ResourceSpecifier,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::Message;

/// Retention runs every 100 ms in these tests instead of Kafka's 5 minutes.
const RETENTION_CHECK: &str = "log.retention.check.interval.ms=100";

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    broker.client_config().create().unwrap()
}

/// AlterConfigs with one resource. rdkafka 0.39 reports every resource of an AlterConfigs
/// answer as altered, whatever its error code (it never reads `rd_kafka_ConfigResource_error`),
/// so refusals are asserted by what DescribeConfigs shows afterwards here, and by their codes in
/// the kafka-python test (`kafka_python_configs.py`).
fn alter(
    admin: &AdminClient<DefaultClientContext>,
    change: AlterConfig<'_>,
    options: &AdminOptions,
) {
    let results = futures_lite::future::block_on(admin.alter_configs([&change], options)).unwrap();
    assert_eq!(results.len(), 1);
}

/// A config's value and source as DescribeConfigs reports them.
fn described(
    admin: &AdminClient<DefaultClientContext>,
    resource: ResourceSpecifier<'_>,
    name: &str,
) -> (Option<String>, ConfigSource, bool) {
    let results =
        futures_lite::future::block_on(admin.describe_configs([&resource], &AdminOptions::new()))
            .unwrap();
    let config = results.into_iter().next().unwrap().unwrap();
    let entry = config
        .entries
        .into_iter()
        .find(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("{name} not described"));
    (entry.value, entry.source, entry.is_read_only)
}

/// Produces rounds of records to partition 0 of `topic` (numbered from `first` on) until
/// retention has moved its start past `above` (bounded); returns the start and the number of
/// the next record.
fn produce_until_retention_moves(
    broker: &Broker,
    topic: &str,
    first: usize,
    above: i64,
) -> (i64, usize) {
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    let (producer, deliveries) = producer(broker, &[("acks", "all")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = first;
    loop {
        send_records(&producer, topic, 1, sent..sent + 200, now_ms());
        sent += 200;
        let reports = flush(&producer, &deliveries);
        assert!(reports.iter().all(|report| report.error.is_none()));
        let (low, high) = watcher
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        assert_eq!(high, sent as i64);
        if low > above {
            return (low, sent);
        }
        assert!(Instant::now() < deadline, "retention never moved {topic}");
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn alter_configs_change_retention_and_segment_size_of_a_live_topic() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let mut broker = Broker::start(&data, &["--set", RETENTION_CHECK]);
    create_topic(&broker, "live", 1, &[]);
    let admin = admin(&broker);
    let topic = || ResourceSpecifier::Topic("live");
    assert_eq!(
        described(&admin, topic(), "segment.bytes").1,
        ConfigSource::Default
    );

    // Refused changes change nothing.
    let change = |change: AlterConfig<'_>| alter(&admin, change, &AdminOptions::new());
    change(AlterConfig::new(topic()).set("retention.ms", "soon"));
    change(AlterConfig::new(topic()).set("retention.msec", "5"));
    assert_eq!(
        described(&admin, topic(), "retention.ms").1,
        ConfigSource::Default
    );
    // validate_only checks without changing.
    alter(
        &admin,
        AlterConfig::new(topic()).set("segment.bytes", "32768"),
        &AdminOptions::new().validate_only(true),
    );
    assert_eq!(
        described(&admin, topic(), "segment.bytes").1,
        ConfigSource::Default
    );

    // The change itself: small segments and a byte limit, picked up by the live log.
    change(
        AlterConfig::new(topic())
            .set("segment.bytes", "16384")
            .set("retention.bytes", "65536"),
    );
    assert_eq!(
        described(&admin, topic(), "segment.bytes"),
        (Some("16384".into()), ConfigSource::DynamicTopic, false)
    );
    let (start, sent) = produce_until_retention_moves(&broker, "live", 0, 0);
    assert!(start > 0);
    assert!(segment_files(&data.join("live-0")) >= 2);

    // AlterConfigs replaces the whole set: without retention.bytes the limit is gone.
    change(AlterConfig::new(topic()).set("segment.bytes", "16384"));
    assert_eq!(
        described(&admin, topic(), "retention.bytes"),
        (Some("-1".into()), ConfigSource::Default, false)
    );

    // Persisted with the cluster metadata: a crash does not undo it.
    drop(admin);
    broker.kill();
    broker.restart();
    let admin = self::admin(&broker);
    assert_eq!(
        described(&admin, topic(), "segment.bytes"),
        (Some("16384".into()), ConfigSource::DynamicTopic, false)
    );
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    let (low, high) = watcher
        .fetch_watermarks("live", 0, Duration::from_secs(10))
        .unwrap();
    assert!(low >= start, "the start moved back from {start} to {low}");
    assert_eq!(high, sent as i64);
}

#[test]
fn broker_configs_change_the_defaults_of_live_topics_and_survive_a_crash() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    // One shard: one broker, id 0, owns every partition.
    let core = shards::cpu::allowed_cores()[0].to_string();
    let mut broker = Broker::start(&data, &["--set", RETENTION_CHECK, "--cores", &core]);
    create_topic(&broker, "defaults", 1, &[]);
    let admin = admin(&broker);
    let this_broker = || ResourceSpecifier::Broker(0);
    let change = |change: AlterConfig<'_>| alter(&admin, change, &AdminOptions::new());
    // Refused (their codes are in the kafka-python test): not dynamic, a bad value, a
    // misspelt name. None of them is stored.
    change(AlterConfig::new(this_broker()).set("log.dirs", "/elsewhere"));
    change(AlterConfig::new(this_broker()).set("log.segment.bytes", "-5"));
    change(AlterConfig::new(this_broker()).set("log.segmnet.bytes", "16384"));
    assert_eq!(
        described(&admin, this_broker(), "log.segment.bytes").1,
        ConfigSource::Default
    );
    assert_eq!(
        described(&admin, this_broker(), "log.dirs").1,
        ConfigSource::StaticBroker
    );
    change(
        AlterConfig::new(this_broker())
            .set("log.segment.bytes", "16384")
            .set("log.retention.bytes", "65536"),
    );
    assert_eq!(
        described(&admin, this_broker(), "log.segment.bytes"),
        (Some("16384".into()), ConfigSource::DynamicBroker, false)
    );
    assert!(described(&admin, this_broker(), "log.dirs").2, "read-only");
    assert_eq!(
        described(
            &admin,
            ResourceSpecifier::Topic("defaults"),
            "retention.bytes"
        ),
        (Some("65536".into()), ConfigSource::DynamicBroker, false)
    );
    let (start, sent) = produce_until_retention_moves(&broker, "defaults", 0, 0);
    assert!(start > 0);
    assert!(segment_files(&data.join("defaults-0")) >= 2);

    drop(admin);
    broker.kill();
    broker.restart();
    let admin = self::admin(&broker);
    assert_eq!(
        described(
            &admin,
            ResourceSpecifier::Topic("defaults"),
            "segment.bytes"
        ),
        (Some("16384".into()), ConfigSource::DynamicBroker, false)
    );
    // The logs reopened with the dynamic settings too: small segments roll and retention
    // moves the start on.
    produce_until_retention_moves(&broker, "defaults", sent, start);
}

/// Two of the cores this process may use, for tests that need two shards; `None` (the test
/// is skipped) on a one-core machine.
fn two_cores() -> Option<String> {
    let cores = shards::cpu::allowed_cores();
    if cores.len() < 2 {
        eprintln!(
            "skipped: needs two cores, this process may use {}",
            cores.len()
        );
        return None;
    }
    Some(format!("{},{}", cores[0], cores[1]))
}

#[test]
fn create_partitions_adds_partitions_that_producers_use_and_a_group_is_rebalanced_onto() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let Some(cores) = two_cores() else { return };
    let mut broker = Broker::start(&data, &["--cores", &cores]);
    create_topic(&broker, "grow", 2, &[]);
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "growers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "300")
        .create()
        .unwrap();
    consumer.subscribe(&["grow"]).unwrap();
    // The group is formed on the two partitions before any are added.
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.assignment().unwrap().count() < 2 {
        assert!(Instant::now() < deadline, "the group never formed");
        consumer.poll(Duration::from_millis(100));
    }

    let admin = admin(&broker);
    let create = |topic: &str, count: usize| {
        let results = futures_lite::future::block_on(
            admin.create_partitions([&NewPartitions::new(topic, count)], &AdminOptions::new()),
        )
        .unwrap();
        results
            .into_iter()
            .next()
            .unwrap()
            .err()
            .map(|(_, code)| code)
    };
    assert_eq!(create("grow", 6), None);
    assert_eq!(create("grow", 6), Some(RDKafkaErrorCode::InvalidPartitions));
    assert_eq!(create("grow", 4), Some(RDKafkaErrorCode::InvalidPartitions));
    assert_eq!(
        create("missing", 3),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    let placed = leaders(&broker, "grow");
    assert_eq!(placed.len(), 6);
    let shard_count = placed.iter().collect::<BTreeSet<_>>().len();
    assert_eq!(
        shard_count,
        broker_shards(&broker),
        "spread over every shard: {placed:?}"
    );

    // A producer sends to all six; the consumer is rebalanced onto them and reads them all.
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    send_records(&producer, "grow", 6, 0..600, now_ms());
    let reports = flush(&producer, &deliveries);
    assert!(reports.iter().all(|report| report.error.is_none()));
    let mut seen = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 600 {
        assert!(
            Instant::now() < deadline,
            "read {} of 600, from partitions {partitions:?}",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                partitions.insert(message.partition());
                seen.insert((message.partition(), message.offset()));
            }
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
    }
    assert_eq!(partitions, (0..6).collect());
    assert_eq!(consumer.assignment().unwrap().count(), 6);

    drop(consumer);
    drop(admin);
    broker.kill();
    broker.restart();
    assert_eq!(
        leaders(&broker, "grow"),
        placed,
        "placement survives a crash"
    );
    let after = consume_all(&broker, "grow", 6, 600);
    assert_eq!(after.len(), 600);
}

/// How many shards (brokers) the node runs.
fn broker_shards(broker: &Broker) -> usize {
    let consumer: BaseConsumer = broker.client_config().create().unwrap();
    consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap()
        .brokers()
        .len()
}

/// The cluster-wide default (the broker resource named ""), which neither librdkafka's nor
/// kafka-python's admin client can name: set with IncrementalAlterConfigs over the wire, it
/// reaches every shard's topics, DescribeConfigs on "" lists it alone, and a broker's own
/// entry wins over it.
#[test]
fn the_cluster_wide_default_reaches_every_shard_and_a_brokers_own_entry_wins() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        describe_configs_request, ApiKey, DescribeConfigsRequest, DescribeConfigsResponse,
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    const BROKER: i8 = 4;
    let scratch = scratch_dir();
    let Some(cores) = two_cores() else { return };
    let broker = Broker::start(&scratch.path().join("data"), &["--cores", &cores]);
    create_topic(&broker, "everywhere", 4, &[]);
    let set = |resource: &str, name: &str, value: &str| {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(BROKER)
                .with_resource_name(text(resource))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(text(name))
                    .with_config_operation(0)
                    .with_value(Some(text(value)))]),
        ]);
        let response: IncrementalAlterConfigsResponse = kafka_call(
            &mut connect(&broker.bootstrap),
            ApiKey::IncrementalAlterConfigs,
            1,
            &request,
        );
        response.responses[0].error_code
    };
    assert_eq!(set("", "log.retention.ms", "3600000"), 0);
    assert_eq!(set("", "log.dirs", "/elsewhere"), 42);
    assert_eq!(
        set("00", "log.retention.ms", "1"),
        42,
        "a broker id in its canonical spelling only"
    );
    // The second shard's broker gets an entry of its own.
    let brokers = leaders(&broker, "everywhere");
    let second = *brokers.iter().max().unwrap();
    assert_eq!(set(&second.to_string(), "log.retention.ms", "7200000"), 0);

    let describe = |address: &str, resource_type: i8, name: &str| {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(name))
                .with_configuration_keys(None),
        ]);
        let response: DescribeConfigsResponse =
            kafka_call(&mut connect(address), ApiKey::DescribeConfigs, 4, &request);
        let result = response.results.into_iter().next().unwrap();
        assert_eq!(result.error_code, 0, "{:?}", result.error_message);
        result
            .configs
            .into_iter()
            .map(|entry| {
                (
                    entry.name.to_string(),
                    (
                        entry
                            .value
                            .map(|value| value.to_string())
                            .unwrap_or_default(),
                        entry.config_source,
                    ),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let defaults = describe(&broker.bootstrap, BROKER, "");
    assert_eq!(
        defaults.into_iter().collect::<Vec<_>>(),
        vec![("log.retention.ms".to_string(), ("3600000".to_string(), 3))]
    );
    // Each shard answers for its own broker: the default on the first, its own entry on the
    // second, and a topic's retention.ms from the shard asked.
    let addresses = &broker.shard_addresses;
    assert_eq!(addresses.len(), 2);
    let first_view = describe(&addresses[0], 2, "everywhere");
    assert_eq!(first_view["retention.ms"], ("3600000".to_string(), 3));
    let second_view = describe(&addresses[1], 2, "everywhere");
    assert_eq!(second_view["retention.ms"], ("7200000".to_string(), 2));
    let own = describe(&broker.bootstrap, BROKER, &second.to_string());
    assert_eq!(own["log.retention.ms"], ("7200000".to_string(), 2));

    // A resource asked for twice is answered in full once.
    let resource = describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(BROKER)
        .with_resource_name(text("0"));
    let response: DescribeConfigsResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![resource.clone(), resource]),
    );
    let codes: Vec<i16> = response
        .results
        .iter()
        .map(|result| result.error_code)
        .collect();
    assert_eq!(codes, vec![0, 42]);
    assert!(response.results[1].configs.is_empty());
}

/// Every config the broker accepts does what it says, or is refused: min.insync.replicas above
/// the one replica a node has refuses acks=all (acks=1 still works), default.replication.factor
/// above 1 refuses the topics that would need it, and a Kafka setting that means nothing here
/// is refused with why rather than stored.
#[test]
fn configs_that_one_node_cannot_honour_are_enforced_or_refused() {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "strict", 1, &[("min.insync.replicas", "2")]);
    for (acks, expected) in [
        ("1", None),
        ("all", Some(RDKafkaErrorCode::NotEnoughReplicas)),
    ] {
        let (producer, deliveries) = producer(
            &broker,
            &[
                ("acks", acks),
                ("enable.idempotence", "false"),
                ("message.timeout.ms", "3000"),
                ("retries", "0"),
            ],
        );
        send_records(&producer, "strict", 1, 0..1, now_ms());
        let reports = flush(&producer, &deliveries);
        let error = reports[0].error.clone();
        match expected {
            None => assert!(error.is_none(), "acks={acks}: {error:?}"),
            Some(code) => {
                let error = error.unwrap_or_default();
                assert!(
                    error.contains(&format!("{code}")) || error.contains("NotEnoughReplicas"),
                    "acks={acks}: {error}"
                )
            }
        }
    }
    let admin = admin(&broker);
    let refused = futures_lite::future::block_on(
        admin.create_topics(
            [&NewTopic::new("delayed", 1, TopicReplication::Fixed(1))
                .set("file.delete.delay.ms", "5")],
            &AdminOptions::new(),
        ),
    )
    .unwrap();
    assert!(
        matches!(&refused[0], Err((_, RDKafkaErrorCode::InvalidConfig))),
        "{refused:?}"
    );
    drop(admin);
    drop(broker);

    let scratch = scratch_dir();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &["--set", "default.replication.factor=3"],
    );
    let admin = self::admin(&broker);
    let refused = futures_lite::future::block_on(admin.create_topics(
        [&NewTopic::new("replicated", 1, TopicReplication::Fixed(-1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert!(
        matches!(
            &refused[0],
            Err((_, RDKafkaErrorCode::InvalidReplicationFactor))
        ),
        "{refused:?}"
    );
}
