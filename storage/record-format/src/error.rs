//! Why a batch was refused.

/// Why a batch was refused. The broker maps these to Kafka error codes in one place
/// (`broker::kafka::errors`): `Corrupt` is `CORRUPT_MESSAGE`, `Invalid` is `INVALID_RECORD`,
/// `TooLarge` is `MESSAGE_TOO_LARGE`, `UnsupportedMagic` is `UNSUPPORTED_FOR_MESSAGE_FORMAT`,
/// `InvalidTimestamp` is `INVALID_TIMESTAMP`, and `Records` carries Kafka's per-record errors
/// (KIP-467) with the code of its `kind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("corrupt record batch: {reason}")]
    Corrupt { reason: String },
    #[error("invalid record batch: {reason}")]
    Invalid { reason: String },
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("record batch magic {magic} is not supported (only v2)")]
    UnsupportedMagic { magic: i8 },
    #[error("{reason}")]
    InvalidTimestamp { reason: String },
    /// Some records broke a rule (a compacted topic's missing key, a timestamp out of range):
    /// Kafka answers with the batch indexes of the records and one message each.
    #[error("{summary}")]
    Records {
        kind: RecordErrorKind,
        summary: String,
        records: Vec<RecordError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// `INVALID_RECORD`
    InvalidRecord,
    /// `INVALID_TIMESTAMP`
    InvalidTimestamp,
}

/// One refused record: its index in the batch (Kafka's `batch_index`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

impl BatchError {
    pub(crate) fn corrupt(reason: &str) -> BatchError {
        BatchError::Corrupt {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> BatchError {
        BatchError::Invalid {
            reason: reason.into(),
        }
    }
}
