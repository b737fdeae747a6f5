//! The broker's wall clock, read in one place: record timestamps, commit times and expiry
//! deadlines are milliseconds since the Unix epoch, as Kafka's are.

/// Milliseconds since the Unix epoch, by the broker's clock (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
