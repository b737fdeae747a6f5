//! Raft messages between voters, in an encoding of ours.
//!
//! raft-rs's `Message` is a protobuf 2 struct. We never hand peer bytes to protobuf 2's parser
//! (RUSTSEC-2024-0437; see CLUSTER.md). Each message is converted field by field: a version
//! byte, the fixed fields, then the entries and the optional snapshot, in the metadata log's
//! own entry and snapshot encodings. Decoding checks every length against the frame it came
//! in, caps the entry count, and takes only message types a peer may send.

use bytes::{Buf, BufMut, Bytes};
use raft::eraftpb::{Message, MessageType, Snapshot};

use super::store::{decode_entry, decode_snapshot_body, encode_entry, encode_snapshot_body};

const VERSION: u8 = 1;

/// Entries one message may carry: raft-rs sends at most `max_size_per_msg` bytes of them
/// (1 MiB here), so this is far above anything a correct peer sends.
pub const ENTRIES_PER_MESSAGE_MAX: usize = 65_536;

/// The message types, by their wire number (raft-rs's own numbering).
const TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

/// Whether a peer may send this type. The local ones (Hup, Beat, Unreachable, SnapStatus,
/// CheckQuorum) are raft-rs's calls to itself: stepping one from a peer would make this node
/// act as if it had decided so. Proposals, read indexes and leader transfers are what a
/// follower forwards to its leader; this quorum never forwards (only the leader's controller
/// proposes), so a peer sending one is refused rather than let it write to the log. Nothing
/// here transfers leadership yet, so a TimeoutNow (which forces an election) is refused too.
fn from_a_peer(kind: MessageType) -> bool {
    !matches!(
        kind,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
            | MessageType::MsgPropose
            | MessageType::MsgReadIndex
            | MessageType::MsgReadIndexResp
            | MessageType::MsgTransferLeader
            | MessageType::MsgTimeoutNow
    )
}

pub fn encode(message: &Message, out: &mut Vec<u8>) {
    out.put_u8(VERSION);
    out.put_u8(message.get_msg_type() as u8);
    for value in [
        message.to,
        message.from,
        message.term,
        message.log_term,
        message.index,
        message.commit,
        message.commit_term,
        message.request_snapshot,
        message.reject_hint,
    ] {
        out.put_u64(value);
    }
    out.put_u8(u8::from(message.reject));
    out.put_i64(message.priority);
    out.put_u32(message.context.len() as u32);
    out.put_slice(&message.context);
    out.put_u32(message.entries.len() as u32);
    for entry in message.entries.iter() {
        encode_entry(out, entry);
    }
    match message.snapshot.as_ref() {
        Some(snapshot) if !snapshot.is_empty() => {
            out.put_u8(1);
            encode_snapshot_body(out, snapshot);
        }
        _ => out.put_u8(0),
    }
}

fn need(body: &[u8], bytes: usize) -> Result<(), String> {
    if body.remaining() < bytes {
        return Err("a Raft message is cut short".into());
    }
    Ok(())
}

pub fn decode(mut body: &[u8]) -> Result<Message, String> {
    need(body, 2)?;
    let version = body.get_u8();
    if version != VERSION {
        return Err(format!(
            "a Raft message of format {version}; this node reads {VERSION}"
        ));
    }
    let kind = *TYPES
        .get(usize::from(body.get_u8()))
        .ok_or("an unknown Raft message type")?;
    if !from_a_peer(kind) {
        return Err(format!("{kind:?} is not a message a peer sends"));
    }
    let mut message = Message::default();
    message.set_msg_type(kind);
    need(body, 9 * 8 + 1 + 8 + 4)?;
    message.to = body.get_u64();
    message.from = body.get_u64();
    message.term = body.get_u64();
    message.log_term = body.get_u64();
    message.index = body.get_u64();
    message.commit = body.get_u64();
    message.commit_term = body.get_u64();
    message.request_snapshot = body.get_u64();
    message.reject_hint = body.get_u64();
    message.reject = match body.get_u8() {
        0 => false,
        1 => true,
        _ => return Err("a Raft message with a bad flag".into()),
    };
    message.priority = body.get_i64();
    let context = body.get_u32() as usize;
    need(body, context)?;
    message.context = Bytes::copy_from_slice(&body[..context]);
    body.advance(context);
    need(body, 4)?;
    let count = body.get_u32() as usize;
    if count > ENTRIES_PER_MESSAGE_MAX {
        return Err(format!("a Raft message claims {count} entries"));
    }
    // Each entry takes at least its 25 fixed bytes: a count the body cannot hold is refused
    // before anything is allocated for it.
    need(body, count.saturating_mul(25))?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(decode_entry(&mut body).ok_or("a malformed entry in a Raft message")?);
    }
    message.set_entries(entries.into());
    need(body, 1)?;
    match body.get_u8() {
        0 => {}
        1 => {
            let snapshot: Snapshot =
                decode_snapshot_body(&mut body).ok_or("a malformed snapshot in a Raft message")?;
            message.set_snapshot(snapshot);
        }
        _ => return Err("a Raft message with a bad snapshot flag".into()),
    }
    if !body.is_empty() {
        return Err("bytes after a Raft message".into());
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn sample() -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.to = 2;
        message.from = 1;
        message.term = 7;
        message.log_term = 6;
        message.index = 41;
        message.commit = 40;
        message.commit_term = 6;
        message.reject_hint = 3;
        message.reject = true;
        message.priority = -5;
        message.context = Bytes::from_static(b"ctx");
        let entries: Vec<Entry> = (42..45)
            .map(|index| Entry {
                term: 7,
                index,
                data: Bytes::from(format!("change {index}")),
                ..Entry::default()
            })
            .collect();
        message.set_entries(entries.into());
        let mut snapshot = Snapshot {
            data: Bytes::from_static(b"{\"state\":1}"),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 40;
        snapshot.mut_metadata().term = 6;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        message.set_snapshot(snapshot);
        message
    }

    #[test]
    fn every_field_survives_the_round_trip() {
        let message = sample();
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn every_truncation_and_local_message_types_are_refused() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for length in 0..bytes.len() {
            assert!(decode(&bytes[..length]).is_err(), "cut at {length}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        for local in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgCheckQuorum,
        ] {
            let mut message = Message::default();
            message.set_msg_type(local);
            let mut bytes = Vec::new();
            encode(&message, &mut bytes);
            assert!(decode(&bytes)
                .unwrap_err()
                .contains("not a message a peer sends"));
        }
    }

    #[test]
    fn a_lying_entry_count_is_refused_before_allocating() {
        let mut message = sample();
        message.set_entries(Vec::new().into());
        message.clear_snapshot();
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        // The count sits just before the snapshot flag, the last byte.
        let at = bytes.len() - 5;
        bytes[at..at + 4].copy_from_slice(&(ENTRIES_PER_MESSAGE_MAX as u32).to_be_bytes());
        assert!(decode(&bytes).unwrap_err().contains("cut short"));
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&bytes).unwrap_err().contains("claims"));
    }
}
