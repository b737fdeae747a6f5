//! The disk's direct-I/O ceiling, through the broker's own I/O path: sequential write bandwidth
//! (large aligned writes at several queue depths, one `fdatasync` at the end) and the bandwidth
//! of synced writes (each followed by its `fdatasync`, the most a durable log can do); the
//! latency of a small direct write (what a relaxed-mode acknowledgement waits for), alone and
//! while syncs run, as a log's writer and syncer overlap; and the latency of `fdatasync` after
//! a small write, in two forms: overwriting blocks already written (the device's own sync cost)
//! and appending into freshly preallocated space, which is what a log's group commit pays: the
//! filesystem must also record that the preallocated (unwritten) blocks now hold data, so each
//! such `fdatasync` carries a journal commit.

use std::time::{Duration, Instant};

use clap::Parser;
use storage::dma::DmaDisk;
use storage::io::Disk;

#[derive(Parser)]
#[command(about = "Measure direct-I/O write bandwidth and fdatasync latency of a directory's disk")]
struct Args {
    /// Directory on the disk to measure (a scratch file is created and removed there).
    #[arg(long, default_value = "./data")]
    dir: std::path::PathBuf,
    /// Bytes to write for the bandwidth figure.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Logs appending and syncing at once for the concurrent figure.
    #[arg(long, default_value_t = 4)]
    files: u64,
    /// Size of each direct write.
    #[arg(long, default_value_t = 1 << 20)]
    write_bytes: usize,
    /// Writes in flight for the bandwidth figure, each depth measured in turn; the ceiling is
    /// the best of them (a single stream of writes, one at a time, undersells a disk that the
    /// broker keeps several writes deep, one per partition being flushed).
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 4, 16])]
    queue_depths: Vec<u64>,
    /// How many small-write + fdatasync rounds to time.
    #[arg(long, default_value_t = 2000)]
    syncs: u64,
}

