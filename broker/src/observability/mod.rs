//! Operating the broker: per-shard metrics and the admin HTTP listener (`/metrics`,
//! `/v1/status/ready`, `/v1/status/live`).

pub mod admin;
pub mod metrics;
