//! A follower shard's fetcher for one leader broker: one connection to the leader's owning
//! shard, one Fetch at a time for every partition this shard follows from it (Kafka's replica
//! fetcher thread, as a task on the follower's shard).
//!
//! Each round fetches from every followed log's end, appends what comes back, and waits until
//! it is durable (or written, for a topic in the relaxed flush mode) before the next round, so
//! the fetch offset the leader takes as this follower's position is always something this
//! follower would keep through a crash. The task ends when this shard follows nothing from the
//! leader any more; the shard starts another if that changes.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
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
    info!(leader, "replica fetcher started");
    loop {
        let followed = shard.followed_from(leader);
        if followed.is_empty() || shard.is_closing() {
            break;
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
            let request =
                fetch_request(me, &followed, wait, partition_max_bytes, response_max_bytes);
            let response = connected.fetch(&request, wait + ANSWER_GRACE).await?;
            apply(&followed, response).await
        }
        .await;
        match failed {
            Ok(false) => backoff = BACKOFF_MIN,
            Ok(true) => {
                // A partition refused (not the leader yet, or any more): the metadata moves on.
                shards::task::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
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
            Some(topic) if *topic.topic.0 == *replica.topic => topic.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(&replica.topic))
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
/// watermark. Returns whether a partition was refused (the caller backs off).
async fn apply(followed: &[Rc<Replica>], response: FetchResponse) -> Result<bool, String> {
    if response.error_code != 0 {
        return Err(format!(
            "the leader refused the fetch ({})",
            response.error_code
        ));
    }
    let by_key: HashMap<(&str, i32), &Rc<Replica>> = followed
        .iter()
        .map(|replica| ((&*replica.topic, replica.partition), replica))
        .collect();
    let mut refused = false;
    let mut appended: Vec<(&Rc<Replica>, Offset)> = Vec::new();
    for topic in &response.responses {
        for partition in &topic.partitions {
            let Some(replica) = by_key.get(&(&*topic.topic.0, partition.partition_index)) else {
                continue;
            };
            if partition.error_code != ErrorCode::None.code() {
                if partition.error_code == ErrorCode::OffsetOutOfRange.code() {
                    warn!(
                        topic = %replica.topic,
                        partition = replica.partition,
                        log_end_offset = replica.log.log_end_offset().0,
                        "the leader does not hold this follower's log end (its log starts \
                         later); the replica stays out of the ISR"
                    );
                }
                refused = true;
                continue;
            }
            if let Some(records) = &partition.records {
                if !records.is_empty() {
                    if let Err(error) = replica.log.append_replicated(records).await {
                        warn!(topic = %replica.topic, partition = replica.partition, %error, "cannot append what the leader sent");
                        refused = true;
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
            refused = true;
        }
    }
    for (replica, high_watermark) in appended {
        replica.bound_high_watermark(Some(high_watermark));
    }
    Ok(refused)
}
