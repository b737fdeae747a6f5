//! The CPU cost of a record, as a count that does not depend on how busy the machine is:
//! instructions per produced and per fetched 1 KiB record, counted by valgrind's callgrind.
//!
//! It drives one broker shard in this process (`broker::in_process`): Produce v9 and Fetch v12
//! request frames, encoded beforehand, go through the same dispatch and handlers a connection
//! uses, into a durable topic (acks=all: every acknowledgement waits for its sync) on the
//! simulated disk, since valgrind delivers no io_uring completions. One request is in flight at
//! a time. Left out: the socket reads and writes and the real disk's submissions (syscalls,
//! which callgrind does not count anyway). In, but not the broker's: the simulated disk's own
//! work (it copies every written byte into its memory image, zeroes what is allocated and
//! copies what is read), which is counted apart and taken off.
//!
//! `cpu-cost` runs itself under `valgrind --tool=callgrind` (with `--inner`), once per
//! workload; the inner run zeroes the counters before each phase and dumps them after it, and
//! turns counting off while it encodes fetch requests and decodes responses (the client's
//! work). The outer run reads the dumps and prints instructions per record, with `--json` one
//! JSON object per workload for `side-by-side`.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use bench::callgrind;
use broker::config::BrokerConfig;
use broker::in_process::{InProcessShard, TopicSpec};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use glommio::LocalExecutor;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use storage::record_batch::{BatchBuilder, BatchWalk};
use storage::sim::SimDisk;

const TOPIC: &str = "cost";
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const PRODUCE_PHASE: &CStr = c"produce";
const FETCH_PHASE: &CStr = c"fetch";

#[derive(Parser)]
#[command(about = "Instructions per produced and per fetched record, counted by callgrind")]
struct Args {
    /// The workloads, as `requests x records-per-batch`; every record is `--value-bytes` long.
    #[arg(long, value_delimiter = ',', default_value = "1000x16,10000x1")]
    workloads: Vec<String>,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Fetch `max_bytes` and `partition_max_bytes` (librdkafka's `max.partition.fetch.bytes`
    /// default is 1 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    fetch_bytes: i32,
    /// Print one JSON object per workload instead of a table.
    #[arg(long)]
    json: bool,
    /// Run one workload (`--workloads` holds exactly one) in this process: what the outer run
    /// starts under valgrind.
    #[arg(long)]
    inner: bool,
}

#[derive(Clone, Copy)]
struct Workload {
    requests: usize,
    records_per_batch: i32,
}

fn parse_workload(text: &str) -> Result<Workload, String> {
    let bad = || format!("workload {text:?} is not `requests x records`, such as 1000x16");
    let (requests, records) = text.split_once('x').ok_or_else(bad)?;
    let workload = Workload {
        requests: requests.trim().parse().map_err(|_| bad())?,
        records_per_batch: records.trim().parse().map_err(|_| bad())?,
    };
    if workload.requests == 0 || workload.records_per_batch <= 0 {
        return Err(bad());
    }
    Ok(workload)
}

fn frame<R: Encodable + HeaderVersion>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<Bytes, String> {
    bench::encode_request(api_key, version, correlation_id, "cpu-cost", request)
        .map(BytesMut::freeze)
}

/// Every produce request of the run, encoded before anything is counted. Values differ from
/// record to record, so that the CRC and copies see ordinary data.
fn produce_frames(workload: Workload, value_bytes: usize) -> Result<Vec<Bytes>, String> {
    let mut value = vec![0u8; value_bytes];
    let mut frames = Vec::with_capacity(workload.requests);
    for request in 0..workload.requests {
        let mut builder = BatchBuilder::default();
        for record in 0..workload.records_per_batch {
            let stamp = (request as u64) << 32 | record as u64;
            for (index, byte) in value.iter_mut().enumerate() {
                *byte = (stamp.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (index % 57)) as u8;
            }
            builder.push(1_700_000_000_000 + i64::from(record), None, Some(&value));
        }
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(builder.finish())))])]);
        frames.push(frame(
            ApiKey::Produce,
            PRODUCE_VERSION,
            request as i32,
            &produce,
        )?);
    }
    Ok(frames)
}

fn fetch_frame(offset: i64, fetch_bytes: i32, correlation_id: i32) -> Result<Bytes, String> {
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(fetch_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(fetch_bytes)])]);
    frame(ApiKey::Fetch, FETCH_VERSION, correlation_id, &fetch)
}

