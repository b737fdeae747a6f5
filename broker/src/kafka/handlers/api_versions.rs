//! ApiVersions (key 18): the advertised table of `wire::api_versions`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use crate::kafka::errors::ErrorCode;
use crate::kafka::wire::api_versions::ADVERTISED;

/// The response, with `error` set to `UnsupportedVersion` when the client asked for a version we
/// do not speak (it is then sent in the v0 layout, KIP-511, so the client can still read it).
pub fn response(error: ErrorCode) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(
            ADVERTISED
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}
