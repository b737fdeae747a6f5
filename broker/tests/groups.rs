//! Consumer groups against the real broker with real clients: librdkafka (the rdkafka crate),
//! and kcat as a member that can be SIGKILLed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Broker settings for group tests: short session bounds so a killed member is noticed in
/// seconds, and an initial rebalance delay that gathers consumers started together.
const GROUP_BROKER_ARGS: &[&str] = &[
    "--set",
    "group.min.session.timeout.ms=500",
    "--set",
    "group.initial.rebalance.delay.ms=1000",
    "--set",
    "offsets.topic.num.partitions=4",
];

fn group_consumer(broker: &Broker, group: &str, settings: &[(&str, &str)]) -> BaseConsumer {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|element| element.partition())
        .collect()
}

/// Polls every consumer (so each keeps its membership alive) until `done` holds; panics after
/// `limit`. Records polled meanwhile are returned per consumer.
fn poll_until(
    consumers: &[&BaseConsumer],
    limit: Duration,
    mut done: impl FnMut(&[&BaseConsumer], &[Vec<Seen>]) -> bool,
    what: &str,
) -> Vec<Vec<Seen>> {
    let deadline = Instant::now() + limit;
    let mut seen = vec![Vec::new(); consumers.len()];
    loop {
        for (index, consumer) in consumers.iter().enumerate() {
            if let Some(result) = consumer.poll(Duration::from_millis(20)) {
                let message = result.unwrap_or_else(|error| panic!("consumer error: {error}"));
                seen[index].push(Seen::from_message(&message));
            }
        }
        if done(consumers, &seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Whether the consumers' assignments are disjoint and together cover `0..partitions`, each
/// consumer holding at least one.
fn balanced(consumers: &[&BaseConsumer], partitions: i32) -> bool {
    let mut all = BTreeSet::new();
    for consumer in consumers {
        let mine = assigned(consumer);
        if mine.is_empty() || mine.iter().any(|partition| !all.insert(*partition)) {
            return false;
        }
    }
    all == (0..partitions).collect()
}

fn produce(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
    base: i64,
) {
    let (producer, deliveries) = producer(broker, &[("acks", "all")]);
    send_records(&producer, topic, partitions, range.clone(), base);
    let reports = flush(&producer, &deliveries);
    assert_eq!(reports.len(), range.len());
    assert!(reports.iter().all(|report| report.error.is_none()));
}

/// (partition, offset) -> how many times it was seen.
fn tally(seen: &[Vec<Seen>]) -> BTreeMap<(i32, i64), usize> {
    let mut counts = BTreeMap::new();
    for record in seen.iter().flatten() {
        *counts.entry((record.partition, record.offset)).or_insert(0) += 1;
    }
    counts
}

#[test]
fn three_members_share_partitions_on_several_shards_exactly_once() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
    const PARTITIONS: i32 = 6;
    const COUNT: usize = 3000;
    create_topic(&broker, "shared", PARTITIONS, &[]);
    let owners: BTreeSet<i32> = leaders(&broker, "shared").into_iter().collect();
    assert!(
        owners.len() >= 2 || broker.shard_addresses.len() == 1,
        "{owners:?}"
    );

    let consumers: Vec<BaseConsumer> = (0..3)
        .map(|_| group_consumer(&broker, "trio", &[]))
        .collect();
    let started = Instant::now();
    for consumer in &consumers {
        consumer.subscribe(&["shared"]).unwrap();
    }
    let members: Vec<&BaseConsumer> = consumers.iter().collect();
    poll_until(
        &members,
        Duration::from_secs(60),
        |members, _| balanced(members, PARTITIONS),
        "three balanced members",
    );
    eprintln!(
        "three members joined and were assigned in {} ms (initial delay 1000 ms)",
        started.elapsed().as_millis()
    );
    let (status, metrics) = http(&broker.admin_address, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric_sum(&metrics, "broker_group_members", "shard="), 3.0);
    assert!(
        metric_sum(&metrics, "broker_groups", "shard=") >= 1.0,
        "{metrics}"
    );

    let base = now_ms();
    produce(&broker, "shared", PARTITIONS, 0..COUNT, base);
    let seen = poll_until(
        &members,
        Duration::from_secs(60),
        |_, seen| seen.iter().map(Vec::len).sum::<usize>() >= COUNT,
        "every record",
    );
    // Every record exactly once between the three, and each member only read its partitions.
    let counts = tally(&seen);
    assert_eq!(counts.len(), COUNT);
    assert!(counts.values().all(|&count| count == 1), "duplicates");
    for (member, records) in members.iter().zip(&seen) {
        let mine = assigned(member);
        assert!(records
            .iter()
            .all(|record| mine.contains(&record.partition)));
    }
    let mut all: Vec<Seen> = seen.into_iter().flatten().collect();
    all.sort_by_key(|record| (record.partition, record.offset));
    assert_exactly_the_sent_records(&all, PARTITIONS, COUNT, base);
}

/// Consumes until `count` more records arrived, committing synchronously after each one, so a
/// partition that moves resumes exactly after the last record its previous owner read.
fn consume_committing(
    consumers: &[&BaseConsumer],
    seen_so_far: &mut [Vec<Seen>],
    count: usize,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got < count {
        if Instant::now() >= deadline {
            eprintln!("timed out: {what}");
            return;
        }
        for (index, consumer) in consumers.iter().enumerate() {
            if let Some(result) = consumer.poll(Duration::from_millis(20)) {
                let message = result.unwrap();
                seen_so_far[index].push(Seen::from_message(&message));
                got += 1;
                // A commit refused because the group is rebalancing only means the record
                // may be read again; it can never make one be skipped.
                let _ = consumer.commit_message(&message, CommitMode::Sync);
            }
        }
    }
}

#[test]
fn partitions_move_when_members_leave_and_join_without_skipping_records() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
    const PARTITIONS: i32 = 4;
    create_topic(&broker, "moving", PARTITIONS, &[]);
    let base = now_ms();
    produce(&broker, "moving", PARTITIONS, 0..400, base);

    let first = group_consumer(&broker, "movers", &[]);
    let second = group_consumer(&broker, "movers", &[]);
    first.subscribe(&["moving"]).unwrap();
    second.subscribe(&["moving"]).unwrap();
    let mut seen = poll_until(
        &[&first, &second],
        Duration::from_secs(60),
        |members, _| balanced(members, PARTITIONS),
        "two balanced members",
    );
    consume_committing(&[&first, &second], &mut seen, 200, "first half");

    // The first member leaves (close sends LeaveGroup); a third joins.
    let first_partitions = assigned(&first);
    let rebalance_started = Instant::now();
    drop(first);
    let third = group_consumer(&broker, "movers", &[]);
    third.subscribe(&["moving"]).unwrap();
    produce(&broker, "moving", PARTITIONS, 400..800, base);
    // Records read while waiting count too (they are not committed, so may come again).
    let mut after = poll_until(
        &[&second, &third],
        Duration::from_secs(60),
        |members, _| balanced(members, PARTITIONS),
        "second and third balanced",
    );
    eprintln!(
        "one member left and one joined: balanced again in {} ms (heartbeat interval 500 ms)",
        rebalance_started.elapsed().as_millis()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = tally(&[
            seen[0].clone(),
            seen[1].clone(),
            after[0].clone(),
            after[1].clone(),
        ]);
        if counts.len() == 800 {
            let duplicates = counts.values().filter(|&&count| count > 1).count();
            eprintln!("{duplicates} records read twice across the moves");
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<(i32, i64)> = (0..800usize)
                .map(|index| ((index % 4) as i32, (index / 4) as i64))
                .filter(|key| !counts.contains_key(key))
                .collect();
            panic!(
                "missing {missing:?}; second {:?}, third {:?}; first had {first_partitions:?}",
                assigned(&second),
                assigned(&third)
            );
        }
        consume_committing(&[&second, &third], &mut after, 1, "the rest");
    }
    // Not one record skipped (above), and the newcomer read from partitions that moved to it,
    // some of them the leaver's.
    let third_partitions: BTreeSet<i32> = after[1].iter().map(|record| record.partition).collect();
    assert!(!third_partitions.is_empty(), "the newcomer read nothing");
    assert!(!first_partitions.is_empty());
    let mut all: Vec<Seen> = seen.into_iter().chain(after).flatten().collect();
    all.sort_by_key(|record| (record.partition, record.offset));
    all.dedup_by_key(|record| (record.partition, record.offset));
    assert_exactly_the_sent_records(&all, PARTITIONS, 800, base);
}

/// kcat as a group member: a separate process that can be SIGKILLed, so it never says goodbye.
fn kcat_member(broker: &Broker, group: &str, topic: &str) -> Child {
    Command::new("kcat")
        .args(["-b", &broker.bootstrap, "-G", group, topic])
        .args([
            "-X",
            "session.timeout.ms=3000",
            "-X",
            "heartbeat.interval.ms=500",
        ])
        .args(["-X", "broker.address.family=v4", "-q", "-o", "end"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat runs (.ci/run installs it)")
}

#[test]
fn a_killed_members_partitions_move_after_its_session_timeout() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
    const PARTITIONS: i32 = 4;
    create_topic(&broker, "orphans", PARTITIONS, &[]);
    let survivor = group_consumer(&broker, "crashers", &[]);
    survivor.subscribe(&["orphans"]).unwrap();
    let mut kcat = kcat_member(&broker, "crashers", "orphans");
    poll_until(
        &[&survivor],
        Duration::from_secs(60),
        |members, _| {
            let mine = assigned(members[0]);
            !mine.is_empty() && mine.len() < PARTITIONS as usize
        },
        "kcat and the survivor sharing the partitions",
    );
    let killed_at = Instant::now();
    kcat.kill().unwrap();
    kcat.wait().unwrap();
    poll_until(
        &[&survivor],
        Duration::from_secs(60),
        |members, _| assigned(members[0]).len() == PARTITIONS as usize,
        "the survivor taking every partition",
    );
    let moved_after = killed_at.elapsed();
    eprintln!(
        "partitions moved {} ms after the kill",
        moved_after.as_millis()
    );
    // A member that says nothing keeps its partitions for its session (3 s, counted from its
    // last heartbeat, which a busy machine may have delayed): never moved within half of it.
    assert!(
        moved_after >= Duration::from_millis(1500),
        "moved after only {moved_after:?}"
    );
    let base = now_ms();
    produce(&broker, "orphans", PARTITIONS, 0..400, base);
    let seen = poll_until(
        &[&survivor],
        Duration::from_secs(60),
        |_, seen| seen[0].len() >= 400,
        "every record on the survivor",
    );
    let mut all = seen.into_iter().next().unwrap();
    all.sort_by_key(|record| (record.partition, record.offset));
    assert_exactly_the_sent_records(&all, PARTITIONS, 400, base);
}

#[test]
fn committed_offsets_survive_sigterm_and_sigkill_and_consumers_resume_from_them() {
    let scratch = scratch_dir();
    let mut broker = Broker::start_on_fixed_ports(&scratch.path().join("data"), GROUP_BROKER_ARGS);
    const PARTITIONS: i32 = 4;
    const COUNT: usize = 2000;
    create_topic(&broker, "resume", PARTITIONS, &[]);
    let base = now_ms();
    produce(&broker, "resume", PARTITIONS, 0..COUNT, base);

    // First run: read about half, commit, leave.
    let first = group_consumer(&broker, "resumers", &[]);
    first.subscribe(&["resume"]).unwrap();
    let seen_first = poll_until(
        &[&first],
        Duration::from_secs(60),
        |_, seen| seen[0].len() >= COUNT / 2,
        "the first half",
    );
    first.commit_consumer_state(CommitMode::Sync).unwrap();
    let after_first = committed(&first, "resume", PARTITIONS);
    drop(first);
    // A partition it read nothing from has no commit (-1).
    let mut expected = vec![-1i64; PARTITIONS as usize];
    for record in &seen_first[0] {
        let next = &mut expected[record.partition as usize];
        *next = (*next).max(record.offset + 1);
    }
    assert_eq!(after_first, expected, "commit covers exactly what was read");

    // SIGTERM: a clean restart keeps them.
    assert!(broker.stop());
    broker.restart();
    let second = group_consumer(&broker, "resumers", &[]);
    assert_eq!(committed(&second, "resume", PARTITIONS), expected);
    second.subscribe(&["resume"]).unwrap();
    let remaining = COUNT - seen_first[0].len();
    let seen_second = poll_until(
        &[&second],
        Duration::from_secs(60),
        |_, seen| seen[0].len() >= remaining,
        "the rest after a restart",
    );
    // It resumed exactly at the commits: together the two runs read every record once.
    let counts = tally(&[seen_first[0].clone(), seen_second[0].clone()]);
    assert_eq!(counts.len(), COUNT);
    assert!(
        counts.values().all(|&count| count == 1),
        "records read twice"
    );
    second.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(second);

    // SIGKILL right after an acknowledged commit: it is on disk.
    broker.kill();
    broker.restart();
    let third = group_consumer(&broker, "resumers", &[]);
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|partition| {
            (COUNT as i64 + i64::from(PARTITIONS) - 1 - i64::from(partition))
                / i64::from(PARTITIONS)
        })
        .collect();
    assert_eq!(committed(&third, "resume", PARTITIONS), ends);
}

#[test]
fn cooperative_sticky_members_keep_their_partitions_when_one_joins() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
    const PARTITIONS: i32 = 4;
    create_topic(&broker, "sticky", PARTITIONS, &[]);
    let cooperative = [("partition.assignment.strategy", "cooperative-sticky")];
    let first = group_consumer(&broker, "cooperators", &cooperative);
    first.subscribe(&["sticky"]).unwrap();
    poll_until(
        &[&first],
        Duration::from_secs(60),
        |members, _| assigned(members[0]).len() == PARTITIONS as usize,
        "the first member owning everything",
    );
    let second = group_consumer(&broker, "cooperators", &cooperative);
    second.subscribe(&["sticky"]).unwrap();
    // Incremental: the first member only ever gives partitions up, never gets a new set.
    let mut shrank = false;
    poll_until(
        &[&first, &second],
        Duration::from_secs(60),
        |members, _| {
            let mine = assigned(members[0]);
            if mine.len() < PARTITIONS as usize {
                shrank = true;
            }
            balanced(members, PARTITIONS)
        },
        "two cooperative members balanced",
    );
    assert!(shrank);
    assert_eq!(assigned(&first).len(), 2);
    assert_eq!(assigned(&second).len(), 2);
    let base = now_ms();
    produce(&broker, "sticky", PARTITIONS, 0..400, base);
    let seen = poll_until(
        &[&first, &second],
        Duration::from_secs(60),
        |_, seen| seen.iter().map(Vec::len).sum::<usize>() >= 400,
        "every record",
    );
    let mut all: Vec<Seen> = seen.into_iter().flatten().collect();
    all.sort_by_key(|record| (record.partition, record.offset));
    assert_exactly_the_sent_records(&all, PARTITIONS, 400, base);
}

