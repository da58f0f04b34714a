//! The mesh wire format: a frame is a `u32` big-endian length, then that
//! many bytes of postcard encoding one [`Frame`].
//!
//! postcard is not self-describing: the variant order of [`Frame`] (and
//! of the Paxos messages it carries) is the wire protocol. Append new
//! variants at the end; never reorder.

use crate::paxos::message::{Message, Role};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default largest frame a node sends or accepts: 16 MiB.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Frames carry nothing but a Hello before the peer is known, so the
/// first frame is held to this size whatever the configured maximum.
pub const MAX_HELLO_BYTES: usize = 1024;

/// One unit on a mesh connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame each way: who the sender says it is. The receiver
    /// believes only what its certificate proves; this must agree.
    Hello { cluster: String, node: String },
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
    let (frame, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(frame)
}

/// Read one frame. `Ok(None)`: the peer closed the connection cleanly
/// between frames. A length above `max` is an error before any of the
/// payload is read or allocated.
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

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let hello = Frame::Hello {
            cluster: "c".into(),
            node: "north".into(),
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
