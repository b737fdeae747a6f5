//! Component benchmarks of the hot path, each timed in a loop on this machine: CRC-32C and batch
//! validation, request shape check and decode, Fetch response encoding, log append with and
//! without fsync, and a cross-shard message round trip. Figures, not assertions.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use storage::record_batch::{
    build_uncompressed_batch, check_integrity, validate_produced, BatchBuilder, Compression,
    ProduceRules,
};

/// Runs `operation` for about `budget`, prints time per operation and, with `bytes`, bandwidth.
fn measure(name: &str, bytes: Option<usize>, budget: Duration, mut operation: impl FnMut()) {
    for _ in 0..10 {
        operation();
    }
    let started = Instant::now();
    let mut operations = 0u64;
    while started.elapsed() < budget {
        for _ in 0..100 {
            operation();
        }
        operations += 100;
    }
    let per_operation = started.elapsed().as_nanos() as f64 / operations as f64;
    match bytes {
        Some(bytes) => println!(
            "{name:<44} {per_operation:>10.0} ns/op {:>8.2} GB/s",
            bytes as f64 / per_operation
        ),
        None => println!("{name:<44} {per_operation:>10.0} ns/op"),
    }
}

fn produce_request_bytes(batch: &[u8]) -> Bytes {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::copy_from_slice(batch)))])]);
    let mut encoded = BytesMut::new();
    request.encode(&mut encoded, 9).unwrap_or_default();
    encoded.freeze()
}

async fn log_appends(directory: std::path::PathBuf, batch: Vec<u8>) {
    use storage::{FlushPolicy, LogConfig, Offset, PartitionLog};
    for (name, flush) in [
        (
            "log append, relaxed (no fsync wait)",
            FlushPolicy::Relaxed {
                messages: None,
                interval: None,
            },
        ),
        ("log append + wait for its fdatasync", FlushPolicy::Durable),
    ] {
        let path = directory.join(name.replace(' ', "-"));
        let config = LogConfig {
            flush,
            segment_bytes: 1 << 30,
            ..LogConfig::default()
        };
        let context = storage::LogContext::direct_io(1 << 30, 16);
        let Ok(log) = PartitionLog::open(&context, &path, config, true).await else {
            println!("{name}: cannot open a log in {}", path.display());
            return;
        };
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let budget = Duration::from_secs(2);
        let started = Instant::now();
        let mut operations = 0u64;
        while started.elapsed() < budget {
            let Ok(info) = log.append(&batch).await else {
                break;
            };
            if log
                .wait_acknowledgeable(Offset(info.last_offset.0 + 1))
                .await
                .is_err()
            {
                break;
            }
            operations += 1;
        }
        let per_operation = started.elapsed().as_nanos() as f64 / operations.max(1) as f64;
        println!(
            "{name:<44} {per_operation:>10.0} ns/op {:>8.2} GB/s",
            batch.len() as f64 / per_operation
        );
        log.close().await.ok();
        drop(flusher);
    }
}

fn cross_shard_round_trip() {
    let cores = shards::cpu::allowed_cores();
    if cores.len() < 2 {
        println!(
            "cross-shard round trip: needs two cores, this process has {}",
            cores.len()
        );
        return;
    }
    const ROUND_TRIPS: u64 = 20_000;
    let result = shards::run_shards::<u64, _, _, _>(
        &cores[..2],
        &shards::ExecutorOptions::default(),
        |context| async move {
            let Ok(mut mesh) = shards::Mesh::join(context.mesh).await else {
                return None;
            };
            let receivers = mesh.take_receivers();
            let (peer, receiver) = receivers.into_iter().next()?;
            if context.shard == shards::ShardId(0) {
                let started = Instant::now();
                for round in 0..ROUND_TRIPS {
                    mesh.send_to(peer, round).await.ok()?;
                    receiver.recv().await?;
                }
                Some(started.elapsed())
            } else {
                for _ in 0..ROUND_TRIPS {
                    let value = receiver.recv().await?;
                    mesh.send_to(peer, value).await.ok()?;
                }
                None
            }
        },
    );
    match result {
        Ok(results) => {
            if let Some(Some(elapsed)) = results.first() {
                println!(
                    "{:<44} {:>10.0} ns/op",
                    "cross-shard message round trip",
                    elapsed.as_nanos() as f64 / ROUND_TRIPS as f64
                );
            }
        }
        Err(error) => println!("cross-shard round trip: {error}"),
    }
}

