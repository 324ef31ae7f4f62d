//! The sans-IO wire codec (SPEC §3): bytes in, frames out. No sockets, no clocks.
//!
//! A frame is the 16-byte binary header, the text header bytes and the body bytes,
//! big-endian throughout. [`FrameHeader`] encodes the 16 header bytes; the text
//! headers and body are handed to the writer as borrowed slices
//! ([`frame_slices`]), so bodies are never copied on the way out. [`Decoder`] takes
//! whatever bytes arrived — half a header or fifty frames — and yields complete
//! messages, validating each header as soon as it is complete.

use std::io::IoSlice;

use crate::error::{Error, Status};
use crate::message::{BinaryHeader, Message, More, OpCode, Origin, ProtoFields};

/// The size of the binary header on the wire.
pub const HEADER_LEN: usize = 16;

const OPCODE_MASK: u8 = 0x0f;
const ORIGIN_BIT: u8 = 0x10;
const MORE_BIT: u8 = 0x20;

/// Why a received frame is invalid (SPEC §3). Every variant closes the channel
/// with [`Status::InvalidMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Opcode 10–15.
    #[error("invalid opcode {0}")]
    InvalidOpCode(u8),
    /// WelcomeRequest or WelcomeResponse never travel.
    #[error("opcode {0:?} never travels on the wire")]
    LocalOnly(OpCode),
    /// `more` set on a message that is not Request, Response or Signal.
    #[error("`more` set on {0:?}")]
    InvalidMore(OpCode),
}

impl FrameError {
    /// The status a channel closes with because of this frame.
    pub fn status(self) -> Status {
        Status::InvalidMessage
    }
}

/// Whether a frame with this opcode may arrive from a peer: everything that
/// [travels](OpCode::travels), and ByeSignal, which this engine never sends
/// but the original tofu does (its peer's abort, SPEC §3).
pub fn may_arrive(opcode: OpCode) -> bool {
    opcode.travels() || opcode == OpCode::ByeSignal
}

/// The decoded fixed part of a frame: the binary header plus the two lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The binary header fields.
    pub header: BinaryHeader,
    /// Length of the text headers that follow.
    pub text_len: u16,
    /// Length of the body that follows the text headers.
    pub body_len: u16,
}

impl FrameHeader {
    /// The frame header for `msg`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidHeadersLen`] / [`Error::InvalidBodyLen`] when a section is
    /// longer than 65535 bytes.
    pub fn for_message(msg: &Message) -> Result<FrameHeader, Error> {
        let text_len =
            u16::try_from(msg.text_headers.byte_len()).map_err(|_| Error::InvalidHeadersLen)?;
        let body_len = u16::try_from(msg.body.len()).map_err(|_| Error::InvalidBodyLen)?;
        Ok(FrameHeader {
            header: msg.header,
            text_len,
            body_len,
        })
    }

    /// The 16 bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let h = &self.header;
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&h.channel_number.to_be_bytes());
        out[2] = h.proto.opcode.raw()
            | if h.proto.origin == Origin::Engine {
                ORIGIN_BIT
            } else {
                0
            }
            | if h.proto.more == More::More {
                MORE_BIT
            } else {
                0
            };
        out[3] = h.status;
        out[4..12].copy_from_slice(&h.message_id.to_be_bytes());
        out[12..14].copy_from_slice(&self.text_len.to_be_bytes());
        out[14..16].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }

    /// Parses and validates 16 header bytes.
    ///
    /// # Errors
    ///
    /// A [`FrameError`] for an invalid opcode, a local-only opcode
    /// (WelcomeRequest, WelcomeResponse), or `more` on a non-regular message.
    /// A ByeSignal is valid: the original tofu writes one when its application
    /// rejects a HelloRequest or aborts a channel (SPEC §3). Bits 6–7 of the
    /// proto byte are engine-internal and ignored.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let proto = bytes[2];
        let raw_op = proto & OPCODE_MASK;
        let opcode = OpCode::from_raw(raw_op).ok_or(FrameError::InvalidOpCode(raw_op))?;
        if !may_arrive(opcode) {
            return Err(FrameError::LocalOnly(opcode));
        }
        let more = if proto & MORE_BIT != 0 {
            More::More
        } else {
            More::Last
        };
        if more == More::More && !opcode.is_regular() {
            return Err(FrameError::InvalidMore(opcode));
        }
        let origin = if proto & ORIGIN_BIT != 0 {
            Origin::Engine
        } else {
            Origin::Application
        };
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[4..12]);
        Ok(FrameHeader {
            header: BinaryHeader {
                channel_number: u16_at(0),
                proto: ProtoFields {
                    opcode,
                    origin,
                    more,
                },
                status: bytes[3],
                message_id: u64::from_be_bytes(id),
            },
            text_len: u16_at(12),
            body_len: u16_at(14),
        })
    }

    /// Total frame length in bytes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.text_len as usize + self.body_len as usize
    }
}

