//! The broker: the Kafka protocol front end, request handlers, the controller and cluster
//! metadata, on top of `shards` (one executor per core) and `storage` (the partition log).
//!
//! Every shard runs the same code: it accepts connections on its own port, answers Metadata for
//! the whole cluster from its local copy, and serves Produce and Fetch for the partitions it owns.
//! Shard 0 also hosts the controller, which is the only writer of cluster metadata.

pub mod clock;
pub mod config;
pub mod connections;
pub mod controller;
pub mod disk_space;
pub mod error_code;
pub mod groups;
pub mod in_process;
pub mod kafka;
pub mod limits;
pub mod node;
pub mod observability;
pub mod replication;
pub mod server;
pub mod shard;