mod raw {
    use super::*;
    use kafka_protocol::messages::*;

    fn join(
        group: &str,
        member: &str,
        metadata: bytes::Bytes,
        session_ms: i32,
    ) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_session_timeout_ms(session_ms)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(text(member))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(text("range"))
            .with_metadata(metadata)])
    }

    /// Bad group requests get Kafka's error codes, never a panic or a closed connection, and a
    /// second group on the same coordinator carries on untouched.
    #[test]
    fn bad_group_requests_get_kafkas_error_codes() {
        let scratch = scratch_dir();
        let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
        create_topic(&broker, "known", 2, &[]);
        let odd = "odd group/ä\u{0}\u{7f} with spaces";
        let mut bootstrap = connect(&broker.bootstrap);
        let found: FindCoordinatorResponse = kafka_call(
            &mut bootstrap,
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![text(odd), text("")]),
        );
        assert_eq!(found.coordinators.len(), 2);
        let coordinator = &found.coordinators[0];
        assert_eq!(coordinator.error_code, 0, "{coordinator:?}");
        let address = format!("{}:{}", coordinator.host, coordinator.port);
        let mut stream = connect(&address);

        // A shard that does not coordinate the group says so.
        if let Some(other) = broker.shard_addresses.iter().find(|a| **a != address) {
            let mut elsewhere = connect(other);
            let response: HeartbeatResponse = kafka_call(
                &mut elsewhere,
                ApiKey::Heartbeat,
                4,
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(text(odd)))
                    .with_member_id(text("m")),
            );
            assert_eq!(response.error_code, 16, "NOT_COORDINATOR");
        }

        let meta = bytes::Bytes::from_static(b"\0\x01\0\0\0\x01\0\x05known\0\0\0\0");
        let call_join = |stream: &mut std::net::TcpStream, request: &JoinGroupRequest| {
            kafka_call::<_, JoinGroupResponse>(stream, ApiKey::JoinGroup, 7, request)
        };
        assert_eq!(
            call_join(&mut stream, &join("", "", meta.clone(), 6000)).error_code,
            24
        );
        assert_eq!(
            call_join(&mut stream, &join(odd, "", meta.clone(), 10)).error_code,
            26
        );
        let huge = bytes::Bytes::from(vec![7u8; 300 * 1024]);
        assert_eq!(
            call_join(&mut stream, &join(odd, "", huge, 6000)).error_code,
            42
        );
        assert_eq!(
            call_join(&mut stream, &join(odd, "made-up", meta.clone(), 6000)).error_code,
            25
        );
        let first = call_join(&mut stream, &join(odd, "", meta.clone(), 6000));
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        let member = first.member_id.to_string();
        let joined = call_join(&mut stream, &join(odd, &member, meta.clone(), 6000));
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.leader.to_string(), member);
        let generation = joined.generation_id;

        let sync = |stream: &mut std::net::TcpStream, generation: i32, assignment: bytes::Bytes| {
            kafka_call::<_, SyncGroupResponse>(
                stream,
                ApiKey::SyncGroup,
                5,
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(text(odd)))
                    .with_generation_id(generation)
                    .with_member_id(text(&member))
                    .with_assignments(vec![
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(text(&member))
                            .with_assignment(assignment),
                    ]),
            )
            .error_code
        };
        assert_eq!(sync(&mut stream, generation + 5, bytes::Bytes::new()), 22);
        assert_eq!(
            sync(
                &mut stream,
                generation,
                bytes::Bytes::from(vec![0u8; 2 << 20])
            ),
            42
        );
        assert_eq!(
            sync(&mut stream, generation, bytes::Bytes::from_static(b"ok")),
            0
        );

        let heartbeat = |stream: &mut std::net::TcpStream, member: &str, generation: i32| {
            kafka_call::<_, HeartbeatResponse>(
                stream,
                ApiKey::Heartbeat,
                4,
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(text(odd)))
                    .with_generation_id(generation)
                    .with_member_id(text(member)),
            )
            .error_code
        };
        assert_eq!(heartbeat(&mut stream, &member, generation), 0);
        assert_eq!(heartbeat(&mut stream, &member, generation - 1), 22);
        assert_eq!(heartbeat(&mut stream, "stranger", generation), 25);

        let commit = |stream: &mut std::net::TcpStream,
                      group: &str,
                      member: &str,
                      generation: i32,
                      topic: &str,
                      metadata: &str| {
            let response: OffsetCommitResponse = kafka_call(
                stream,
                ApiKey::OffsetCommit,
                8,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(text(group)))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(text(member))
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(text(topic)))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(1)
                                    .with_committed_offset(42)
                                    .with_committed_metadata(Some(text(metadata))),
                            ]),
                    ]),
            );
            response.topics[0].partitions[0].error_code
        };
        assert_eq!(
            commit(&mut stream, odd, &member, generation, "unknown-topic", ""),
            3
        );
        assert_eq!(
            commit(
                &mut stream,
                odd,
                &member,
                generation,
                "known",
                &"m".repeat(5000)
            ),
            12
        );
        assert_eq!(
            commit(&mut stream, odd, &member, generation + 1, "known", ""),
            22
        );
        assert_eq!(
            commit(&mut stream, odd, "", -1, "known", ""),
            25,
            "not a member"
        );
        assert_eq!(
            commit(&mut stream, odd, &member, generation, "known", "fine"),
            0
        );

        // The group with members cannot be deleted; an unknown one is not found.
        let deleted: DeleteGroupsResponse = kafka_call(
            &mut stream,
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(text(odd)), GroupId(text("never-was"))]),
        );
        let codes: Vec<i16> = deleted.results.iter().map(|r| r.error_code).collect();
        let never_was_here = broker.shard_addresses.len() == 1
            || found.coordinators[0].node_id
                == kafka_call::<_, FindCoordinatorResponse>(
                    &mut bootstrap,
                    ApiKey::FindCoordinator,
                    4,
                    &FindCoordinatorRequest::default()
                        .with_coordinator_keys(vec![text("never-was")]),
                )
                .coordinators[0]
                    .node_id;
        assert_eq!(codes[0], 68, "NON_EMPTY_GROUP");
        assert_eq!(codes[1], if never_was_here { 69 } else { 16 });

        // After all that, the group still works and its commit reads back.
        assert_eq!(heartbeat(&mut stream, &member, generation), 0);
        let fetched: OffsetFetchResponse = kafka_call(
            &mut stream,
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(text(odd)))
                    .with_topics(None),
            ]),
        );
        let group = &fetched.groups[0];
        assert_eq!(group.error_code, 0);
        let partition = &group.topics[0].partitions[0];
        assert_eq!(
            (partition.partition_index, partition.committed_offset),
            (1, 42)
        );
        assert_eq!(partition.metadata.as_deref(), Some("fine"));
        let described: DescribeGroupsResponse = kafka_call(
            &mut stream,
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(text(odd))]),
        );
        assert_eq!(described.groups[0].group_state.to_string(), "Stable");
        assert_eq!(described.groups[0].members.len(), 1);
        assert_eq!(
            described.groups[0].members[0].member_assignment,
            bytes::Bytes::from_static(b"ok")
        );
    }
}

