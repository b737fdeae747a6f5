//! One producer worker: builds v2 record batches for its partitions, sends them on one pipelined
//! connection per partition leader, and records each record's latency when its batch is
//! acknowledged.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use record_format::Compression;

use crate::batch::BatchBuilder;
use crate::client::{ClientError, Connection};
use crate::report::Shared;
use crate::{now_ns, REQUEST_TIMEOUT};

/// Produce requests in flight per connection, as Kafka clients allow by default.
pub const IN_FLIGHT_PER_CONNECTION: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// No keys.
    None,
    /// Keys drawn uniformly from `0..n`.
    Uniform(u64),
    /// Keys counting up.
    Sequential,
}

pub struct ProduceSettings {
    pub topic: String,
    pub record_bytes: usize,
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub compression: Compression,
    /// Records per second for this worker; `None` is closed loop (as fast as acknowledged).
    pub rate: Option<f64>,
    pub keys: KeyDistribution,
    pub start: Instant,
    /// Records intended before this are left out of the summary.
    pub measure_from: Instant,
    pub end: Instant,
}

/// A sent request awaiting its response: the intended send time of each of its records.
struct Pending {
    correlation_id: i32,
    intended: Vec<Instant>,
    bytes: u64,
}

struct Batch {
    /// Encoded in place as records arrive; compressed, if asked, when the batch is sent.
    raw: BatchBuilder,
    intended: Vec<Instant>,
    bytes: usize,
}

struct Leader {
    connection: Connection,
    pending: SyncSender<Pending>,
    reader: std::thread::JoinHandle<Result<(), ClientError>>,
}

/// Records latencies for acknowledged requests, in order, until the sender hangs up.
fn read_acknowledgements(
    mut connection: Connection,
    pending: Receiver<Pending>,
    settings: Arc<ProduceSettings>,
    shared: Arc<Shared>,
) -> Result<(), ClientError> {
    while let Ok(request) = pending.recv() {
        let (correlation_id, response): (i32, ProduceResponse) =
            connection.receive(ApiKey::Produce, 7)?;
        let acknowledged = Instant::now();
        if correlation_id != request.correlation_id {
            return Err(ClientError::Protocol {
                address: connection.address.clone(),
                reason: format!(
                    "response {correlation_id} arrived for request {}",
                    request.correlation_id
                ),
            });
        }
        let error = response
            .responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|partition| partition.error_code != 0)
            .map(|partition| {
                format!(
                    "partition {} error code {}",
                    partition.index, partition.error_code
                )
            });
        for target in [&shared.interval, &shared.measured] {
            let measured = std::ptr::eq(target, &shared.measured);
            let Ok(mut stats) = target.lock() else {
                continue;
            };
            if let Some(error) = &error {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| error.clone());
                continue;
            }
            let mut counted = 0u64;
            for intended in &request.intended {
                if measured && *intended < settings.measure_from {
                    continue;
                }
                let micros = acknowledged
                    .saturating_duration_since(*intended)
                    .as_micros() as u64;
                stats.latency.saturating_record(micros.max(1));
                counted += 1;
            }
            stats.records += counted;
            stats.bytes += request.bytes * counted / request.intended.len().max(1) as u64;
        }
    }
    Ok(())
}

fn next_key(keys: KeyDistribution, counter: u64, random: &mut u64) -> Option<Bytes> {
    match keys {
        KeyDistribution::None => None,
        KeyDistribution::Sequential => Some(Bytes::from(counter.to_string())),
        KeyDistribution::Uniform(space) => {
            // xorshift64: cheap, and the distribution only has to be even.
            *random ^= *random << 13;
            *random ^= *random >> 7;
            *random ^= *random << 17;
            Some(Bytes::from((*random % space.max(1)).to_string()))
        }
    }
}

