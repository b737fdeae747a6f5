//! A small blocking Kafka client on `kafka-protocol`: enough to look up metadata, create a
//! topic and pipeline produce requests against any Kafka-compatible broker. Fixed, widely
//! supported versions are used so the same run works against Kafka, Redpanda and this broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A response frame may not claim more than this (a produce response is tiny; metadata of a
/// large cluster is a few MiB).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address}: {reason}")]
    Protocol { address: String, reason: String },
}

pub struct Connection {
    stream: TcpStream,
    pub address: String,
    next_correlation_id: i32,
}

impl Connection {
    /// Connects with a read timeout, so a broker that goes away is an error, not a hang.
    pub fn connect(address: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let io = |source| ClientError::Io {
            address: address.to_string(),
            source,
        };
        let stream = TcpStream::connect(address).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        Ok(Connection {
            stream,
            address: address.to_string(),
            next_correlation_id: 0,
        })
    }

    pub fn try_clone(&self) -> Result<Connection, ClientError> {
        Ok(Connection {
            stream: self.stream.try_clone().map_err(|source| self.io(source))?,
            address: self.address.clone(),
            next_correlation_id: 0,
        })
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            address: self.address.clone(),
            source,
        }
    }

    fn protocol(&self, reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            address: self.address.clone(),
            reason: reason.into(),
        }
    }

    /// Sends a request; returns its correlation id.
    pub fn send<R: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &R,
    ) -> Result<i32, ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("loadgen")))
            .encode(&mut frame, api_key.request_header_version(version))
            .map_err(|error| self.protocol(error.to_string()))?;
        request
            .encode(&mut frame, version)
            .map_err(|error| self.protocol(error.to_string()))?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream
            .write_all(&frame)
            .map_err(|source| self.io(source))?;
        Ok(correlation_id)
    }

    /// Reads the next response; returns its correlation id and body.
    pub fn receive<T: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
    ) -> Result<(i32, T), ClientError> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|source| self.io(source))?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > RESPONSE_BYTES_MAX {
            return Err(self.protocol(format!("response frame of {size} bytes")));
        }
        let mut body = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut body)
            .map_err(|source| self.io(source))?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .map_err(|error| self.protocol(error.to_string()))?;
        let response =
            T::decode(&mut body, version).map_err(|error| self.protocol(error.to_string()))?;
        Ok((header.correlation_id, response))
    }

    pub fn call<R: Encodable, T: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &R,
    ) -> Result<T, ClientError> {
        let sent = self.send(api_key, version, request)?;
        let (received, response) = self.receive(api_key, version)?;
        if sent != received {
            return Err(self.protocol(format!("correlation id {received}, expected {sent}")));
        }
        Ok(response)
    }
}
