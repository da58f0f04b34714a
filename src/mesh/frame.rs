//! The mesh wire format: a frame is a `u32` big-endian length, then that
//! many bytes of postcard encoding one [`Frame`].
//!
//! postcard is not self-describing: the variant order of [`Frame`] (and
//! of the Paxos messages it carries) and the order and types of their
//! fields are the wire protocol, and bytes of one release may decode as
//! something else in another. So the Hello names the sender's
//! [`PROTOCOL`], and nodes of different protocols refuse each other
//! before any message passes: a node cut off from a majority of its own
//! protocol is unavailable, never wrong. The Hello's own layout is the
//! one thing that never changes.

use crate::paxos::message::{Message, Role};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// This build's peer protocol. Raise it with any change to how a
/// [`Frame`] or a message it carries is encoded or understood (a new
/// message kind included): nodes refuse peers of another protocol.
/// Releases before protocol versions sent a Hello without one; it reads
/// as protocol 0.
pub const PROTOCOL: u32 = 1;

/// The default largest frame a node sends or accepts: 16 MiB.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Frames carry nothing but a Hello before the peer is known, so the
/// first frame is held to this size whatever the configured maximum.
pub const MAX_HELLO_BYTES: usize = 1024;

/// One unit on a mesh connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame each way: who the sender says it is, and which
    /// protocol it speaks. The receiver believes only what its
    /// certificate proves; this must agree. Never change this variant:
    /// it is how two releases learn that they differ.
    Hello {
        cluster: String,
        node: String,
        protocol: u32,
    },
    /// A Paxos message for `role` of group `group` on the receiving node.
    /// The sender is the authenticated peer, never a field of the frame.
    Msg {
        group: String,
        role: Role,
        msg: Message,
    },
}

/// Why a frame could not be read or written. Any of these closes the
/// connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Decode(postcard::Error),
    #[error("frame has {0} bytes after its end")]
    Trailing(usize),
    #[error("frame does not encode: {0}")]
    Encode(postcard::Error),
}

/// Encode `frame` with its length prefix; refuse one above `max` bytes.
pub fn encode(frame: &Frame, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = postcard::to_extend(frame, vec![0u8; 4]).map_err(FrameError::Encode)?;
    let len = buf.len() - 4;
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len, max });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decode one frame's payload (without the length prefix), all of it.
pub fn decode(payload: &[u8]) -> Result<Frame, FrameError> {
    let decoded = postcard::take_from_bytes(payload)
        .map_err(FrameError::Decode)
        .and_then(|(frame, rest)| match rest.len() {
            0 => Ok(frame),
            n => Err(FrameError::Trailing(n)),
        });
    decoded.or_else(|e| legacy_hello(payload).ok_or(e))
}

/// The Hello of a release before protocol versions (`cluster`, `node`
/// and nothing after), as a Hello of protocol 0: so that such a peer is
/// refused for its protocol, by name, and not as unreadable.
fn legacy_hello(payload: &[u8]) -> Option<Frame> {
    #[derive(Deserialize)]
    enum Legacy {
        Hello { cluster: String, node: String },
    }
    match postcard::take_from_bytes(payload) {
        Ok((Legacy::Hello { cluster, node }, [])) => Some(Frame::Hello {
            cluster,
            node,
            protocol: 0,
        }),
        _ => None,
    }
}

/// Why a peer whose Hello says `theirs` is refused, if it is: `None`
/// when it speaks this build's protocol.
pub fn protocol_mismatch(theirs: u32) -> Option<String> {
    if theirs == PROTOCOL {
        return None;
    }
    let release = match theirs {
        0 => " (a release from before protocol versions)",
        t if t > PROTOCOL => " (a newer release)",
        _ => " (an older release)",
    };
    Some(format!(
        "protocol mismatch: the peer speaks peer protocol {theirs}{release}, this node {PROTOCOL}; \
         nodes of different protocols do not talk: run one release on every node"
    ))
}

/// Read one frame, and not a byte past it: for the Hello exchange, after
/// which a [`FrameReader`] takes the connection over. `Ok(None)`: the
/// peer closed the connection cleanly between frames. A length above
/// `max` is an error before any of the payload is read or allocated.
/// Not safe to cancel (a cancelled read loses what it took).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grow with what arrives: a peer that announces a large frame and
    // sends it slowly holds only what it sent.
    let mut payload = Vec::with_capacity(len.min(64 << 10));
    let got = r.take(len as u64).read_to_end(&mut payload).await?;
    if got < len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    decode(&payload).map(Some)
}

/// Reads frames from one stream, and may be cancelled between any two
/// of its awaits without losing a byte: what a cancelled read took from
/// the stream waits in its buffer for the next. [`read_frame`] loses a
/// frame cut by a cancel, and the rest of the stream with it (a
/// connection's reader selects between the next frame and being closed,
/// and then reads on to drain it).
pub struct FrameReader {
    buf: bytes::BytesMut,
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> FrameReader {
        FrameReader {
            buf: bytes::BytesMut::new(),
            max,
        }
    }