/// Runs one worker over `partitions` (index -> leader address) until `settings.end`.
pub fn run_worker(
    worker: usize,
    partitions: Vec<(i32, String)>,
    settings: Arc<ProduceSettings>,
    shared: Arc<Shared>,
) -> Result<(), ClientError> {
    let mut leaders: BTreeMap<String, Leader> = BTreeMap::new();
    for (_, address) in &partitions {
        if leaders.contains_key(address) {
            continue;
        }
        let connection = Connection::connect(address, REQUEST_TIMEOUT)?;
        let reader_connection = connection.try_clone()?;
        let (pending, acknowledgements) = sync_channel(IN_FLIGHT_PER_CONNECTION);
        let (settings, shared) = (settings.clone(), shared.clone());
        let reader = std::thread::spawn(move || {
            read_acknowledgements(reader_connection, acknowledgements, settings, shared)
        });
        leaders.insert(
            address.clone(),
            Leader {
                connection,
                pending,
                reader,
            },
        );
    }
    let mut batches: Vec<Batch> = partitions
        .iter()
        .map(|_| Batch {
            raw: BatchBuilder::default(),
            intended: Vec::new(),
            bytes: 0,
        })
        .collect();
    let filler = vec![b'x'; settings.record_bytes.saturating_sub(8)];
    let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1);
    let mut sequence: u64 = 0;

    let send = |index: usize,
                batch: &mut Batch,
                leaders: &mut BTreeMap<String, Leader>|
     -> Result<(), ClientError> {
        if batch.intended.is_empty() {
            return Ok(());
        }
        let (partition, address) = &partitions[index];
        let leader = leaders
            .get_mut(address)
            .ok_or_else(|| ClientError::Protocol {
                address: address.clone(),
                reason: "no connection".into(),
            })?;
        let encoded =
            batch
                .raw
                .finish(settings.compression)
                .map_err(|error| ClientError::Protocol {
                    address: address.clone(),
                    reason: error.to_string(),
                })?;
        let request = ProduceRequest::default()
            .with_acks(settings.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(settings.topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(*partition)
                    .with_records(Some(encoded))])]);
        let sent_at = Instant::now();
        let correlation_id = leader.connection.send(ApiKey::Produce, 7, &request)?;
        if settings.rate.is_some() {
            if let Ok(mut stats) = shared.measured.lock() {
                for intended in batch
                    .intended
                    .iter()
                    .filter(|intended| **intended >= settings.measure_from)
                {
                    stats.send_lag.saturating_record(
                        sent_at
                            .saturating_duration_since(*intended)
                            .as_micros()
                            .max(1) as u64,
                    );
                }
            }
        }
        let intended = std::mem::take(&mut batch.intended);
        let bytes = batch.bytes as u64;
        batch.bytes = 0;
        if settings.acks == 0 {
            for target in [&shared.interval, &shared.measured] {
                if let Ok(mut stats) = target.lock() {
                    stats.records += intended.len() as u64;
                    stats.bytes += bytes;
                }
            }
            return Ok(());
        }
        // Blocks while IN_FLIGHT_PER_CONNECTION requests await responses: the backpressure.
        leader
            .pending
            .send(Pending {
                correlation_id,
                intended,
                bytes,
            })
            .map_err(|_| ClientError::Protocol {
                address: address.clone(),
                reason: "the connection's reader stopped".into(),
            })
    };

    let partition_count = partitions.len().max(1);
    loop {
        let now = Instant::now();
        // Open loop ends when the schedule does: every record intended before the end is sent,
        // however late, or a stall at the end of a run would go unmeasured. Closed loop ends on
        // the clock.
        let finished = match settings.rate {
            Some(rate) => {
                settings.start + Duration::from_secs_f64(sequence as f64 / rate) >= settings.end
            }
            None => now >= settings.end,
        };
        if finished {
            break;
        }
        // Add every record whose intended time has come (closed loop: a full batch for every
        // partition, each sent as it fills, so the broker sees `--batch-bytes` batches).
        let due_limit = match settings.rate {
            Some(_) => usize::MAX,
            None => (settings.batch_bytes / settings.record_bytes.max(1) + 1) * partition_count,
        };
        let mut added = 0usize;
        loop {
            let intended = match settings.rate {
                Some(rate) => settings.start + Duration::from_secs_f64(sequence as f64 / rate),
                None => now,
            };
            if intended > now || added >= due_limit || intended >= settings.end {
                break;
            }
            let index = (sequence % partition_count as u64) as usize;
            let sent_ns = now_ns();
            let batch = &mut batches[index];
            let key = next_key(settings.keys, sequence, &mut random);
            batch.raw.push(
                sent_ns / 1_000_000,
                key.as_deref(),
                sent_ns.to_be_bytes(),
                &filler,
            );
            batch.intended.push(intended);
            batch.bytes += settings.record_bytes;
            sequence += 1;
            added += 1;
            if batch.bytes >= settings.batch_bytes {
                send(index, batch, &mut leaders)?;
            }
        }
        // Linger: a batch waits at most this long after its first record's intended time.
        let mut next_deadline = settings.end;
        for (index, batch) in batches.iter_mut().enumerate() {
            if let Some(first) = batch.intended.first().copied() {
                if settings.rate.is_none() {
                    // Closed loop: batches leave when full (above), or at the end of the run.
                    continue;
                }
                if first + settings.linger <= Instant::now() {
                    send(index, batch, &mut leaders)?;
                } else {
                    next_deadline = next_deadline.min(first + settings.linger);
                }
            }
        }
        if let Some(rate) = settings.rate {
            let next_record = settings.start + Duration::from_secs_f64(sequence as f64 / rate);
            let wake = next_record.min(next_deadline);
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
    }
    for (index, batch) in batches.iter_mut().enumerate() {
        send(index, batch, &mut leaders)?;
    }
    let mut result = Ok(());
    for (_, leader) in leaders {
        drop(leader.pending);
        match leader.reader.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => result = Err(error),
            Err(_) => {
                result = Err(ClientError::Protocol {
                    address: leader.connection.address.clone(),
                    reason: "reader panicked".into(),
                })
            }
        }
    }
    result
}
