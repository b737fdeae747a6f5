//! Raw bytes of the Kafka protocol: frames, request bodies' shapes, the ApiVersions table and the
//! zero-copy Fetch response. Nothing outside this module touches wire bytes directly.

pub mod api_versions;
pub mod fetch_response;
pub mod frame;
pub mod shape;
