//! loadgen: the load generator users point at any Kafka-compatible broker (this one, Kafka,
//! Redpanda) to measure throughput and tail latency, with fixed-rate (open loop) and max-rate
//! modes and HdrHistogram reports. Empty until the loadgen issue fills it; it compiles so the
//! workspace layout is in place.
