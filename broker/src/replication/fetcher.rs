//! A follower shard's fetcher for one leader broker: one connection to the leader's owning
//! shard, one Fetch at a time for every partition this shard follows from it (Kafka's replica
//! fetcher thread, as a task on the follower's shard).
//!
//! Before it fetches in a new leader epoch, each log is checked against the leader's
//! (OffsetForLeaderEpoch, KIP-279) and truncated where they diverge. Each round then fetches
//! from every followed log's end, appends what comes back, and waits until it is durable (or written, for a topic in the relaxed flush mode) before the next round, so
//! the fetch offset the leader takes as this follower's position is always something this
//! follower would keep through a crash. The task ends when this shard follows nothing from the
//! leader any more; the shard starts another if that changes.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
};
use storage::Offset;
use tracing::{debug, info, warn};

use super::client::Client;
use super::Replica;
use crate::error_code::ErrorCode;
use crate::kafka::handlers::topic_name;
use crate::shard::Shard;

/// How long the fetch may take beyond the leader's long-poll before it counts as lost.
const ANSWER_GRACE: Duration = Duration::from_secs(10);
/// The first pause after a failed round; it doubles up to `replica.fetch.backoff.ms`.
const BACKOFF_MIN: Duration = Duration::from_millis(50);

pub async fn run(shard: Rc<Shard>, leader: i32) {
    let config = shard.config();
    let wait = config.millis("replica.fetch.wait.max.ms");
    let backoff_max = config.millis("replica.fetch.backoff.ms").max(BACKOFF_MIN);
    let partition_max_bytes = config.long("replica.fetch.max.bytes") as i32;
    let response_max_bytes = config.long("replica.fetch.response.max.bytes") as i32;
    let me = shard.broker_id();
    let mut client: Option<Client> = None;
    let mut backoff = BACKOFF_MIN;
    let mut round = 0usize;
    info!(leader, "replica fetcher started");
    loop {
        let mut followed = shard.followed_from(leader);
        if followed.is_empty() || shard.is_closing() {
            break;
        }
        // Each round starts at another partition, so a full response does not always leave
        // the same ones out (Kafka's fetcher rotates too).
        round = round.wrapping_add(1);
        let turn = round % followed.len();
        followed.rotate_left(turn);
        let now = Instant::now();
        let (ready, resting): (Vec<Rc<Replica>>, Vec<Rc<Replica>>) = followed
            .into_iter()
            .partition(|replica| replica.may_fetch(now));
        if ready.is_empty() {
            let next = resting
                .iter()
                .filter_map(|replica| replica.fetch_not_before())
                .min()
                .unwrap_or(now + BACKOFF_MIN);
            shards::task::sleep(next.saturating_duration_since(now).max(BACKOFF_MIN / 5)).await;
            continue;
        }
        let failed = async {
            if client.is_none() {
                let (host, port) = shard
                    .broker_endpoint(leader)
                    .ok_or_else(|| format!("broker {leader} has no live endpoint"))?;
                client = Some(Client::connect(&host, port).await?);
            }
            let Some(connected) = client.as_mut() else {
                return Err("no connection".to_string());
            };
            // A log first checked against this leader epoch (KIP-279) fetches next round.
            let unchecked: Vec<Rc<Replica>> = ready
                .iter()
                .filter(|replica| !replica.checked_for_epoch())
                .cloned()
                .collect();
            if !unchecked.is_empty() {
                check_epochs(&shard, connected, me, &unchecked, backoff_max).await?;
                return Ok(());
            }
            let request = fetch_request(me, &ready, wait, partition_max_bytes, response_max_bytes);
            let asked_of: Vec<(i32, i32)> = ready
                .iter()
                .map(|replica| replica.leadership_key())
                .collect();
            let response = connected.fetch(&request, wait + ANSWER_GRACE).await?;
            // What a deposed leader sent while the fetch was out is not the new leader's.
            let still: Vec<Rc<Replica>> = ready
                .iter()
                .zip(asked_of)
                .filter(|(replica, asked_of)| replica.leadership_key() == *asked_of)
                .map(|(replica, _)| replica.clone())
                .collect();
            apply(&still, response, backoff_max).await;
            Ok(())
        }
        .await;
        match failed {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(reason) => {
                debug!(leader, %reason, "replica fetch failed");
                client = None;
                shards::task::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
    shard.fetcher_stopped(leader);
    info!(leader, "replica fetcher stopped");
}

/// Asks the leader where each log's newest epoch ends and truncates the logs that hold more
/// of it (or of any older epoch) than the leader does: they hold what the leader never had or
/// what a previous leader wrote and no ISR kept, none of it acknowledged.
async fn check_epochs(
    shard: &Rc<Shard>,
    client: &mut Client,
    me: i32,
    replicas: &[Rc<Replica>],
    backoff_max: Duration,
) -> Result<(), String> {
    let mut asked = Vec::new();
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for replica in replicas {
        if !replica.log.epochs_known() {
            // Which epochs its batches carry is lost: it cannot be checked, so it starts over
            // from the leader.
            let asked_of = replica.leadership_key();
            let start = replica.log.log_start_offset();
            warn!(topic = %replica.topic, partition = replica.partition, "the log's leader epochs are unknown; copying it from the leader again");
            if let Err(reason) = shard.truncate_replica(replica, asked_of, start).await {
                warn!(topic = %replica.topic, partition = replica.partition, %reason, "cannot truncate");
                replica.rest(backoff_max);
            }
            continue;
        }
        let Some(latest) = replica.log.latest_epoch() else {
            // An empty log cannot diverge.
            replica.set_checked_for_epoch(replica.leader_epoch());
            continue;
        };
        asked.push((replica.clone(), latest, replica.leadership_key()));
        let partition = OffsetForLeaderPartition::default()
            .with_partition(replica.partition)
            .with_current_leader_epoch(replica.leader_epoch())
            .with_leader_epoch(latest);
        match topics.last_mut() {
            Some(topic) if *topic.topic.0 == *replica.topic => topic.partitions.push(partition),
            _ => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(topic_name(&replica.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(me))
        .with_topics(topics);
    let response = client
        .offset_for_leader_epoch(&request, ANSWER_GRACE)
        .await?;
    let answers: HashMap<(&str, i32), (i16, i32, i64)> = response
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |partition| {
                (
                    (&*topic.topic.0, partition.partition),
                    (
                        partition.error_code,
                        partition.leader_epoch,
                        partition.end_offset,
                    ),
                )
            })
        })
        .collect();
    for (replica, latest, asked_of) in asked {
        // An answer from a leader this replica no longer follows (it was deposed while the
        // request was out) says nothing about the new one.
        if replica.leadership_key() != asked_of {
            continue;
        }
        let Some((error, epoch, end)) = answers.get(&(&*replica.topic, replica.partition)).copied()
        else {
            replica.rest(backoff_max);
            continue;
        };
        if error != ErrorCode::None.code() {
            // Not the leader yet (it applies the election after us), or fenced: again soon.
            replica.rest(BACKOFF_MIN);
            continue;
        }
        let log_end = replica.log.log_end_offset();
        let Some((target, settled)) = divergence(&replica, latest, epoch, end) else {
            warn!(
                topic = %replica.topic,
                partition = replica.partition,
                latest_epoch = latest,
                "the leader holds no epoch as old as this log's newest; not fetching until it does"
            );
            replica.rest(backoff_max);
            continue;
        };
        let target = target.min(log_end);
        if target < log_end {
            info!(
                topic = %replica.topic,
                partition = replica.partition,
                log_end_offset = log_end.0,
                truncate_to = target.0,
                leader_epoch = replica.leader_epoch(),
                "the log holds more than the new leader: truncating"
            );
            if let Err(reason) = shard.truncate_replica(&replica, asked_of, target).await {
                warn!(topic = %replica.topic, partition = replica.partition, %reason, "cannot truncate");
                replica.rest(backoff_max);
            }
            // The reopened log is a new replica: it is checked again, and then agrees.
            continue;
        }
        if settled || target >= log_end {
            // Nothing to cut: the logs agree up to this log's end (an epoch entry past its
            // last batch, left by an append that was refused, is not a divergence).
            replica.set_checked_for_epoch(asked_of.1);
        } else {
            replica.rest(BACKOFF_MIN);
        }
    }
    Ok(())
}

/// Where a follower's log stops agreeing with its leader's, from the leader's answer to
/// OffsetForLeaderEpoch for the follower's newest epoch `latest` (KIP-279), and whether that
/// settles it:
/// - the leader has that epoch: its end there (settled);
/// - the leader answered for an older epoch: the follower's own end of that one, and it asks
///   again from there (not settled), as Kafka's follower does;
/// - undefined (the leader holds no epoch that old): `None`; nothing is cut on a guess.
fn divergence(replica: &Replica, latest: i32, epoch: i32, end: i64) -> Option<(Offset, bool)> {
    if epoch < 0 || end < 0 {
        return None;
    }
    if epoch == latest {
        return Some((Offset(end), true));
    }
    let own_end = replica
        .log
        .end_offset_for_epoch(epoch)
        .map_or(replica.log.log_start_offset(), |(_, own_end)| own_end);
    Some((own_end.min(Offset(end)), false))
}

fn fetch_request(
    me: i32,
    followed: &[Rc<Replica>],
    wait: Duration,
    partition_max_bytes: i32,
    response_max_bytes: i32,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for replica in followed {
        let partition = FetchPartition::default()
            .with_partition(replica.partition)
            .with_current_leader_epoch(replica.leader_epoch())
            .with_fetch_offset(replica.log.log_end_offset().0)
            .with_log_start_offset(replica.log.log_start_offset().0)
            .with_partition_max_bytes(partition_max_bytes);
        match topics.last_mut() {
            Some(topic) if topic.topic_id == replica.topic_id => topic.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic_id(replica.topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(1)
        .with_max_bytes(response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Appends what the leader sent and waits until it is durable; then takes the leader's high
/// watermark. A partition the leader refused rests (alone: the others go on).
async fn apply(followed: &[Rc<Replica>], response: FetchResponse, backoff_max: Duration) {
    if response.error_code != 0 {
        for replica in followed {
            replica.rest(backoff_max);
        }
        return;
    }
    let by_key: HashMap<(uuid::Uuid, i32), &Rc<Replica>> = followed
        .iter()
        .map(|replica| ((replica.topic_id, replica.partition), replica))
        .collect();
    let mut appended: Vec<(&Rc<Replica>, Offset)> = Vec::new();
    for topic in &response.responses {
        for partition in &topic.partitions {
            let Some(replica) = by_key.get(&(topic.topic_id, partition.partition_index)) else {
                continue;
            };
            if partition.error_code != ErrorCode::None.code() {
                if partition.error_code == ErrorCode::OffsetOutOfRange.code() {
                    warn!(
                        topic = %replica.topic,
                        partition = replica.partition,
                        log_end_offset = replica.log.log_end_offset().0,
                        "the leader does not hold this follower's log end; checking the log \
                         against the leader again"
                    );
                    replica.recheck();
                    replica.rest(backoff_max);
                } else {
                    replica.rest(BACKOFF_MIN);
                }
                continue;
            }
            if let Some(records) = &partition.records {
                if !records.is_empty() {
                    if let Err(error) = replica.log.append_replicated(records).await {
                        warn!(topic = %replica.topic, partition = replica.partition, %error, "cannot append what the leader sent");
                        replica.rest(backoff_max);
                        continue;
                    }
                }
            }
            appended.push((replica, Offset(partition.high_watermark)));
        }
    }
    // Only durable positions are reported: the next fetch offset is this log's end.
    for (replica, _) in &appended {
        let end = replica.log.log_end_offset();
        if let Err(error) = replica.log.wait_acknowledgeable(end).await {
            warn!(topic = %replica.topic, partition = replica.partition, %error, "a replicated batch did not become durable");
            replica.rest(backoff_max);
        }
    }
    for (replica, high_watermark) in appended {
        replica.bound_high_watermark(Some(high_watermark));
    }
}
