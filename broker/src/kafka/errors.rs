//! The one place internal errors become Kafka error codes.

use storage::{BatchError, LogError, ProducerError};

pub use crate::error_code::ErrorCode;

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
        LogError::NotLeader => ErrorCode::NotLeaderOrFollower,
        LogError::Io(_)
        | LogError::Offline { .. }
        | LogError::NoSpace { .. }
        | LogError::Corrupt { .. }
        | LogError::CorruptWithoutRecoveryPoint { .. } => ErrorCode::KafkaStorageError,
    }
}
