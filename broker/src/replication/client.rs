//! The broker as a Kafka client of another node: a follower's connection to its leader's
//! shard. `kafka-protocol` encodes the requests; a response is checked by its layout
//! (`kafka::wire::shape`) before `kafka-protocol` decodes it, since its decoder reserves
//! memory for whatever count the bytes claim. Frames are bounded, and every call by a timeout.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shards::net::{Connection, ConnectionWriter};

use crate::controller::quorum::transport::{read_frames_up_to, resolve, FrameReader};

/// The Fetch version followers send: topic ids (a topic deleted and created again under its
/// name is another topic), and `replica_id` still in the body (v15 moves it into
/// `replica_state`).
pub const FETCH_VERSION: i16 = 13;
/// OffsetForLeaderEpoch v4: with `replica_id`, flexible.
pub const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response taken: what a fetch asks for at most (32 MiB) plus one batch of the
/// largest `max.message.bytes` (128 MiB), which KIP-74 returns whole, and its framing.
const RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024 + 128 * 1024 * 1024 + 1024 * 1024;

/// What a response may decode to, at most, per byte of it: a peer's answer of many tiny
/// entries is refused before it is decoded into many large ones (as a request is).
const DECODE_AMPLIFICATION_MAX: usize = 32;

pub struct Client {
    reader: FrameReader,
    writer: ConnectionWriter,
    next_correlation_id: i32,
    pub address: String,
}

impl Client {
    pub async fn connect(host: &str, port: u16) -> Result<Client, String> {
        let address = format!("{host}:{port}");
        let Some(resolved) = resolve(&address).await else {
            return Err(format!("{address} does not resolve"));
        };
        let connection = shards::task::timeout(CONNECT_TIMEOUT, Connection::connect(resolved))
            .await
            .ok_or_else(|| format!("connecting to {address} timed out"))?
            .map_err(|error| format!("connecting to {address}: {error}"))?;
        let (reader, writer) = connection.split();
        Ok(Client {
            reader: read_frames_up_to(reader, RESPONSE_BYTES_MAX),
            writer,
            next_correlation_id: 0,
            address,
        })
    }

    /// One Fetch, answered within `timeout`. An error leaves the connection unusable (the
    /// caller drops it): a late answer would be taken for the next request's.
    pub async fn fetch(
        &mut self,
        request: &FetchRequest,
        timeout: Duration,
    ) -> Result<FetchResponse, String> {
        self.call(ApiKey::Fetch, FETCH_VERSION, request, timeout)
            .await
    }

    /// One OffsetForLeaderEpoch (a follower asking its new leader where its epoch ends).
    pub async fn offset_for_leader_epoch(
        &mut self,
        request: &OffsetForLeaderEpochRequest,
        timeout: Duration,
    ) -> Result<OffsetForLeaderEpochResponse, String> {
        self.call(
            ApiKey::OffsetForLeaderEpoch,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            request,
            timeout,
        )
        .await
    }

    async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Q,
        timeout: Duration,
    ) -> Result<R, String> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        let encoded: Result<(), String> = (|| {
            RequestHeader::default()
                .with_request_api_key(api_key as i16)
                .with_request_api_version(version)
                .with_correlation_id(correlation_id)
                .with_client_id(Some(StrBytes::from_static_str("replica-fetcher")))
                .encode(&mut frame, api_key.request_header_version(version))
                .map_err(|error| error.to_string())?;
            request
                .encode(&mut frame, version)
                .map_err(|error| error.to_string())
        })();
        encoded?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let exchange = async {
            self.writer
                .write_all_chunks(&[frame.freeze()])
                .await
                .map_err(|error| error.to_string())?;
            match self.reader.frame().await? {
                Some(body) => Ok(body),
                None => Err("the leader closed the connection".to_string()),
            }
        };
        let body = shards::task::timeout(timeout, exchange)
            .await
            .ok_or_else(|| format!("{} did not answer in {timeout:?}", self.address))??;
        let mut body = Bytes::from(body);
        let header_version = api_key.response_header_version(version);
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|error| format!("{}: a malformed response header: {error}", self.address))?;
        if header.correlation_id != correlation_id {
            return Err(format!(
                "{}: correlation id {}, expected {correlation_id}",
                self.address, header.correlation_id
            ));
        }
        let decoded = crate::kafka::wire::shape::check_response_body(
            api_key,
            version,
            header_version >= 1,
            &body,
        )
        .map_err(|error| format!("{}: {error}", self.address))?;
        if decoded > body.len().max(4096) * DECODE_AMPLIFICATION_MAX {
            return Err(format!(
                "{}: a response of {} bytes that would decode to {decoded}",
                self.address,
                body.len()
            ));
        }
        R::decode(&mut body, version).map_err(|error| {
            format!(
                "{}: a malformed {api_key:?} response: {error}",
                self.address
            )
        })
    }
}
