//! The broker as a Kafka client of another node: a follower's connection to its leader's
//! shard. `kafka-protocol` encodes the requests; a response is checked by its layout
//! (`kafka::wire::shape`) before `kafka-protocol` decodes it, since its decoder reserves
//! memory for whatever count the bytes claim. Frames are bounded, and every call by a timeout.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shards::net::{Connection, ConnectionWriter};

use crate::controller::quorum::transport::{read_frames, resolve, FrameReader};

/// The Fetch version followers send: the last one with `replica_id` in the body and topic
/// names (v13 moves to topic ids, v15 moves the replica id into `replica_state`).
pub const FETCH_VERSION: i16 = 12;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
            reader: read_frames(reader),
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
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let api_key = ApiKey::Fetch;
        let version = FETCH_VERSION;
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
            .ok_or_else(|| format!("{} did not answer a fetch in {timeout:?}", self.address))??;
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
        crate::kafka::wire::shape::check_response_body(
            api_key,
            version,
            header_version >= 1,
            &body,
        )
        .map_err(|error| format!("{}: {error}", self.address))?;
        FetchResponse::decode(&mut body, version)
            .map_err(|error| format!("{}: a malformed fetch response: {error}", self.address))
    }
}
