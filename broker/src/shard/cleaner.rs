//! The shard's log cleaner: compaction (`storage::partition_log::compaction`) of the compacted
//! partitions this shard owns, one at a time, dirtiest first, on the background queue so
//! requests always come first. Its budget is its own: at most `log.cleaner.dedupe.buffer.size`
//! of key map per pass and `log.cleaner.io.max.bytes.per.second` of reads and writes; with
//! nothing to clean it looks again after `log.cleaner.backoff.ms`. A partition whose clean
//! meets a corrupt batch is not cleaned again until a restart: the reason is logged and the
//! batch stays as it is, as Kafka's uncleanable partitions do.

use std::cell::Cell;
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use storage::LogError;
use tracing::{error, info, warn};

use super::Shard;

/// Paces the cleaner's I/O to a rate: after `bytes` more, waits until they would have taken
/// that long at the rate, counted from the start of the clean.
struct Throttle {
    rate: Option<f64>,
    started: Instant,
    bytes: Cell<u64>,
}

impl Throttle {
    fn new(rate: Option<f64>) -> Throttle {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: Cell::new(0),
        }
    }

    fn pace(&self, bytes: u64) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            let Some(rate) = self.rate else {
                return;
            };
            let total = self.bytes.get().saturating_add(bytes);
            self.bytes.set(total);
            let due = Duration::from_secs_f64(total as f64 / rate);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                shards::task::sleep(due - elapsed).await;
            }
        })
    }
}

impl Shard {
    /// The cleaner, for the shard's life.
    pub async fn run_cleaner(self: Rc<Self>) {
        let config = self.config();
        if !config.cleaner_enabled() {
            info!(shard = %self.id, "log cleaner disabled (log.cleaner.enable=false)");
            return;
        }
        let backoff = config.millis("log.cleaner.backoff.ms");
        let map_entries = config.cleaner_map_entries();
        let rate = config.cleaner_io_bytes_per_second();
        let mut uncleanable: HashSet<PathBuf> = HashSet::new();
        loop {
            let now = crate::clock::now_ms();
            let dirtiest = self
                .owned_logs()
                .into_iter()
                .filter(|log| {
                    log.offline_reason().is_none() && !uncleanable.contains(log.directory())
                })
                .filter(|log| log.wants_cleaning(now))
                .filter_map(|log| log.dirty_ratio(now).map(|ratio| (ratio, log)))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let Some((_, log)) = dirtiest else {
                shards::task::sleep(backoff).await;
                continue;
            };
            let throttle = Throttle::new(rate);
            match log
                .clean(map_entries, now, &|bytes| throttle.pace(bytes))
                .await
            {
                Ok(Some(_)) => self.log_context.space.note_freed(),
                Ok(None) => shards::task::sleep(backoff).await,
                Err(error @ (LogError::Corrupt { .. } | LogError::Batch(_))) => {
                    error!(
                        directory = %log.directory().display(),
                        %error,
                        "compaction stopped for this partition until a restart; the corrupt \
                         batch is left as it is"
                    );
                    uncleanable.insert(log.directory().to_path_buf());
                }
                Err(error) => {
                    warn!(directory = %log.directory().display(), %error, "compaction failed; trying again later");
                    shards::task::sleep(backoff).await;
                }
            }
        }
    }
}