/// A response's bytes after its size prefix and header, decoded.
fn decode_response<R: Decodable>(
    chunks: &[Bytes],
    header_version: i16,
    version: i16,
) -> Result<R, String> {
    let mut bytes = BytesMut::new();
    for chunk in chunks {
        bytes.extend_from_slice(chunk);
    }
    if bytes.len() < 4 {
        return Err("a response shorter than its size prefix".into());
    }
    let mut bytes = bytes.split_off(4).freeze();
    ResponseHeader::decode(&mut bytes, header_version).map_err(|error| error.to_string())?;
    R::decode(&mut bytes, version).map_err(|error| error.to_string())
}

/// Runs `client` (work a client does, not the broker) with counting off.
fn uncounted<T>(client: impl FnOnce() -> T) -> T {
    callgrind::toggle_collect();
    let result = client();
    callgrind::toggle_collect();
    result
}

/// The produce requests, one at a time, each answered after its sync.
fn produce_phase(
    executor: &LocalExecutor,
    shard: &InProcessShard,
    frames: Vec<Bytes>,
) -> Result<Vec<Vec<Bytes>>, String> {
    callgrind::zero_stats();
    let responses = executor.run(async {
        let mut responses = Vec::with_capacity(frames.len());
        for frame in frames {
            responses.push(shard.request(frame).await?);
        }
        Ok(responses)
    });
    callgrind::dump_stats_at(PRODUCE_PHASE);
    responses
}

/// Fetches from offset 0 to `end`, one request at a time, each from where the last one ended.
/// Returns the records and batch bytes fetched, and the number of fetches.
fn fetch_phase(
    executor: &LocalExecutor,
    shard: &InProcessShard,
    end: i64,
    fetch_bytes: i32,
) -> Result<(u64, u64, usize), String> {
    callgrind::zero_stats();
    let fetched = executor.run(async {
        let (mut offset, mut records, mut bytes, mut requests) = (0i64, 0u64, 0u64, 0usize);
        while offset < end {
            let frame = uncounted(|| fetch_frame(offset, fetch_bytes, requests as i32))?;
            let chunks = shard.request(frame).await?;
            requests += 1;
            let response: FetchResponse = uncounted(|| {
                decode_response(
                    &chunks,
                    FetchResponse::header_version(FETCH_VERSION),
                    FETCH_VERSION,
                )
            })?;
            drop(chunks);
            let partition = response
                .responses
                .first()
                .and_then(|topic| topic.partitions.first())
                .ok_or("a fetch response without the partition")?;
            if partition.error_code != 0 {
                return Err(format!("fetch at {offset}: error {}", partition.error_code));
            }
            let data = partition.records.clone().unwrap_or_default();
            let before = offset;
            for (header, range) in BatchWalk::new(&data) {
                offset = header.next_offset().0;
                records += u64::try_from(header.records_count).unwrap_or(0);
                bytes += range.len() as u64;
            }
            if offset == before {
                return Err(format!("a fetch at {offset} returned no batch"));
            }
        }
        Ok((records, bytes, requests))
    });
    callgrind::dump_stats_at(FETCH_PHASE);
    fetched
}

/// One workload in this process; with valgrind, the phases' counts go to its dump files.
fn run_inner(workload: Workload, args: &Args) -> Result<(), String> {
    storage::dma::ensure_locked_memory(64 * 1024 * 1024)?;
    let executor = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .map_err(|error| format!("glommio executor: {error}"))?;
    let disk = SimDisk::new(1);
    // No simulated slowness: every disk operation completes at its first poll, so the run is
    // the same instructions every time.
    disk.set_max_yields(0);
    let shard = executor.run(InProcessShard::start(
        BrokerConfig::default(),
        Rc::new(disk.clone()),
        PathBuf::from("/data"),
        vec![TopicSpec {
            name: TOPIC.into(),
            partitions: 1,
            configs: BTreeMap::new(),
        }],
    ))?;
    let frames = produce_frames(workload, args.value_bytes)?;
    let responses = produce_phase(&executor, &shard, frames)?;
    for (index, chunks) in responses.iter().enumerate() {
        let response: ProduceResponse = decode_response(
            chunks,
            ProduceResponse::header_version(PRODUCE_VERSION),
            PRODUCE_VERSION,
        )?;
        let partition = response
            .responses
            .first()
            .and_then(|topic| topic.partition_responses.first())
            .ok_or("a produce response without the partition")?;
        let expected = index as i64 * i64::from(workload.records_per_batch);
        if partition.error_code != 0 || partition.base_offset != expected {
            return Err(format!(
                "produce {index}: error {} at base offset {} (expected {expected})",
                partition.error_code, partition.base_offset
            ));
        }
    }
    drop(responses);
    let produced = workload.requests as u64 * workload.records_per_batch as u64;
    let (fetched, fetched_bytes, fetches) =
        fetch_phase(&executor, &shard, produced as i64, args.fetch_bytes)?;
    if fetched != produced {
        return Err(format!("fetched {fetched} records of {produced}"));
    }
    if !executor.run(shard.close()) {
        return Err("the log did not close cleanly".into());
    }
    println!(
        "produced {produced} records; fetched {fetched} records ({fetched_bytes} batch bytes) \
         in {fetches} fetches"
    );
    Ok(())
}