mod versions {
    use super::*;
    use kafka_protocol::messages::*;

    fn group(id: &str) -> GroupId {
        GroupId(text(id))
    }

    /// The advertised range of an API, from the broker itself.
    fn advertised(stream: &mut std::net::TcpStream, api: ApiKey) -> std::ops::RangeInclusive<i16> {
        let versions: ApiVersionsResponse = kafka_call(
            stream,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        );
        let entry = versions
            .api_keys
            .iter()
            .find(|entry| entry.api_key == api as i16)
            .unwrap_or_else(|| panic!("{api:?} is not advertised"));
        entry.min_version..=entry.max_version
    }

    /// Every group API answers every version it advertises with a response that decodes and
    /// says something sensible: a simple (member-less) commit in each OffsetCommit version reads
    /// back through each OffsetFetch version, and the group is listed, described and deleted.
    #[test]
    fn every_group_api_answers_every_advertised_version() {
        let scratch = scratch_dir();
        let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
        create_topic(&broker, "versions", 1, &[]);
        let mut bootstrap = connect(&broker.bootstrap);
        for version in advertised(&mut bootstrap, ApiKey::FindCoordinator) {
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![text("v")])
            } else {
                FindCoordinatorRequest::default().with_key(text("v"))
            };
            let response: FindCoordinatorResponse =
                kafka_call(&mut bootstrap, ApiKey::FindCoordinator, version, &request);
            let port = if version >= 4 {
                assert_eq!(response.coordinators[0].error_code, 0);
                response.coordinators[0].port
            } else {
                assert_eq!(response.error_code, 0);
                response.port
            };
            assert!(port > 0, "v{version}");
        }
        let mut stream = coordinator(&broker, "v");

        for version in advertised(&mut stream, ApiKey::OffsetCommit) {
            let response: OffsetCommitResponse = kafka_call(
                &mut stream,
                ApiKey::OffsetCommit,
                version,
                &OffsetCommitRequest::default()
                    .with_group_id(group("v"))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(text("versions")))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(i64::from(version))
                                    .with_committed_metadata(Some(text("m"))),
                            ]),
                    ]),
            );
            assert_eq!(response.topics[0].partitions[0].error_code, 0, "v{version}");
        }
        let last_commit = *advertised(&mut stream, ApiKey::OffsetCommit).end() as i64;
        for version in advertised(&mut stream, ApiKey::OffsetFetch) {
            let (offset, error) = if version >= 8 {
                let response: OffsetFetchResponse = kafka_call(
                    &mut stream,
                    ApiKey::OffsetFetch,
                    version,
                    &OffsetFetchRequest::default().with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group("v"))
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopics::default()
                                    .with_name(TopicName(text("versions")))
                                    .with_partition_indexes(vec![0]),
                            ])),
                    ]),
                );
                let group = &response.groups[0];
                (
                    group.topics[0].partitions[0].committed_offset,
                    group.error_code,
                )
            } else {
                let response: OffsetFetchResponse = kafka_call(
                    &mut stream,
                    ApiKey::OffsetFetch,
                    version,
                    &OffsetFetchRequest::default()
                        .with_group_id(group("v"))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(TopicName(text("versions")))
                                .with_partition_indexes(vec![0]),
                        ])),
                );
                (
                    response.topics[0].partitions[0].committed_offset,
                    response.topics[0].partitions[0].error_code,
                )
            };
            assert_eq!((offset, error), (last_commit, 0), "v{version}");
        }
        for version in advertised(&mut stream, ApiKey::ListGroups) {
            let response: ListGroupsResponse = kafka_call(
                &mut stream,
                ApiKey::ListGroups,
                version,
                &ListGroupsRequest::default(),
            );
            assert!(
                response
                    .groups
                    .iter()
                    .any(|listed| listed.group_id.0 == text("v")),
                "v{version}"
            );
        }
        for version in advertised(&mut stream, ApiKey::DescribeGroups) {
            let response: DescribeGroupsResponse = kafka_call(
                &mut stream,
                ApiKey::DescribeGroups,
                version,
                &DescribeGroupsRequest::default()
                    .with_groups(vec![group("v")])
                    .with_include_authorized_operations(version >= 3),
            );
            assert_eq!(
                response.groups[0].group_state.to_string(),
                "Empty",
                "v{version}"
            );
        }
        for version in advertised(&mut stream, ApiKey::Heartbeat) {
            let response: HeartbeatResponse = kafka_call(
                &mut stream,
                ApiKey::Heartbeat,
                version,
                &HeartbeatRequest::default()
                    .with_group_id(group("v"))
                    .with_member_id(text("nobody")),
            );
            assert_eq!(response.error_code, 25, "v{version}");
        }
        for version in advertised(&mut stream, ApiKey::LeaveGroup) {
            let request = if version >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group("v"))
                    .with_members(vec![leave_group_request::MemberIdentity::default()
                        .with_member_id(text("nobody"))])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group("v"))
                    .with_member_id(text("nobody"))
            };
            let response: LeaveGroupResponse =
                kafka_call(&mut stream, ApiKey::LeaveGroup, version, &request);
            let error = if version >= 3 {
                response.members[0].error_code
            } else {
                response.error_code
            };
            assert_eq!(error, 25, "v{version}");
        }
        for version in advertised(&mut stream, ApiKey::SyncGroup) {
            let response: SyncGroupResponse = kafka_call(
                &mut stream,
                ApiKey::SyncGroup,
                version,
                &SyncGroupRequest::default()
                    .with_group_id(group("v"))
                    .with_member_id(text("nobody")),
            );
            assert_eq!(response.error_code, 25, "v{version}");
        }
        // JoinGroup: a member joins alone (v4+ after the member-id round trip) in each version.
        for version in advertised(&mut stream, ApiKey::JoinGroup) {
            let join = |member: &str| {
                JoinGroupRequest::default()
                    .with_group_id(group(&format!("join-v{version}")))
                    .with_session_timeout_ms(6000)
                    .with_rebalance_timeout_ms(6000)
                    .with_member_id(text(member))
                    .with_protocol_type(text("consumer"))
                    .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                    )
                    .with_name(text("range"))
                    .with_metadata(bytes::Bytes::from_static(b"m"))])
            };
            let mut coordinator = coordinator(&broker, &format!("join-v{version}"));
            let mut response: JoinGroupResponse =
                kafka_call(&mut coordinator, ApiKey::JoinGroup, version, &join(""));
            if version >= 4 {
                assert_eq!(response.error_code, 79, "v{version}");
                let member = response.member_id.to_string();
                response = kafka_call(&mut coordinator, ApiKey::JoinGroup, version, &join(&member));
            }
            assert_eq!(response.error_code, 0, "v{version}");
            assert_eq!(response.generation_id, 1, "v{version}");
            assert_eq!(
                response.members.len(),
                1,
                "v{version}: the leader gets the members"
            );
        }
        for version in advertised(&mut stream, ApiKey::OffsetDelete) {
            let response: OffsetDeleteResponse = kafka_call(
                &mut stream,
                ApiKey::OffsetDelete,
                version,
                &OffsetDeleteRequest::default()
                    .with_group_id(group("v"))
                    .with_topics(vec![
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(text("versions")))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default(),
                            ]),
                    ]),
            );
            assert_eq!(response.error_code, 0);
            assert_eq!(response.topics[0].partitions[0].error_code, 0);
        }
        for version in advertised(&mut stream, ApiKey::DeleteGroups) {
            let response: DeleteGroupsResponse = kafka_call(
                &mut stream,
                ApiKey::DeleteGroups,
                version,
                &DeleteGroupsRequest::default().with_groups_names(vec![group("v")]),
            );
            // The first deletion removes it; later versions find nothing left.
            let expected = if version == 0 { 0 } else { 69 };
            assert_eq!(response.results[0].error_code, expected, "v{version}");
        }
    }

    /// OffsetFetch v8+ asks for several groups at once: each coordinated group gets its own
    /// offsets, and a group another shard coordinates gets NOT_COORDINATOR, as clients expect
    /// when they batch by coordinator.
    #[test]
    fn one_offset_fetch_reads_several_groups() {
        let scratch = scratch_dir();
        let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
        create_topic(&broker, "batched", 1, &[]);
        let mut bootstrap = connect(&broker.bootstrap);
        let names: Vec<String> = (0..12).map(|index| format!("batch-{index}")).collect();
        let found: FindCoordinatorResponse = kafka_call(
            &mut bootstrap,
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default()
                .with_coordinator_keys(names.iter().map(|name| text(name)).collect()),
        );
        // Two groups on the busiest coordinator, and one elsewhere if there is one.
        let home = found
            .coordinators
            .iter()
            .max_by_key(|candidate| {
                found
                    .coordinators
                    .iter()
                    .filter(|other| other.node_id == candidate.node_id)
                    .count()
            })
            .unwrap();
        let same: Vec<&str> = found
            .coordinators
            .iter()
            .filter(|coordinator| coordinator.node_id == home.node_id)
            .map(|coordinator| coordinator.key.as_str())
            .take(2)
            .collect();
        assert_eq!(same.len(), 2, "twelve groups on four offsets partitions");
        let elsewhere = found
            .coordinators
            .iter()
            .find(|coordinator| coordinator.node_id != home.node_id)
            .map(|coordinator| coordinator.key.to_string());
        let mut stream = connect(&format!("{}:{}", home.host, home.port));
        for (index, name) in same.iter().enumerate() {
            let response: OffsetCommitResponse = kafka_call(
                &mut stream,
                ApiKey::OffsetCommit,
                9,
                &OffsetCommitRequest::default()
                    .with_group_id(group(name))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(text("batched")))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(100 + index as i64),
                            ]),
                    ]),
            );
            assert_eq!(response.topics[0].partitions[0].error_code, 0);
        }
        let mut asked: Vec<String> = same.iter().map(|name| name.to_string()).collect();
        asked.extend(elsewhere.clone());
        let response: OffsetFetchResponse = kafka_call(
            &mut stream,
            ApiKey::OffsetFetch,
            9,
            &OffsetFetchRequest::default().with_groups(
                asked
                    .iter()
                    .map(|name| {
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group(name))
                            .with_topics(None)
                    })
                    .collect(),
            ),
        );
        assert_eq!(response.groups.len(), asked.len());
        for (index, answer) in response.groups.iter().take(2).enumerate() {
            assert_eq!(answer.group_id.as_str(), same[index]);
            assert_eq!(answer.error_code, 0);
            assert_eq!(
                answer.topics[0].partitions[0].committed_offset,
                100 + index as i64
            );
        }
        if elsewhere.is_some() {
            assert_eq!(response.groups[2].error_code, 16, "NOT_COORDINATOR");
        }
    }

    /// Offsets of a deleted topic go with it, also after a restart, so a topic created again
    /// under that name does not inherit them.
    #[test]
    fn deleting_a_topic_deletes_its_committed_offsets() {
        let scratch = scratch_dir();
        let mut broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
        create_topic(&broker, "doomed", 1, &[]);
        create_topic(&broker, "kept", 1, &[]);
        let consumer = group_consumer(&broker, "keeper", &[]);
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("doomed", 0, Offset::Offset(7))
            .unwrap();
        offsets
            .add_partition_offset("kept", 0, Offset::Offset(9))
            .unwrap();
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
        assert_eq!(committed(&consumer, "doomed", 1), vec![7]);
        drop(consumer);
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            broker.client_config().create().unwrap();
        let deleted = futures_lite::future::block_on(
            admin.delete_topics(&["doomed"], &rdkafka::admin::AdminOptions::new()),
        )
        .unwrap();
        assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
        drop(admin);
        assert!(broker.stop());
        broker.restart();
        create_topic(&broker, "doomed", 1, &[]);
        let consumer = group_consumer(&broker, "keeper", &[]);
        assert_eq!(committed(&consumer, "doomed", 1), vec![-1]);
        assert_eq!(committed(&consumer, "kept", 1), vec![9]);
    }
}