    /// The next frame, as [`read_frame`] reads it: `Ok(None)` when the
    /// peer closed the connection between frames, and a length above the
    /// limit refused before its payload is read.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(prefix) = self.buf.first_chunk::<4>() {
                let len = u32::from_be_bytes(*prefix) as usize;
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
                if self.buf.len() >= 4 + len {
                    let whole = self.buf.split_to(4 + len);
                    if self.buf.is_empty() && self.buf.capacity() > 1 << 20 {
                        // Let a large frame's memory go.
                        self.buf = bytes::BytesMut::new();
                    }
                    return decode(&whole[4..]).map(Some);
                }
                // Grow with what arrives, as read_frame does.
                self.buf.reserve((4 + len - self.buf.len()).min(64 << 10));
            } else {
                self.buf.reserve(16 << 10);
            }
            if r.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// Write one encoded frame (from [`encode`]) and flush it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::ballot::{Ballot, NodeId};

    fn msg() -> Frame {
        Frame::Msg {
            group: "movies".into(),
            role: Role::Acceptor,
            msg: Message::Prepare {
                ballot: Ballot {
                    round: 3,
                    node: NodeId(1),
                },
                from_slot: 7,
                takeover: false,
            },
        }
    }

    /// The Hello names the protocol; one from a release before protocol
    /// versions reads as protocol 0, which is refused like any other.
    #[test]
    fn a_hello_names_its_protocol_and_one_without_reads_as_protocol_0() {
        let hello = Frame::Hello {
            cluster: "c".into(),
            node: "north".into(),
            protocol: PROTOCOL,
        };
        let wire = encode(&hello, MAX_HELLO_BYTES).unwrap();
        assert_eq!(decode(&wire[4..]).unwrap(), hello);
        assert_eq!(protocol_mismatch(PROTOCOL), None);

        // The old encoding: the same variant, without the protocol.
        #[derive(Serialize)]
        enum Old {
            Hello { cluster: String, node: String },
        }
        let old = postcard::to_allocvec(&Old::Hello {
            cluster: "c".into(),
            node: "north".into(),
        })
        .unwrap();
        let Ok(Frame::Hello { protocol, node, .. }) = decode(&old) else {
            panic!("an old Hello does not read as a Hello");
        };
        assert_eq!((protocol, node.as_str()), (0, "north"));
        // Anything else that fails to decode still fails.
        let mut longer = old.clone();
        longer.extend([0xff, 0xff]);
        assert!(decode(&longer).is_err());

        for theirs in [0, PROTOCOL + 1] {
            let why = protocol_mismatch(theirs).unwrap();
            assert!(
                why.contains(&format!("protocol {theirs}")) && why.contains(&PROTOCOL.to_string()),
                "{why}"
            );
        }
    }

    /// A read cancelled halfway through a frame loses nothing: the next
    /// read returns that frame whole, then the next one.
    #[tokio::test]
    async fn a_frame_reader_read_cancelled_mid_frame_loses_nothing() {
        let mut wire = encode(&msg(), MAX_FRAME_BYTES).unwrap();
        wire.extend(encode(&msg(), MAX_FRAME_BYTES).unwrap());
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(MAX_FRAME_BYTES);
        for cut in [2, 7, wire.len() / 2 + 3] {
            tx.write_all(&wire[..cut]).await.unwrap();
            let cancelled =
                tokio::time::timeout(std::time::Duration::from_millis(20), reader.next(&mut rx))
                    .await;
            if cut < wire.len() / 2 {
                assert!(cancelled.is_err(), "a frame from {cut} bytes");
            }
            tx.write_all(&wire[cut..]).await.unwrap();
            let mut got = Vec::new();
            if let Ok(first) = cancelled {
                got.push(first.unwrap());
            }
            while got.len() < 2 {
                got.push(reader.next(&mut rx).await.unwrap());
            }
            assert_eq!(got, [Some(msg()), Some(msg())], "cut at {cut}");
        }
        drop(tx);
        assert_eq!(reader.next(&mut rx).await.unwrap(), None);
        // The limit holds before the payload is read.
        let mut huge = &u32::MAX.to_be_bytes()[..];
        assert!(matches!(
            FrameReader::new(64).next(&mut huge).await,
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let hello = Frame::Hello {
            cluster: "c".into(),
            node: "north".into(),
            protocol: PROTOCOL,
        };
        let mut wire = encode(&hello, MAX_FRAME_BYTES).unwrap();
        wire.extend(encode(&msg(), MAX_FRAME_BYTES).unwrap());
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r, 64).await.unwrap(), Some(hello));
        assert_eq!(read_frame(&mut r, 64).await.unwrap(), Some(msg()));
        assert_eq!(read_frame(&mut r, 64).await.unwrap(), None);

        // Over the limit: refused when sending and when reading.
        let big = encode(&msg(), MAX_FRAME_BYTES).unwrap();
        assert!(matches!(
            encode(&msg(), 4),
            Err(FrameError::TooLarge { .. })
        ));
        let mut r = &big[..];
        assert!(matches!(
            read_frame(&mut r, 4).await,
            Err(FrameError::TooLarge { .. })
        ));
        let huge = u32::MAX.to_be_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..], MAX_FRAME_BYTES).await,
            Err(FrameError::TooLarge { .. })
        ));

        // Garbage, trailing bytes, and a cut frame are errors.
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &garbage[..], 64).await,
            Err(FrameError::Decode(_))
        ));
        let mut trailing = big.clone();
        trailing.push(0);
        let n = (trailing.len() - 4) as u32;
        trailing[..4].copy_from_slice(&n.to_be_bytes());
        assert!(matches!(
            read_frame(&mut &trailing[..], 64).await,
            Err(FrameError::Trailing(1))
        ));
        let cut = &big[..big.len() - 1];
        assert!(matches!(
            read_frame(&mut &cut[..], 64).await,
            Err(FrameError::Io(_))
        ));
    }
}