/// What one dump holds: every instruction counted, and those in the simulated disk.
#[derive(Debug, Default, Clone, Copy)]
struct PhaseCount {
    total: u64,
    simulated_disk: u64,
}

impl PhaseCount {
    /// The broker's own instructions: all of them but the simulated disk's.
    fn broker(&self) -> u64 {
        self.total.saturating_sub(self.simulated_disk)
    }
}

fn is_simulated_disk(function: &str) -> bool {
    function.starts_with("<storage::sim::")
}

/// Reads a callgrind profile: its total, and the inclusive cost of every call into the
/// simulated disk's `Disk`/`DiskFile` methods (and the futures they return) from outside it,
/// so that nothing is counted twice.
///
/// The format (callgrind manual, "Callgrind Format Specification"): `fn=` starts a function's
/// lines, `cfn=` names a callee and is followed by `calls=` and one cost line holding the
/// call's inclusive cost; with compressed names `(id) name` defines an id and `(id)` reuses it.
/// Written here because no crate reads the format; it needs only these four kinds of lines.
fn read_profile(text: &str) -> Result<PhaseCount, String> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut resolve = |spec: &str| -> String {
        let spec = spec.trim();
        match spec.strip_prefix('(').and_then(|rest| rest.split_once(')')) {
            Some((id, name)) if !name.trim().is_empty() => {
                names.insert(id.to_string(), name.trim().to_string());
                name.trim().to_string()
            }
            Some((id, _)) => names.get(id).cloned().unwrap_or_default(),
            None => spec.to_string(),
        }
    };
    let mut count = PhaseCount::default();
    let mut total = None;
    // A cost line starts with one column per position kind (`positions: line`, or
    // `instr line` with --dump-instr=yes), then the events, of which Ir is the first.
    let mut cost_column = 1;
    let mut caller_is_sim = false;
    let mut callee_is_sim = false;
    let mut call_cost_next = false;
    for line in text.lines() {
        if let Some(kinds) = line.strip_prefix("positions:") {
            cost_column = kinds.split_whitespace().count().max(1);
        } else if let Some(spec) = line.strip_prefix("fn=") {
            caller_is_sim = is_simulated_disk(&resolve(spec));
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            callee_is_sim = is_simulated_disk(&resolve(spec));
        } else if line.starts_with("calls=") {
            call_cost_next = true;
        } else if let Some(value) = line
            .strip_prefix("totals:")
            .or_else(|| line.strip_prefix("summary:"))
        {
            total = value.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if call_cost_next {
            call_cost_next = false;
            if callee_is_sim && !caller_is_sim {
                let cost: u64 = line
                    .split_whitespace()
                    .nth(cost_column)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0);
                count.simulated_disk += cost;
            }
        }
    }
    count.total = total.ok_or("the profile has no totals line")?;
    Ok(count)
}

struct Measured {
    workload: Workload,
    produce: PhaseCount,
    fetch: PhaseCount,
}