mod static_membership {
    use super::*;
    use rdkafka::consumer::{ConsumerContext, Rebalance};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts the assignments a consumer receives: a rebalance shows up as one more.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl rdkafka::client::ClientContext for Counting {}

    impl ConsumerContext for Counting {
        fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
            if matches!(rebalance, Rebalance::Assign(_)) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn static_member(broker: &Broker, instance: &str, context: Counting) -> BaseConsumer<Counting> {
        let mut config = broker.client_config();
        config
            .set("group.id", "statics")
            .set("group.instance.id", instance)
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "30000")
            .set("heartbeat.interval.ms", "500");
        let consumer: BaseConsumer<Counting> = config.create_with_context(context).unwrap();
        consumer.subscribe(&["statics"]).unwrap();
        consumer
    }

    fn partitions_of(consumer: &BaseConsumer<Counting>) -> BTreeSet<i32> {
        consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|element| element.partition())
            .collect()
    }

    fn poll_until(consumers: &[&BaseConsumer<Counting>], what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            for consumer in consumers {
                if let Some(result) = consumer.poll(Duration::from_millis(20)) {
                    result.unwrap();
                }
            }
        }
    }

    /// KIP-345: a static member that restarts within its session comes back under a new member
    /// id to the same partitions, and the other members do not rebalance.
    #[test]
    fn a_restarted_static_member_gets_its_partitions_back_without_a_rebalance() {
        let scratch = scratch_dir();
        let broker = Broker::start(&scratch.path().join("data"), GROUP_BROKER_ARGS);
        create_topic(&broker, "statics", 4, &[]);
        // The leader starts first and alone, so the member that restarts is a follower.
        let leader_rebalances = Counting::default();
        let leader = static_member(&broker, "leader", leader_rebalances.clone());
        poll_until(&[&leader], "the leader owning everything", || {
            partitions_of(&leader).len() == 4
        });
        let follower = static_member(&broker, "follower", Counting::default());
        poll_until(&[&leader, &follower], "two static members balanced", || {
            let (mine, theirs) = (partitions_of(&leader), partitions_of(&follower));
            mine.len() == 2 && theirs.len() == 2 && mine.is_disjoint(&theirs)
        });
        let before = partitions_of(&follower);
        let leader_assignments = leader_rebalances.0.load(Ordering::SeqCst);

        // A static member's close sends no LeaveGroup: the group keeps its place.
        drop(follower);
        let restarted_at = Instant::now();
        let follower = static_member(&broker, "follower", Counting::default());
        poll_until(
            &[&leader, &follower],
            "the restarted follower's partitions",
            || !partitions_of(&follower).is_empty(),
        );
        eprintln!(
            "static member back with its partitions after {} ms",
            restarted_at.elapsed().as_millis()
        );
        assert_eq!(partitions_of(&follower), before);
        assert_eq!(
            leader_rebalances.0.load(Ordering::SeqCst),
            leader_assignments,
            "the other member rebalanced"
        );
        assert_eq!(partitions_of(&leader).len(), 2);

        // The leader restarts too: still no rebalance for the follower (Kafka's rule for a
        // static leader whose protocol choice does not change).
        let leader_partitions = partitions_of(&leader);
        let follower_rebalances = Counting::default();
        drop(follower);
        let follower = static_member(&broker, "follower", follower_rebalances.clone());
        poll_until(&[&leader, &follower], "the follower back again", || {
            !partitions_of(&follower).is_empty()
        });
        let follower_assignments = follower_rebalances.0.load(Ordering::SeqCst);
        drop(leader);
        let leader = static_member(&broker, "leader", Counting::default());
        poll_until(
            &[&leader, &follower],
            "the restarted leader's partitions",
            || !partitions_of(&leader).is_empty(),
        );
        assert_eq!(partitions_of(&leader), leader_partitions);
        assert_eq!(
            follower_rebalances.0.load(Ordering::SeqCst),
            follower_assignments,
            "the follower rebalanced when the leader restarted"
        );
    }
}

