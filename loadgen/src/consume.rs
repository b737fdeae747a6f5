//! End-to-end consumers: fetch what the producers wrote and measure, per record, the time from
//! the producer's send stamp (the first 8 bytes of the value, nanoseconds since the epoch) to
//! its arrival here. Producers and consumers run on the same host and read the same clock.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use record_format::{records_section, BatchWalk, RecordIter};

use crate::client::{ClientError, Connection};
use crate::report::Shared;
use crate::{now_ns, REQUEST_TIMEOUT};

pub struct ConsumeSettings {
    pub topic: String,
    /// Records stamped before this (nanoseconds since the epoch) are left out of the summary.
    pub measure_from_ns: i64,
    /// Fetching stops this long after the producers' end, once their last records arrived.
    pub end_ns: i64,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The next offset of each partition on `leader` (where consumers start: only new records).
fn latest_offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, ClientError> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|partition| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*partition)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    let response: ListOffsetsResponse = connection.call(ApiKey::ListOffsets, 1, &request)?;
    Ok(response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| (partition.partition_index, partition.offset))
        .collect())
}

/// Fetches `partitions` from their common `leader` until `settings.end_ns`.
pub fn run_consumer(
    leader: String,
    partitions: Vec<i32>,
    settings: Arc<ConsumeSettings>,
    shared: Arc<Shared>,
) -> Result<(), ClientError> {
    let mut connection = Connection::connect(&leader, REQUEST_TIMEOUT)?;
    let mut offsets = latest_offsets(&mut connection, &settings.topic, &partitions)?;
    while now_ns() < settings.end_ns {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&settings.topic))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(partition, offset)| {
                            FetchPartition::default()
                                .with_partition(*partition)
                                .with_fetch_offset(*offset)
                                .with_partition_max_bytes(4 << 20)
                        })
                        .collect(),
                )]);
        let response: FetchResponse = connection.call(ApiKey::Fetch, 4, &request)?;
        let arrived_ns = now_ns();
        let mut latencies = Vec::new();
        for partition in response
            .responses
            .iter()
            .flat_map(|topic| topic.partitions.iter())
        {
            let Some(records) = partition.records.clone() else {
                continue;
            };
            if records.is_empty() {
                continue;
            }
            let Some(slot) = offsets
                .iter_mut()
                .find(|(index, _)| *index == partition.partition_index)
            else {
                continue;
            };
            // Only the first 8 bytes of each value matter (the producer's send stamp): the
            // records are walked in place, not decoded into owned values.
            let undecodable = |reason: String| ClientError::Protocol {
                address: leader.clone(),
                reason: format!("undecodable record batch: {reason}"),
            };
            for (header, range) in BatchWalk::new(&records) {
                let batch = &records[range];
                let section =
                    records_section(batch).map_err(|error| undecodable(error.to_string()))?;
                let count = usize::try_from(header.records_count).unwrap_or(0);
                for record in RecordIter::new(&section, count) {
                    let record = record.map_err(undecodable)?;
                    let offset = header.base_offset.0 + record.offset_delta;
                    // A fetch returns whole batches: skip records before our position.
                    if offset < slot.1 {
                        continue;
                    }
                    slot.1 = offset + 1;
                    if let Some(value) = record.value.filter(|value| value.len() >= 8) {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(&value[..8]);
                        latencies.push((i64::from_be_bytes(stamp), value.len() as u64 + 8));
                    }
                }
            }
        }
        for target in [&shared.interval, &shared.measured] {
            let measured = std::ptr::eq(target, &shared.measured);
            let Ok(mut stats) = target.lock() else {
                continue;
            };
            for (sent_ns, _) in &latencies {
                if measured && *sent_ns < settings.measure_from_ns {
                    continue;
                }
                let micros = ((arrived_ns - sent_ns).max(1000) / 1000) as u64;
                stats.end_to_end.saturating_record(micros);
            }
        }
        if latencies.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}