/// Runs one workload under callgrind and reads the dumps of its two phases.
fn measure(workload: Workload, args: &Args) -> Result<Measured, String> {
    let directory = tempfile::tempdir().map_err(|error| error.to_string())?;
    let profile = directory.path().join("callgrind.out");
    let me = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(&me)
        .arg("--inner")
        .arg(format!(
            "--workloads={}x{}",
            workload.requests, workload.records_per_batch
        ))
        .arg(format!("--value-bytes={}", args.value_bytes))
        .arg(format!("--fetch-bytes={}", args.fetch_bytes))
        .output()
        .map_err(|error| format!("cannot run valgrind (is it installed?): {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "the workload failed under valgrind: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut phases: BTreeMap<String, PhaseCount> = BTreeMap::new();
    for entry in std::fs::read_dir(directory.path()).map_err(|error| error.to_string())? {
        let path = entry.map_err(|error| error.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|error| error.to_string())?;
        let trigger = text
            .lines()
            .find_map(|line| line.strip_prefix("desc: Trigger: Client Request: "))
            .map(str::trim);
        if let Some(phase) = trigger {
            phases.insert(phase.to_string(), read_profile(&text)?);
        }
    }
    let phase = |name: &CStr| -> Result<PhaseCount, String> {
        let name = name.to_string_lossy();
        phases
            .get(name.as_ref())
            .copied()
            .ok_or_else(|| format!("no callgrind dump of the {name} phase in {}", dir(&profile)))
    };
    Ok(Measured {
        workload,
        produce: phase(PRODUCE_PHASE)?,
        fetch: phase(FETCH_PHASE)?,
    })
}

fn dir(path: &Path) -> String {
    path.parent().unwrap_or(path).display().to_string()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let workloads = args
        .workloads
        .iter()
        .map(|text| parse_workload(text))
        .collect::<Result<Vec<_>, _>>()?;
    if args.inner {
        let [workload] = workloads[..] else {
            return Err("--inner runs exactly one workload".into());
        };
        if !callgrind::running_on_valgrind() {
            eprintln!("not under valgrind: the workload runs, nothing is counted");
        }
        return run_inner(workload, &args);
    }
    if !args.json {
        println!(
            "instructions per record ({} byte values, durable, acks=all, one request in flight); \
             `broker` leaves out the simulated disk's own work",
            args.value_bytes
        );
        println!(
            "| workload | produce, broker | produce, all | fetch, broker | fetch, all |\n\
             |---|---|---|---|---|"
        );
    }
    for workload in workloads {
        let measured = measure(workload, &args)?;
        let records = workload.requests as f64 * f64::from(workload.records_per_batch);
        let per_record = |count: u64| count as f64 / records;
        let (produce, fetch) = (measured.produce, measured.fetch);
        let name = format!(
            "{} requests x {} records",
            measured.workload.requests, measured.workload.records_per_batch
        );
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "workload": name,
                    "requests": workload.requests,
                    "records_per_batch": workload.records_per_batch,
                    "value_bytes": args.value_bytes,
                    "produce_ir_per_record": per_record(produce.broker()),
                    "produce_ir_per_record_with_simulated_disk": per_record(produce.total),
                    "fetch_ir_per_record": per_record(fetch.broker()),
                    "fetch_ir_per_record_with_simulated_disk": per_record(fetch.total),
                })
            );
        } else {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
                per_record(produce.broker()),
                per_record(produce.total),
                per_record(fetch.broker()),
                per_record(fetch.total),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_small_workload_produces_and_fetches_every_record() {
        let args = Args::parse_from(["cpu-cost", "--inner", "--fetch-bytes", "4096"]);
        // 40 batches of 3 records of 1 KiB: more fetches than one, each checked by run_inner.
        let workload = parse_workload("40x3").unwrap();
        run_inner(workload, &args).unwrap();
    }

    #[test]
    fn workloads_are_requests_by_records() {
        assert_eq!(parse_workload("1000x16").unwrap().requests, 1000);
        assert!(parse_workload("1000").is_err());
        assert!(parse_workload("0x16").is_err());
        assert!(parse_workload("10x-1").is_err());
    }

    #[test]
    fn the_simulated_disk_is_counted_once_from_its_callers() {
        let profile = "\
events: Ir
fn=(1) broker::append
0 100
cfn=(2) <storage::sim::SimFile as storage::io::DiskFile>::fdatasync::{{closure}}
calls=1 0
0 40
cfn=(3) malloc
calls=2 0
0 7
fn=(2)
0 30
cfn=(4) <storage::sim::SimFile as storage::io::DiskFile>::size::{{closure}}
calls=1 0
0 10
fn=(3)
0 7
summary: 147
";
        let count = read_profile(profile).unwrap();
        assert_eq!(count.total, 147);
        // The call from broker code (40, which includes the nested sim call's 10), not again
        // the sim's call to itself.
        assert_eq!(count.simulated_disk, 40);
        assert!(read_profile("events: Ir\n").is_err());
        // With instruction addresses dumped too, the cost is one column further right.
        let with_addresses = "\
positions: instr line
events: Ir
fn=(1) broker::append
0x10 0 100
cfn=(2) <storage::sim::SimDisk as storage::io::Disk>::open::{{closure}}
calls=1 0x20 0
0x10 0 25
totals: 125
";
        let count = read_profile(with_addresses).unwrap();
        assert_eq!(
            (count.total, count.simulated_disk, count.broker()),
            (125, 25, 100)
        );
    }
}