mod damaged_offsets {
    use super::*;
    use kafka_protocol::messages::*;

    /// (group error, committed offset of partition 0) from OffsetFetch v8.
    fn fetch(broker: &Broker, group: &str) -> (i16, i64) {
        let response: OffsetFetchResponse = kafka_call(
            &mut coordinator(broker, group),
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(text(group)))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(TopicName(text("t")))
                            .with_partition_indexes(vec![0]),
                    ])),
            ]),
        );
        let group = &response.groups[0];
        let offset = group
            .topics
            .first()
            .map_or(-1, |topic| topic.partitions[0].committed_offset);
        (group.error_code, offset)
    }

    /// A record in an offsets partition that cannot be read makes that partition's groups
    /// unavailable (COORDINATOR_NOT_AVAILABLE) instead of served with commits missing; groups
    /// in other partitions are untouched.
    #[test]
    fn an_unreadable_commit_record_makes_its_groups_unavailable_not_stale() {
        let scratch = scratch_dir();
        let data = scratch.path().join("data");
        let mut broker = Broker::start_on_fixed_ports(&data, GROUP_BROKER_ARGS);
        create_topic(&broker, "t", 1, &[]);
        let damaged = "damaged-group";
        let damaged_partition = broker::groups::partition_for(damaged, 4);
        let healthy = (0..100)
            .map(|index| format!("healthy-{index}"))
            .find(|name| broker::groups::partition_for(name, 4) != damaged_partition)
            .unwrap();
        for group in [damaged, healthy.as_str()] {
            let response: OffsetCommitResponse = kafka_call(
                &mut coordinator(&broker, group),
                ApiKey::OffsetCommit,
                8,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(text(group)))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(text("t")))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(11),
                            ]),
                    ]),
            );
            assert_eq!(response.topics[0].partitions[0].error_code, 0);
        }
        assert!(broker.stop());

        // Append a valid batch (good CRC, next offset) whose record key is no known format.
        let segment = data
            .join(format!("__consumer_offsets-{damaged_partition}"))
            .join("00000000000000000000.log");
        let mut bytes = std::fs::read(&segment).unwrap();
        let next = storage::record_batch::BatchWalk::new(&bytes)
            .last()
            .map(|(header, _)| header.next_offset().0)
            .unwrap();
        let mut batch = bytes::BytesMut::from(
            &broker::groups::records::batch(
                &[(bytes::Bytes::from_static(b"\x00\x63not a key"), None)],
                now_ms(),
            )
            .unwrap()[..],
        );
        // The base offset sits outside the CRC: place the batch at the log's end.
        batch[..8].copy_from_slice(&next.to_be_bytes());
        bytes.extend_from_slice(&batch);
        std::fs::write(&segment, &bytes).unwrap();

        broker.restart();
        assert_eq!(fetch(&broker, &healthy), (0, 11));
        assert_eq!(fetch(&broker, damaged).0, 15, "COORDINATOR_NOT_AVAILABLE");
    }
}