/// The (up to three) slices of one frame starting `offset` bytes into it, for a
/// vectored write: header bytes, text headers, body. Empty parts are skipped.
///
/// `out` is anything that collects slices: a `Vec`, or the engine's fixed-size
/// vectored-write buffer. This is the only place a frame is sliced.
pub fn frame_slices<'a>(
    header: &'a [u8; HEADER_LEN],
    msg: &'a Message,
    offset: usize,
    out: &mut impl Extend<IoSlice<'a>>,
) {
    let parts: [&'a [u8]; 3] = [header, msg.text_headers.as_bytes(), &msg.body];
    let mut skip = offset;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        out.extend(std::iter::once(IoSlice::new(&part[skip..])));
        skip = 0;
    }
}

/// Appends the whole frame for `msg` to `out` (a copying convenience for tests and
/// tools; the engine writes with [`frame_slices`]).
///
/// # Errors
///
/// As [`FrameHeader::for_message`].
pub fn encode_to_vec(msg: &Message, out: &mut Vec<u8>) -> Result<(), Error> {
    let fh = FrameHeader::for_message(msg)?;
    out.reserve(fh.frame_len());
    out.extend_from_slice(&fh.encode());
    out.extend_from_slice(msg.text_headers.as_bytes());
    out.extend_from_slice(&msg.body);
    Ok(())
}

/// Fills `msg` in place with the whole frame at the front of `input`, whose
/// header is `fh` (from [`Decoder::whole_frame_ahead`]), and consumes it.
/// The message's buffers keep their capacity.
pub(crate) fn fill_whole(fh: &FrameHeader, input: &mut &[u8], msg: &mut Message) {
    let text_len = fh.text_len as usize;
    let text_bytes = &input[HEADER_LEN..HEADER_LEN + text_len];
    let body_bytes = &input[HEADER_LEN + text_len..fh.frame_len()];
    msg.header = fh.header;
    if text_len > 0 || !msg.text_headers.is_empty() {
        let mut text = msg.text_headers.take_buf();
        text.clear();
        text.extend_from_slice(text_bytes);
        msg.text_headers = crate::message::TextHeaders::from_buf(text);
    }
    msg.body.clear();
    msg.body.extend_from_slice(body_bytes);
    *input = &input[fh.frame_len()..];
}

/// One step of [`Decoder::decode`].
#[derive(Debug)]
pub enum Decoded {
    /// A complete, valid frame. Its channel number and origin are as on the wire.
    Frame(Message),
    /// All input was consumed; more bytes are needed.
    NeedBytes,
    /// A header is complete but the allocator had no message; call again (with
    /// the remaining input) once one is available.
    NeedMessage,
}

struct Partial {
    /// Its body is `body_len` long from the start; the first `body_filled`
    /// bytes have arrived.
    msg: Message,
    text: Vec<u8>,
    text_len: usize,
    body_len: usize,
    body_filled: usize,
}

/// Incremental frame decoder: feed it bytes as they arrive.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "unstable")] { // `tofu::wire` is public only with `unstable`
/// use tofu::wire::{Decoded, Decoder};
/// use tofu::Message;
///
/// let frame = [0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 4, b'p', b'i', b'n', b'g'];
/// let mut dec = Decoder::new();
/// let mut input = &frame[..10]; // half a header
/// assert!(matches!(dec.decode(&mut input, &mut || Some(Message::new())), Ok(Decoded::NeedBytes)));
/// let mut input = &frame[10..];
/// let Ok(Decoded::Frame(msg)) = dec.decode(&mut input, &mut || Some(Message::new())) else { panic!() };
/// assert_eq!((msg.header.channel_number, msg.header.message_id), (0x1234, 7));
/// assert_eq!(msg.body, b"ping");
/// # }
/// ```
#[derive(Default)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    header_len: usize,
    pending: Option<FrameHeader>,
    partial: Option<Partial>,
}

