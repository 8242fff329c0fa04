//! SSH channel and request names, and the framing of UDP datagrams over SSH.
//!
//! # Channels
//!
//! - [`DIRECT_TCPIP`] (RFC 4254 §7.2): the client asks the shadow to connect to a
//!   host and port in the cluster; bytes are spliced both ways.
//! - [`TCPIP_FORWARD`] / [`CANCEL_TCPIP_FORWARD`] global requests (RFC 4254 §7.1):
//!   the shadow listens in the pod and opens a [`FORWARDED_TCPIP`] channel back to the
//!   client for each accepted connection.
//! - [`DIRECT_UDP`] (`direct-udp@kt.dev`): the client asks the shadow to relay UDP
//!   datagrams to a host and port (DNS queries to the cluster DNS server, mainly).
//!   Data on the channel, in both directions, is a sequence of frames: a 2-byte
//!   big-endian length, then that many bytes of one datagram ([`DatagramCodec`]).
//!   The shadow sends from one UDP socket connected to the target, so replies come
//!   back on the same channel; a flow idle for [`UDP_IDLE_TIMEOUT_SECS`] is closed.
//!
//! ## How a `direct-udp@kt.dev` channel is opened
//!
//! The open payload is that of `direct-tcpip`: host to connect, port to connect,
//! originator address, originator port. Russh (0.65, the SSH library on both sides)
//! can neither open nor accept a channel type it does not know: it answers
//! `SSH_OPEN_UNKNOWN_CHANNEL_TYPE` without asking the application, and has no raw
//! channel-open call. So the channel type travels in the payload instead: a UDP
//! channel is a `direct-tcpip` channel whose **originator address is exactly
//! [`DIRECT_UDP`]** (see [`is_direct_udp`]). No real client sends that as an
//! originator address (OpenSSH sends the IP of the forwarded connection's peer), so a
//! TCP forward can never be mistaken for a UDP one. If russh gains custom channel
//! types, the same payload moves to a channel of type [`DIRECT_UDP`] and the shadow
//! accepts both.

use crate::Error;

/// `direct-tcpip`: a client-opened TCP connection from the shadow (RFC 4254 §7.2).
pub const DIRECT_TCPIP: &str = "direct-tcpip";

/// `forwarded-tcpip`: a shadow-opened channel for a connection accepted on a
/// remote-forward listener (RFC 4254 §7.2).
pub const FORWARDED_TCPIP: &str = "forwarded-tcpip";

/// `tcpip-forward`: global request asking the shadow to listen (RFC 4254 §7.1).
pub const TCPIP_FORWARD: &str = "tcpip-forward";

/// `cancel-tcpip-forward`: global request closing a listener (RFC 4254 §7.1).
pub const CANCEL_TCPIP_FORWARD: &str = "cancel-tcpip-forward";

/// `direct-udp@kt.dev`: a client-opened UDP flow relayed by the shadow, datagrams
/// framed by [`DatagramCodec`]. Opened as described in the [module docs](self).
pub const DIRECT_UDP: &str = "direct-udp@kt.dev";

/// A UDP flow with no datagram in either direction for this long is closed by the
/// shadow (the channel is closed; the client opens a new one when it needs to).
pub const UDP_IDLE_TIMEOUT_SECS: u64 = 60;

/// Whether a `direct-tcpip` open with this originator address asks for a
/// `direct-udp@kt.dev` flow (see the [module docs](self)).
pub fn is_direct_udp(originator_address: &str) -> bool {
    originator_address == DIRECT_UDP
}

/// Length of a frame header: a big-endian `u16` giving the datagram's length.
pub const DATAGRAM_HEADER_LEN: usize = 2;

/// The largest datagram a 2-byte header can describe.
pub const MAX_DATAGRAM_LEN: usize = u16::MAX as usize;

/// The default datagram limit: the largest UDP payload over IPv4
/// (65535 − 20-byte IP header − 8-byte UDP header).
pub const DEFAULT_MAX_DATAGRAM_LEN: usize = 65_507;

/// Encodes and decodes the frames of a `direct-udp@kt.dev` channel: a 2-byte
/// big-endian length, then the datagram. Pure; keeps no state (see
/// [`DatagramReader`] for reassembly across reads).
///
/// A zero-length datagram is legal (UDP allows it). A length above the codec's limit
/// is refused on both encode and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramCodec {
    max_len: usize,
}

/// The result of [`DatagramCodec::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame was at the start of the input.
    Datagram {
        /// The datagram (borrowed from the input).
        payload: &'a [u8],
        /// Bytes of input the frame took (header and payload); the next frame starts there.
        consumed: usize,
    },
    /// The input holds only part of a frame.
    NeedMore {
        /// How many more bytes must be appended to the input before decoding can
        /// make progress (the rest of the header, or the rest of the payload). At least 1.
        additional: usize,
    },
}

impl Default for DatagramCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl DatagramCodec {
    /// A codec with the [`DEFAULT_MAX_DATAGRAM_LEN`] limit.
    pub const fn new() -> Self {
        DatagramCodec {
            max_len: DEFAULT_MAX_DATAGRAM_LEN,
        }
    }