fn main() {
    let budget = Duration::from_secs(1);
    let batch = build_uncompressed_batch(64, 1000, 0);
    println!("64 records of 1000 bytes: a {} byte batch", batch.len());
    measure("crc32c over the batch", Some(batch.len()), budget, || {
        std::hint::black_box(crc32c::crc32c(std::hint::black_box(&batch)));
    });
    measure(
        "batch integrity check (lengths, magic, CRC)",
        Some(batch.len()),
        budget,
        || {
            std::hint::black_box(check_integrity(std::hint::black_box(&batch)).is_ok());
        },
    );
    // The record walk of Kafka's LogValidator, on top of the integrity check: what validating
    // every record of a produced batch costs, uncompressed and through a codec.
    let rules = ProduceRules {
        max_message_bytes: 1 << 30,
        timestamp_after_max_ms: i64::MAX,
        timestamp_before_max_ms: i64::MAX,
        log_append_time: false,
        keys_required: false,
    };
    measure(
        "batch validation (integrity + record walk)",
        Some(batch.len()),
        budget,
        || {
            std::hint::black_box(
                validate_produced(std::hint::black_box(&batch), &rules, 0).is_ok(),
            );
        },
    );
    for (name, compression) in [("lz4", Compression::Lz4), ("zstd", Compression::Zstd)] {
        let mut builder = BatchBuilder::default();
        let value: Vec<u8> = (0..1000u32)
            .map(|index| (index % 61) as u8 + b'0')
            .collect();
        for index in 0..64 {
            builder.push(index, None, Some(&value));
        }
        let Ok(compressed) = builder.finish_compressed(compression) else {
            continue;
        };
        measure(
            &format!("batch validation, {name} ({} bytes)", compressed.len()),
            Some(64 * 1000),
            budget,
            || {
                std::hint::black_box(validate_produced(&compressed, &rules, 0).is_ok());
            },
        );
    }
    let request = produce_request_bytes(&batch);
    measure(
        "produce v9: shape check + decode",
        Some(request.len()),
        budget,
        || {
            let ok =
                broker::kafka::wire::shape::check_request_body(ApiKey::Produce, 9, true, &request)
                    .is_ok();
            let mut body = request.clone();
            std::hint::black_box((ok, ProduceRequest::decode(&mut body, 9).is_ok()));
        },
    );
    let runs: Vec<Bytes> = (0..4).map(|_| Bytes::from(batch.clone())).collect();
    measure(
        "fetch v12 response encode (4 x batch)",
        Some(batch.len() * 4),
        budget,
        || {
            use broker::kafka::wire::fetch_response::{
                encode_fetch_response, FetchedPartition, FetchedTopic,
            };
            let topics = vec![FetchedTopic {
                name: "bench".into(),
                topic_id: uuid::Uuid::nil(),
                partitions: (0..4)
                    .map(|index| FetchedPartition {
                        partition_index: index,
                        error_code: 0,
                        high_watermark: 100,
                        last_stable_offset: 100,
                        log_start_offset: 0,
                        records: vec![runs[index as usize].clone()],
                    })
                    .collect(),
            }];
            std::hint::black_box(encode_fetch_response(12, 1, 0, 0, &topics));
        },
    );
    let scratch = std::env::temp_dir().join(format!("components-{}", std::process::id()));
    if storage::dma::ensure_locked_memory(64 << 20).is_ok() {
        if let Ok(executor) = glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .make()
        {
            executor.run(log_appends(scratch.clone(), batch.clone()));
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    cross_shard_round_trip();
}