/// Shows where the decoder is in the current frame; never the buffered bytes.
impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Decoder");
        d.field("header_len", &self.header_len)
            .field("pending", &self.pending);
        if let Some(p) = &self.partial {
            d.field("text", &format_args!("{}/{}", p.text.len(), p.text_len))
                .field("body", &format_args!("{}/{}", p.body_filled, p.body_len));
        }
        d.finish()
    }
}

impl Decoder {
    /// A decoder at a frame boundary.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// `true` at a frame boundary (no partial frame buffered).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.partial.is_none() && self.pending.is_none()
    }

    /// `true` when a complete header waits for a message ([`Decoded::NeedMessage`]
    /// was returned): call [`Decoder::decode`] again, even with no new input.
    pub fn needs_message(&self) -> bool {
        self.pending.is_some()
    }

    /// With a complete header waiting for a message: the bytes of that frame
    /// still to come (text headers and body).
    pub fn pending_len(&self) -> Option<usize> {
        self.pending.map(|fh| fh.frame_len() - HEADER_LEN)
    }

    /// `true` while a frame's message is being filled (its header was complete
    /// and a message was allocated for it).
    pub fn has_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Consumes bytes from the front of `input` until one frame is complete, the
    /// input is exhausted, or a message is needed and `alloc` has none.
    ///
    /// `alloc` is asked for a message only when a header is complete and valid;
    /// the message is filled in place (its buffers' capacity is reused).
    ///
    /// # Errors
    ///
    /// A [`FrameError`] for an invalid frame. The decoder is then unusable: the
    /// stream has lost its framing and the channel must be closed.
    pub fn decode<A: FnMut() -> Option<Message> + ?Sized>(
        &mut self,
        input: &mut &[u8],
        alloc: &mut A,
    ) -> Result<Decoded, FrameError> {
        if let Some(fh) = self.whole_frame_ahead(input)? {
            // The common case: a whole frame at a boundary, decoded from
            // the input at once (no header copy, no partial state).
            let Some(mut msg) = alloc() else {
                self.hold(fh, input);
                return Ok(Decoded::NeedMessage);
            };
            fill_whole(&fh, input, &mut msg);
            return Ok(Decoded::Frame(msg));
        }
        if self.partial.is_none() {
            if self.pending.is_none() {
                let want = HEADER_LEN - self.header_len;
                let n = want.min(input.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
                self.header_len += n;
                *input = &input[n..];
                if self.header_len < HEADER_LEN {
                    return Ok(Decoded::NeedBytes);
                }
                self.pending = Some(FrameHeader::decode(&self.header)?);
            }
            let Some(mut msg) = alloc() else {
                return Ok(Decoded::NeedMessage);
            };
            let fh = self.pending.take().expect("pending header");
            self.header_len = 0;
            msg.header = fh.header;
            let mut text = msg.text_headers.take_buf();
            text.clear();
            text.reserve(fh.text_len as usize);
            // The body gets its full length now, so that the socket can
            // fill it in place ([`Decoder::body_space`]). A recycled
            // message whose body was as long already costs nothing here:
            // `resize` only writes the bytes past the old length.
            msg.body.resize(fh.body_len as usize, 0);
            self.partial = Some(Partial {
                msg,
                text,
                text_len: fh.text_len as usize,
                body_len: fh.body_len as usize,
                body_filled: 0,
            });
        }
        let p = self.partial.as_mut().expect("partial frame");
        if p.text.len() < p.text_len {
            let n = (p.text_len - p.text.len()).min(input.len());
            p.text.extend_from_slice(&input[..n]);
            *input = &input[n..];
        }
        if p.text.len() == p.text_len && p.body_filled < p.body_len {
            let n = (p.body_len - p.body_filled).min(input.len());
            p.msg.body[p.body_filled..p.body_filled + n].copy_from_slice(&input[..n]);
            p.body_filled += n;
            *input = &input[n..];
        }
        if p.text.len() < p.text_len || p.body_filled < p.body_len {
            return Ok(Decoded::NeedBytes);
        }
        Ok(Decoded::Frame(self.finish()))
    }

    /// The frame being filled is complete: its message.
    fn finish(&mut self) -> Message {
        let Partial { mut msg, text, .. } = self.partial.take().expect("partial frame");
        // Kept byte for byte, whatever they hold (SPEC §2.3): the original
        // checks nothing, and echoes them as they are.
        msg.text_headers = crate::message::TextHeaders::from_buf(text);
        msg
    }

    /// At a frame boundary with a whole frame at the front of `input`: its
    /// header (checked). `None` otherwise (nothing consumed). The frame is
    /// then decoded with [`fill_whole`], or its header held back with
    /// [`hold`](Self::hold) when there is no message for it.
    pub(crate) fn whole_frame_ahead(
        &self,
        input: &[u8],
    ) -> Result<Option<FrameHeader>, FrameError> {
        if !self.is_idle() || input.len() < HEADER_LEN {
            return Ok(None);
        }
        let bytes: &[u8; HEADER_LEN] = input[..HEADER_LEN].try_into().expect("HEADER_LEN bytes");
        let fh = FrameHeader::decode(bytes)?;
        Ok((input.len() >= fh.frame_len()).then_some(fh))
    }

    /// The header `fh` at the front of `input` (from
    /// [`whole_frame_ahead`](Self::whole_frame_ahead)) waits for a message:
    /// it is consumed and kept, as [`Decoded::NeedMessage`] says.
    pub(crate) fn hold(&mut self, fh: FrameHeader, input: &mut &[u8]) {
        self.header.copy_from_slice(&input[..HEADER_LEN]);
        self.header_len = HEADER_LEN;
        self.pending = Some(fh);
        *input = &input[HEADER_LEN..];
    }

    /// The body bytes still missing from the frame being decoded, when it is in
    /// its body part; lets a reader fill a large body straight from the socket.
    pub fn body_remaining(&self) -> usize {
        match &self.partial {
            Some(p) if p.text.len() == p.text_len => p.body_len - p.body_filled,
            _ => 0,
        }
    }

    /// The body length of the frame being filled (its header was complete
    /// and it has its message); `None` between frames.
    pub fn body_len(&self) -> Option<usize> {
        self.partial.as_ref().map(|p| p.body_len)
    }

    /// The missing part of the body being decoded ([`body_remaining`] bytes,
    /// empty outside a body): a reader fills it straight from the socket,
    /// with no copy, and reports how much with [`Decoder::body_filled`].
    ///
    /// [`body_remaining`]: Decoder::body_remaining
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "unstable")] { // `tofu::wire` is public only with `unstable`
    /// use tofu::wire::{Decoded, Decoder};
    /// use tofu::Message;
    ///
    /// let frame = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 4, b'p', b'i', b'n', b'g'];
    /// let mut dec = Decoder::new();
    /// let mut input = &frame[..17]; // the header and one body byte
    /// assert!(matches!(dec.decode(&mut input, &mut || Some(Message::new())), Ok(Decoded::NeedBytes)));
    /// let space = dec.body_space();
    /// space.copy_from_slice(&frame[17..]); // as a socket read would
    /// let msg = dec.body_filled(3).expect("complete");
    /// assert_eq!(msg.body, b"ping");
    /// # }
    /// ```
    pub fn body_space(&mut self) -> &mut [u8] {
        match &mut self.partial {
            Some(p) if p.text.len() == p.text_len => &mut p.msg.body[p.body_filled..p.body_len],
            _ => &mut [],
        }
    }

    /// `n` bytes of [`body_space`](Decoder::body_space) were filled (more
    /// than it holds count as all of it): the message when that completed
    /// the frame.
    pub fn body_filled(&mut self, n: usize) -> Option<Message> {
        let p = self.partial.as_mut()?;
        if p.text.len() < p.text_len {
            return None;
        }
        p.body_filled = (p.body_filled + n).min(p.body_len);
        (p.body_filled == p.body_len).then(|| self.finish())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