/// Writes `bytes` sequentially into a new preallocated file at `path` with `depth` writes of
/// `write_bytes` in flight, then syncs once; returns MiB/s and removes the file.
async fn write_bandwidth(
    path: std::path::PathBuf,
    bytes: u64,
    write_bytes: usize,
    depth: u64,
) -> Result<f64, String> {
    let file = DmaDisk.open(&path, true).await.map_err(|e| e.to_string())?;
    file.allocate(bytes).await.map_err(|e| e.to_string())?;
    let writes = bytes.div_ceil(write_bytes as u64);
    let started = Instant::now();
    // Writer k issues writes k, k + depth, k + 2 * depth, ...: together they fill the file in
    // order with `depth` writes queued at the device.
    let writers: Vec<_> = (0..depth)
        .map(|writer| {
            let file = file.clone();
            glommio::spawn_local(async move {
                let block = vec![0x5au8; write_bytes];
                let mut index = writer;
                while index < writes {
                    file.write_blocks(index * write_bytes as u64, &[&block])
                        .await
                        .map_err(|e| e.to_string())?;
                    index += depth;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await?;
    }
    file.fdatasync().await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    std::fs::remove_file(&path).map_err(|error| error.to_string())?;
    Ok((writes * write_bytes as u64) as f64 / elapsed.as_secs_f64() / (1 << 20) as f64)
}

/// Microseconds since `started`, at least 1 (the histograms start at 1 us).
fn micros_since(started: Instant) -> u64 {
    started.elapsed().max(Duration::from_micros(1)).as_micros() as u64
}

/// A new file at `path` of `bytes` whose blocks are all written (with `fill`, in
/// `write_bytes` writes) and synced, so that later writes overwrite written blocks, as a
/// log's prepared segment is.
async fn prepared_file(
    path: &std::path::Path,
    bytes: u64,
    write_bytes: usize,
    fill: u8,
) -> Result<std::rc::Rc<dyn storage::io::DiskFile>, String> {
    let file = DmaDisk.open(path, true).await.map_err(|e| e.to_string())?;
    file.allocate(bytes).await.map_err(|e| e.to_string())?;
    let block = vec![fill; write_bytes];
    let mut position = 0;
    while position < bytes {
        file.write_blocks(position, &[&block])
            .await
            .map_err(|e| e.to_string())?;
        position += write_bytes as u64;
    }
    file.fdatasync().await.map_err(|e| e.to_string())?;
    Ok(file)
}

/// Overwrites `file`'s first `bytes` in `write_bytes` writes, each followed by an
/// `fdatasync`, as a durable log's group commits are; returns the bytes written.
async fn synced_writes(
    file: std::rc::Rc<dyn storage::io::DiskFile>,
    bytes: u64,
    write_bytes: usize,
) -> Result<u64, String> {
    let block = vec![0x6bu8; write_bytes];
    let mut position = 0;
    while position < bytes {
        file.write_blocks(position, &[&block])
            .await
            .map_err(|e| e.to_string())?;
        file.fdatasync().await.map_err(|e| e.to_string())?;
        position += write_bytes as u64;
    }
    Ok(position)
}

/// Appends 4 KiB at a time to a new preallocated file at `path`, each append followed by an
/// `fdatasync`; returns each sync's latency in microseconds and removes the file.
async fn append_syncs(path: std::path::PathBuf, count: u64) -> Result<Vec<u64>, String> {
    let file = DmaDisk.open(&path, true).await.map_err(|e| e.to_string())?;
    file.allocate(count.max(1) * 4096)
        .await
        .map_err(|e| e.to_string())?;
    let block = vec![0x44u8; 4096];
    let mut latencies = Vec::with_capacity(count as usize);
    for index in 0..count {
        file.write_blocks(index * 4096, &[&block])
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        file.fdatasync().await.map_err(|e| e.to_string())?;
        latencies.push(micros_since(started));
    }
    std::fs::remove_file(&path).map_err(|error| error.to_string())?;
    Ok(latencies)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.write_bytes == 0 || args.write_bytes % 4096 != 0 {
        return Err("--write-bytes must be a positive multiple of 4096".into());
    }
    if args.queue_depths.is_empty() || args.queue_depths.contains(&0) {
        return Err("--queue-depths must list positive depths, e.g. 1,4,16".into());
    }
    storage::dma::ensure_locked_memory(64 << 20)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|error| format!("{}: {error}", args.dir.display()))?;
    let executor = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .map_err(|error| error.to_string())?;
    executor.run(async move {
        let mut figures = Vec::new();
        for &depth in &args.queue_depths {
            let path = args
                .dir
                .join(format!("disk-ceiling-bandwidth-{depth}.scratch"));
            figures.push((
                depth,
                write_bandwidth(path, args.bytes, args.write_bytes, depth).await?,
            ));
        }
        let best = figures.iter().map(|(_, mib)| *mib).fold(0.0, f64::max);
        let each: Vec<String> = figures
            .iter()
            .map(|(depth, mib)| format!("{mib:.1} at depth {depth}"))
            .collect();
        println!(
            "direct-I/O sequential write: {best:.1} MiB/s (best of {}; {} MiB each, {} KiB writes)",
            each.join(", "),
            args.bytes >> 20,
            args.write_bytes >> 10
        );

        // Blocks written once, so the syncs below overwrite written blocks.
        let path = args.dir.join("disk-ceiling.scratch");
        let area =
            (args.syncs * 4096).div_ceil(args.write_bytes as u64).max(1) * args.write_bytes as u64;
        let file = prepared_file(&path, area, args.write_bytes, 0x5a).await?;

        let mut histogram = bench::latency_histogram();
        // The write alone is what a relaxed-mode acknowledgement waits for.
        let mut writes = bench::latency_histogram();
        let small = vec![0x33u8; 4096];
        let mut position = 0u64;
        for _ in 0..args.syncs {
            let started = Instant::now();
            file.write_blocks(position, &[&small])
                .await
                .map_err(|e| e.to_string())?;
            writes.saturating_record(micros_since(started));
            let started = Instant::now();
            file.fdatasync().await.map_err(|e| e.to_string())?;
            histogram.saturating_record(micros_since(started));
            position = (position + 4096) % area;
        }
        println!(
            "fdatasync after a 4 KiB write: {}",
            bench::percentiles_line(&histogram)
        );
        println!(
            "4 KiB direct write over written blocks: {}",
            bench::percentiles_line(&writes)
        );

        // A log's writer does not wait for the previous write's sync before it writes the
        // next batches; such a write can sit behind that sync's cache flush on the way to the
        // device. Writes paced 1 ms apart while fdatasync runs back to back on the same file.
        let syncing = std::rc::Rc::new(std::cell::Cell::new(true));
        let syncer = glommio::spawn_local({
            let (file, syncing) = (file.clone(), syncing.clone());
            async move {
                while syncing.get() {
                    file.fdatasync().await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }
        });
        let mut behind_syncs = bench::latency_histogram();
        for _ in 0..args.syncs {
            let started = Instant::now();
            file.write_blocks(position, &[&small])
                .await
                .map_err(|e| e.to_string())?;
            behind_syncs.saturating_record(micros_since(started));
            position = (position + 4096) % area;
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        syncing.set(false);
        syncer.await?;
        println!(
            "4 KiB direct write while fdatasync runs back to back: {}",
            bench::percentiles_line(&behind_syncs)
        );
        std::fs::remove_file(&path).map_err(|error| error.to_string())?;

        // The log's pattern: each sync covers a 4 KiB append into space preallocated by
        // fallocate (unwritten extents), as segments are. First one log alone, then several
        // at once, as a shard with several partitions (or several shards) flush them: their
        // syncs share the filesystem's journal.
        let mut histogram = bench::latency_histogram();
        for micros in
            append_syncs(args.dir.join("disk-ceiling-append-0.scratch"), args.syncs).await?
        {
            histogram.saturating_record(micros);
        }
        println!(
            "fdatasync after a 4 KiB append into preallocated space: {}",
            bench::percentiles_line(&histogram)
        );
        let tasks: Vec<_> = (0..args.files)
            .map(|index| {
                let path = args
                    .dir
                    .join(format!("disk-ceiling-append-{index}.scratch"));
                glommio::spawn_local(append_syncs(path, args.syncs / args.files.max(1)))
            })
            .collect();
        let mut histogram = bench::latency_histogram();
        for task in tasks {
            for micros in task.await? {
                histogram.saturating_record(micros);
            }
        }
        println!(
            "fdatasync after a 4 KiB append, {} logs at once: {}",
            args.files,
            bench::percentiles_line(&histogram)
        );

        // What durable mode can reach at most: every write followed by its fdatasync, with
        // `--files` logs doing so at once (each its share of `--bytes`, 128 KiB writes, the
        // size of the batches the throughput runs send).
        // Each file prepared first, then timed from when all of them start writing.
        let write_bytes: u64 = 128 << 10;
        let share = ((args.bytes / args.files.max(1) / 4).div_ceil(write_bytes) * write_bytes)
            .max(write_bytes);
        let mut files = Vec::new();
        for index in 0..args.files {
            let path = args.dir.join(format!("disk-ceiling-synced-{index}.scratch"));
            files.push((prepared_file(&path, share, write_bytes as usize, 0).await?, path));
        }
        let started = Instant::now();
        let tasks: Vec<_> = files
            .iter()
            .map(|(file, _)| {
                glommio::spawn_local(synced_writes(file.clone(), share, write_bytes as usize))
            })
            .collect();
        let mut written = 0;
        for task in tasks {
            written += task.await?;
        }
        let elapsed = started.elapsed();
        for (_, path) in &files {
            std::fs::remove_file(path).map_err(|error| error.to_string())?;
        }
        println!(
            "synced writes: {:.1} MiB/s ({} logs at once, 128 KiB writes each followed by fdatasync)",
            written as f64 / elapsed.as_secs_f64() / (1 << 20) as f64,
            args.files
        );
        Ok::<(), String>(())
    })
}
