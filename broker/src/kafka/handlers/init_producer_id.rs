//! InitProducerId (key 22) for idempotent producers (KIP-98), including the epoch bump an
//! existing producer asks for after a sequence error (KIP-360, used by librdkafka).
//!
//! Transactional producers (a transactional id) are refused until transactions exist.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty())
    {
        return response.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
    }
    // KIP-360: a producer that knows its id and epoch asks for the next epoch of the same id;
    // its partitions then accept sequence 0 under the new epoch. An exhausted epoch gets a new id.
    let existing = request.producer_id.0;
    let epoch = request.producer_epoch;
    if existing >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        return response
            .with_producer_id(ProducerId(existing))
            .with_producer_epoch(epoch + 1);
    }
    match shard.new_producer_id().await {
        Ok(producer_id) => response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Err(reason) => {
            warn!(%reason, "cannot allocate a producer id");
            response.with_error_code(ErrorCode::CoordinatorNotAvailable.code())
        }
    }
}
