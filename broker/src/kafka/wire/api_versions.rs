//! The ApiVersions table: what the broker advertises and what it really accepts.
//!
//! Advertised minimums follow DESIGN section 5: librdkafka before 2.11.1 enables features only
//! when specific old versions are in range, so Produce is advertised from 0 although versions
//! 0-2 are refused (as Kafka 4 refuses them, KIP-896). Maximums stop where our handlers stop.
//! An API appears here only once it works end to end.

use std::ops::RangeInclusive;

use kafka_protocol::messages::ApiKey;

/// (API, advertised min, advertised max).
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    // librdkafka enables idempotence only when InitProducerId v0 is in range.
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
    // Consumer groups, classic protocol. The new protocol (ConsumerGroupHeartbeat, KIP-848)
    // is not advertised: clients such as franz-go switch to it as soon as it is.
    // librdkafka looks for FindCoordinator v0 and JoinGroup v0.
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // Lifecycle and administration.
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    // The controller quorum, for operators (kafka-metadata-quorum.sh).
    (ApiKey::DescribeQuorum, 0, 2),
];

/// Versions the broker decodes and answers. Differs from the advertised range only where an old
/// version is advertised for client feature detection but refused.
pub fn supported_range(api_key: ApiKey) -> Option<RangeInclusive<i16>> {
    let (_, min, max) = ADVERTISED.iter().find(|(key, _, _)| *key == api_key)?;
    let min = match api_key {
        ApiKey::Produce => 3,
        _ => *min,
    };
    Some(min..=*max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_versions_librdkafka_looks_for_are_advertised() {
        let advertised = |key| {
            ADVERTISED
                .iter()
                .find(|(api, _, _)| *api == key)
                .map(|(_, min, max)| *min..=*max)
                .unwrap()
        };
        assert!(advertised(ApiKey::Produce).contains(&0));
        assert!(advertised(ApiKey::Fetch).contains(&4));
        assert!(advertised(ApiKey::ListOffsets).contains(&1));
        assert!(!supported_range(ApiKey::Produce).unwrap().contains(&2));
        // Never advertise beyond what kafka-protocol can decode.
        for (key, _, max) in ADVERTISED {
            assert!(*max <= key.valid_versions().max, "{key:?}");
        }
    }
}