    /// A codec refusing datagrams longer than `max_len` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDatagramLimit`] unless `1 <= max_len <= 65535`.
    pub const fn with_max_len(max_len: usize) -> Result<Self, Error> {
        if max_len == 0 || max_len > MAX_DATAGRAM_LEN {
            return Err(Error::InvalidDatagramLimit(max_len));
        }
        Ok(DatagramCodec { max_len })
    }

    /// The longest datagram this codec accepts.
    pub const fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends one frame holding `payload` to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::DatagramTooLarge`] if `payload` is longer than [`Self::max_len`];
    /// `out` is then unchanged.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let len = self.check_len(payload.len())?;
        out.reserve(DATAGRAM_HEADER_LEN + payload.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The frame header for a datagram of `len` bytes, for callers that write the
    /// header and the payload separately (no copy of the payload).
    ///
    /// # Errors
    ///
    /// [`Error::DatagramTooLarge`] if `len` is more than [`Self::max_len`].
    pub fn header(&self, len: usize) -> Result<[u8; DATAGRAM_HEADER_LEN], Error> {
        self.check_len(len).map(u16::to_be_bytes)
    }

    /// Decodes the frame at the start of `input`.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] if the header announces more than [`Self::max_len`]
    /// bytes. The stream cannot be resynchronised after that: close the channel.
    pub fn decode<'a>(&self, input: &'a [u8]) -> Result<Decoded<'a>, Error> {
        let Some((header, rest)) = input.split_first_chunk::<DATAGRAM_HEADER_LEN>() else {
            return Ok(Decoded::NeedMore {
                additional: DATAGRAM_HEADER_LEN - input.len(),
            });
        };
        let len = usize::from(u16::from_be_bytes(*header));
        if len > self.max_len {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_len,
            });
        }
        match rest.get(..len) {
            Some(payload) => Ok(Decoded::Datagram {
                payload,
                consumed: DATAGRAM_HEADER_LEN + len,
            }),
            None => Ok(Decoded::NeedMore {
                additional: len - rest.len(),
            }),
        }
    }

    fn check_len(&self, len: usize) -> Result<u16, Error> {
        match u16::try_from(len) {
            Ok(short) if len <= self.max_len => Ok(short),
            _ => Err(Error::DatagramTooLarge {
                len,
                max: self.max_len,
            }),
        }
    }
}

/// Reassembles datagrams from channel data that arrives in arbitrary pieces (SSH data
/// messages need not line up with frames).
///
/// Memory stays bounded as long as the caller drains [`DatagramReader::next_datagram`]
/// after each [`DatagramReader::push`]: what is kept between pushes is at most one
/// partial frame (`2 + max_len` bytes).
#[derive(Debug, Clone)]
pub struct DatagramReader {
    codec: DatagramCodec,
    buf: Vec<u8>,
    start: usize,
    /// The length announced by the frame that broke the stream, once one did.
    failed: Option<usize>,
}

impl DatagramReader {
    /// A reader decoding with `codec`.
    pub fn new(codec: DatagramCodec) -> Self {
        DatagramReader {
            codec,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Appends channel data.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole datagram, or `None` until more data is pushed.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] if a frame announces more than the codec's limit. The
    /// reader then stays failed: every later call returns the same error kind.
    pub fn next_datagram(&mut self) -> Result<Option<&[u8]>, Error> {
        if let Some(len) = self.failed {
            return Err(Error::FrameTooLarge {
                len,
                max: self.codec.max_len,
            });
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match self.codec.decode(pending) {
            Ok(Decoded::Datagram { payload, consumed }) => {
                self.start += consumed;
                Ok(Some(payload))
            }
            Ok(Decoded::NeedMore { .. }) => Ok(None),
            Err(err) => {
                if let Error::FrameTooLarge { len, .. } = err {
                    self.failed = Some(len);
                }
                Err(err)
            }
        }
    }

    /// Bytes pushed but not yet returned as datagrams.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let codec = DatagramCodec::new();
        let mut out = Vec::new();
        for p in payloads {
            assert!(codec.encode(p, &mut out).is_ok());
        }
        out
    }

    #[test]
    fn a_frame_is_a_big_endian_length_then_the_payload() {
        assert_eq!(frames(&[b"abc"]), [0, 3, b'a', b'b', b'c']);
        assert_eq!(frames(&[b""]), [0, 0]);
        let big = vec![7u8; 300];
        let wire = frames(&[&big]);
        assert_eq!(&wire[..2], &[1, 44]);
        assert_eq!(wire.len(), 302);
    }

    #[test]
    fn decode_reports_how_many_more_bytes_it_needs() {
        let codec = DatagramCodec::new();
        let wire = frames(&[b"hello"]);
        assert_eq!(
            codec.decode(&[]).ok(),
            Some(Decoded::NeedMore { additional: 2 })
        );
        assert_eq!(
            codec.decode(&wire[..1]).ok(),
            Some(Decoded::NeedMore { additional: 1 })
        );
        assert_eq!(
            codec.decode(&wire[..2]).ok(),
            Some(Decoded::NeedMore { additional: 5 })
        );
        assert_eq!(
            codec.decode(&wire[..6]).ok(),
            Some(Decoded::NeedMore { additional: 1 })
        );
        assert_eq!(
            codec.decode(&wire).ok(),
            Some(Decoded::Datagram {
                payload: b"hello",
                consumed: 7
            })
        );
    }

    #[test]
    fn decode_takes_only_the_first_frame() {
        let codec = DatagramCodec::new();
        let wire = frames(&[b"one", b"two"]);
        assert_eq!(
            codec.decode(&wire).ok(),
            Some(Decoded::Datagram {
                payload: b"one",
                consumed: 5
            })
        );
        assert_eq!(
            codec.decode(&wire[5..]).ok(),
            Some(Decoded::Datagram {
                payload: b"two",
                consumed: 5
            })
        );
    }

    #[test]
    fn lengths_over_the_limit_are_refused_both_ways() {
        let codec = DatagramCodec::with_max_len(4).unwrap_or_default();
        let mut out = vec![9];
        let err = codec.encode(b"12345", &mut out).err();
        assert!(matches!(
            err,
            Some(Error::DatagramTooLarge { len: 5, max: 4 })
        ));
        assert_eq!(out, [9], "a refused encode leaves the output alone");
        assert!(codec.encode(b"1234", &mut out).is_ok());

        let err = codec.decode(&[0, 5, 1, 2, 3, 4, 5]).err();
        assert!(matches!(err, Some(Error::FrameTooLarge { len: 5, max: 4 })));
        // Refused as soon as the header is known, before the payload arrives.
        let err = codec.decode(&[0xff, 0xff]).err();
        assert!(matches!(err, Some(Error::FrameTooLarge { len: 65535, .. })));
    }

    #[test]
    fn the_default_limit_is_the_largest_ipv4_udp_payload() {
        let codec = DatagramCodec::new();
        assert_eq!(codec.max_len(), 65_507);
        let mut out = Vec::new();
        assert!(codec.encode(&vec![0; 65_507], &mut out).is_ok());
        assert!(codec.encode(&vec![0; 65_508], &mut out).is_err());
        assert!(codec.header(70_000).is_err());
        assert_eq!(codec.header(258).ok(), Some([1, 2]));
    }

    #[test]
    fn limits_outside_the_header_range_are_refused() {
        assert!(DatagramCodec::with_max_len(0).is_err());
        assert!(DatagramCodec::with_max_len(65_536).is_err());
        let full = DatagramCodec::with_max_len(65_535).ok();
        assert_eq!(full.map(|c| c.max_len()), Some(65_535));
    }

    #[test]
    fn reader_reassembles_frames_split_at_every_byte() {
        let payloads: [&[u8]; 4] = [b"a", b"", b"dns query bytes", &[0u8; 1000]];
        let wire = frames(&payloads);
        let mut reader = DatagramReader::new(DatagramCodec::new());
        let mut got: Vec<Vec<u8>> = Vec::new();
        for byte in &wire {
            reader.push(std::slice::from_ref(byte));
            while let Ok(Some(d)) = reader.next_datagram() {
                got.push(d.to_vec());
            }
        }
        let want: Vec<Vec<u8>> = payloads.iter().map(|p| p.to_vec()).collect();
        assert_eq!(got, want);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn reader_keeps_at_most_one_partial_frame() {
        let mut reader = DatagramReader::new(DatagramCodec::new());
        let wire = frames(&[&[1u8; 500], &[2u8; 500]]);
        for chunk in wire.chunks(333) {
            reader.push(chunk);
            while let Ok(Some(_)) = reader.next_datagram() {}
            assert!(reader.buffered() <= 502);
        }
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn reader_stays_failed_after_a_bad_frame() {
        let codec = DatagramCodec::with_max_len(10).unwrap_or_default();
        let mut reader = DatagramReader::new(codec);
        reader.push(&[0, 11]);
        assert!(reader.next_datagram().is_err());
        reader.push(&[0, 1, 2]);
        let err = reader.next_datagram().err();
        assert!(
            matches!(err, Some(Error::FrameTooLarge { len: 11, max: 10 })),
            "{err:?}"
        );
    }

    #[test]
    fn udp_is_marked_by_the_originator_address() {
        assert!(is_direct_udp("direct-udp@kt.dev"));
        assert!(!is_direct_udp("127.0.0.1"));
        assert!(!is_direct_udp("DIRECT-UDP@KT.DEV"));
        assert_eq!(DIRECT_TCPIP, "direct-tcpip");
        assert_eq!(FORWARDED_TCPIP, "forwarded-tcpip");
        assert_eq!(TCPIP_FORWARD, "tcpip-forward");
        assert_eq!(CANCEL_TCPIP_FORWARD, "cancel-tcpip-forward");
    }
}
