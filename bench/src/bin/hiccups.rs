//! The machine's own pauses: one thread per core, pinned, spins reading the clock for a while
//! and records every gap between two readings. A spinning thread makes no syscall and waits for
//! nothing, so a gap is time the core was taken from it: an interrupt, a kernel thread, or, on a
//! virtual machine, the hypervisor running something else on the physical CPU. No process on
//! the core can answer faster than its longest pause, so at 1,000 requests per second a core
//! that pauses for more than 1 ms more than once a second puts a p99.9 above 1 ms out of any
//! broker's and any client's reach.

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Pauses a spinning thread sees on each core")]
struct Args {
    /// Seconds each core's thread spins.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Cores to measure, as a list such as 0-3 [default: every core this process may use].
    #[arg(long)]
    cores: Option<String>,
}

/// What one core's thread saw.
struct CorePauses {
    core: usize,
    /// Gaps longer than 1 ms.
    over_1ms: u64,
    /// Gaps longer than 100 us.
    over_100us: u64,
    longest: Duration,
    /// For each of `THRESHOLDS`, the sum over pauses of how much of each lies more than the
    /// threshold before its end: a request that arrives then waits longer than that.
    beyond: [Duration; THRESHOLDS.len()],
    spun: Duration,
}

/// The waits `hiccups` reports the share of time for.
const THRESHOLDS: [Duration; 4] = [
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(2),
];

fn pin_to(core: usize) -> Result<(), String> {
    // SAFETY: `set` is a plain bitmask on our stack, zeroed before CPU_SET writes one bit of it
    // (CPU_SET bounds-checks the index against the set's size), and sched_setaffinity reads
    // exactly size_of::<cpu_set_t>() bytes of it for the calling thread (pid 0).
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot pin to core {core}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn spin(core: usize, seconds: Duration) -> Result<CorePauses, String> {
    pin_to(core)?;
    let mut pauses = CorePauses {
        core,
        over_1ms: 0,
        over_100us: 0,
        longest: Duration::ZERO,
        beyond: [Duration::ZERO; THRESHOLDS.len()],
        spun: Duration::ZERO,
    };
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap > Duration::from_micros(100) {
            pauses.over_100us += 1;
            if gap > Duration::from_millis(1) {
                pauses.over_1ms += 1;
            }
            for (beyond, threshold) in pauses.beyond.iter_mut().zip(THRESHOLDS) {
                *beyond += gap.saturating_sub(threshold);
            }
            pauses.longest = pauses.longest.max(gap);
        }
        if now - start >= seconds {
            pauses.spun = now - start;
            return Ok(pauses);
        }
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be above 0 and at most 3600".into());
    }
    let cores = match &args.cores {
        Some(list) => shards::cpu::parse_core_list(list).map_err(|error| error.to_string())?,
        None => shards::cpu::allowed_cores(),
    };
    let seconds = Duration::from_secs_f64(args.seconds);
    // Every core at once: a pause that takes the whole machine shows on each of them.
    let threads: Vec<_> = cores
        .iter()
        .map(|&core| {
            std::thread::Builder::new()
                .name(format!("spin-{core}"))
                .spawn(move || spin(core, seconds))
                .map_err(|error| format!("cannot start a thread: {error}"))
        })
        .collect::<Result<_, _>>()?;
    for thread in threads {
        let pauses = thread
            .join()
            .map_err(|_| "a spinning thread panicked".to_string())??;
        let spun = pauses.spun.as_secs_f64().max(1e-9);
        // A request arriving at a random moment waits longer than a threshold for this core
        // with these probabilities; a p99.9 below it needs them under 0.1% on every core the
        // request uses.
        let shares: Vec<String> = pauses
            .beyond
            .iter()
            .zip(THRESHOLDS)
            .map(|(beyond, threshold)| {
                format!(
                    "over {} us {:.3}%",
                    threshold.as_micros(),
                    100.0 * beyond.as_secs_f64() / spun
                )
            })
            .collect();
        println!(
            "core {}: {} pauses over 1 ms ({:.2}/s), {} over 100 us, longest {} us, \
             a request would wait {} of the time, in {spun:.1} s",
            pauses.core,
            pauses.over_1ms,
            pauses.over_1ms as f64 / spun,
            pauses.over_100us,
            pauses.longest.as_micros(),
            shares.join(", "),
        );
    }
    Ok(())
}
