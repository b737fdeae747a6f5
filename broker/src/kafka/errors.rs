//! The one place internal errors become Kafka error codes.

use storage::{BatchError, LogError, ProducerError};

/// Kafka error codes, by Kafka's names (`org.apache.kafka.common.protocol.Errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ErrorCode {
    UnknownServerError = -1,
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    InvalidTopicException = 17,
    InvalidRequiredAcks = 21,
    InvalidTimestamp = 32,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    TransactionalIdAuthorizationFailed = 53,
    KafkaStorageError = 56,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    OffsetMetadataTooLarge = 12,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    MemberIdRequired = 79,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    GroupSubscribedToTopic = 86,
    InvalidRecord = 87,
    OutOfOrderSequenceNumber = 45,
    InvalidProducerEpoch = 47,
    UnknownProducerId = 59,
    UnknownTopicId = 100,
}

impl ErrorCode {
    pub fn code(self) -> i16 {
        self as i16
    }
}

pub fn batch_error_code(error: &BatchError) -> ErrorCode {
    match error {
        BatchError::Corrupt { .. } => ErrorCode::CorruptMessage,
        BatchError::Invalid { .. } => ErrorCode::InvalidRecord,
        BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        BatchError::UnsupportedMagic { .. } => ErrorCode::UnsupportedForMessageFormat,
        BatchError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
        BatchError::Records { kind, .. } => match kind {
            storage::record_batch::RecordErrorKind::InvalidRecord => ErrorCode::InvalidRecord,
            storage::record_batch::RecordErrorKind::InvalidTimestamp => ErrorCode::InvalidTimestamp,
        },
    }
}

pub fn producer_error_code(error: &ProducerError) -> ErrorCode {
    match error {
        ProducerError::InvalidEpoch { .. } => ErrorCode::InvalidProducerEpoch,
        ProducerError::OutOfOrder { .. } => ErrorCode::OutOfOrderSequenceNumber,
        ProducerError::UnknownProducer { .. } => ErrorCode::UnknownProducerId,
        ProducerError::InvalidFields { .. } => ErrorCode::InvalidRecord,
    }
}

pub fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::Batch(batch) => batch_error_code(batch),
        LogError::Producer(producer) => producer_error_code(producer),
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::Io(_)
        | LogError::Offline { .. }
        | LogError::NoSpace { .. }
        | LogError::Corrupt { .. }
        | LogError::CorruptWithoutRecoveryPoint { .. } => ErrorCode::KafkaStorageError,
    }
}
