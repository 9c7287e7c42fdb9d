//! zstd stream codec for uftpd: an extension beyond UFTPD 3.x, negotiated
//! with `compress=zstd` in the transfer request (the session's FEAT then
//! lists `COMPRESS zstd`; see the protocol book, "Extensions").
//!
//! Wire format: each TCP stream of the data channel carries exactly ONE
//! zstd frame (RFC 8878) that starts when the stream opens and ends when
//! the encoder is [finished](codec_api::EncodeWriter::finish). The frame
//! has the content checksum (XXH64, low 4 bytes) and no content size (the
//! encoder does not know it in advance). Nothing precedes or follows the
//! frame. The layer sits inside the encryption (if any) and outside the
//! multi-stream framing, like gzip.
//!
//! * `flush` ends the current zstd block (`ZSTD_e_flush`) so that the peer
//!   can decode everything written so far, then flushes the inner writer;
//!   the data channel relies on this to keep multi-stream readers moving.
//! * The decoder requires the complete frame: a stream that ends before the
//!   frame's last block and checksum (or carries no bytes at all) is an
//!   [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) error; corrupt
//!   data, a wrong checksum, a second frame, a skippable frame or any byte
//!   after the frame is [`InvalidData`](std::io::ErrorKind::InvalidData).
//! * The decoder refuses frames whose window exceeds 8 MiB
//!   ([`MAX_WINDOW_LOG`]), so a peer cannot make it allocate more; every
//!   level up to 19 stays within that.
//!
//! Options: `level` = [`MIN_LEVEL`]..=[`MAX_LEVEL`] (negative levels are
//! zstd's fast modes), default [`DEFAULT_LEVEL`] (1); `threads` =
//! 1..=[`codec_api::MAX_THREADS`] (64), how many threads compress ONE
//! stream (zstd's own multi-threaded mode, still one frame; default
//! [`codec_api::default_threads`]: the machine's cores, at most 4). With
//! one thread the caller compresses.
//!
//! ```
//! use std::io::{Read, Write};
//! use codec_api::{CodecParams, PlainSink};
//! use uftpd_zstd as _; // link the plugin so that its registration is seen
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let zstd = codec_api::codec("zstd")?;
//! let params = CodecParams::new().with_option("level", "3");
//! let mut wire = Vec::new();
//! let mut enc = zstd.encoder(&params, Box::new(PlainSink::new(&mut wire)))?;
//! enc.write_all(&[b'x'; 10_000])?;
//! enc.finish()?;
//! assert!(wire.len() < 100 && wire.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
//!
//! let mut out = Vec::new();
//! zstd.decoder(&params, Box::new(&wire[..]))?.read_to_end(&mut out)?;
//! assert_eq!(out, vec![b'x'; 10_000]);
//!
//! // A stream cut before the end of its frame is an error, not a short file.
//! let cut = &wire[..wire.len() - 4];
//! let err = zstd.decoder(&params, Box::new(cut))?.read_to_end(&mut Vec::new()).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
//! # Ok(()) }
//! ```

use std::io::{self, Read, Write};

use codec_api::{CodecDescriptor, CodecError, CodecKind, CodecParams, EncodeWriter, StreamCodec};
use zstd::stream::raw::{DParameter, InBuffer, Operation, OutBuffer};

/// Registered name of this codec (and the `compress=` value that selects it).
pub const NAME: &str = "zstd";

/// Compression level used when the `level` option is absent.
pub const DEFAULT_LEVEL: i32 = 1;

/// Lowest accepted level (zstd's fastest mode).
pub const MIN_LEVEL: i32 = -7;

/// Highest accepted level: above 19 zstd uses windows larger than the
/// decoder accepts ([`MAX_WINDOW_LOG`]).
pub const MAX_LEVEL: i32 = 19;

/// The decoder refuses frames with a window larger than `2^MAX_WINDOW_LOG`
/// bytes (8 MiB), which bounds its memory per stream.
pub const MAX_WINDOW_LOG: u32 = 23;

/// Size of the decoder's input buffer (zstd's recommended block input).
const IN_BUF: usize = 128 * 1024;

/// The zstd codec (a stateless factory).
#[derive(Debug, Clone, Copy, Default)]
pub struct Zstd;

fn new_codec() -> Box<dyn StreamCodec> {
    Box::new(Zstd)
}

const fn descriptor() -> CodecDescriptor {
    CodecDescriptor::new(
        NAME,
        CodecKind::Compression,
        env!("CARGO_PKG_VERSION"),
        "zstd (RFC 8878), one checksummed frame per TCP stream (extension)",
        new_codec,
    )
}

/// The registration record of this codec (the same one is submitted to the
/// `codec-api` registry; referencing this static also keeps the crate
/// linked).
pub static DESCRIPTOR: CodecDescriptor = descriptor();

inventory::submit!(descriptor());

/// Reads the `threads` option (1..=[`codec_api::MAX_THREADS`], default
/// [`codec_api::default_threads`]).
pub fn threads(params: &CodecParams) -> Result<u32, CodecError> {
    // at most 64: the conversion cannot fail
    params
        .threads_option(NAME)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Reads the `level` option ([`MIN_LEVEL`]..=[`MAX_LEVEL`], default
/// [`DEFAULT_LEVEL`]).
pub fn level(params: &CodecParams) -> Result<i32, CodecError> {
    params.int_option(NAME, "level", MIN_LEVEL..=MAX_LEVEL, DEFAULT_LEVEL)
}

fn setup_error(e: io::Error) -> CodecError {
    CodecError::Io(io::Error::other(format!("zstd: {e}")))
}

impl StreamCodec for Zstd {
    fn name(&self) -> &'static str {
        NAME
    }

    fn kind(&self) -> CodecKind {
        CodecKind::Compression
    }

    fn validate(&self, params: &CodecParams) -> Result<(), CodecError> {
        level(params)?;
        threads(params).map(|_| ())
    }

    fn encoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn EncodeWriter + 'a>,
    ) -> Result<Box<dyn EncodeWriter + 'a>, CodecError> {
        let level = level(params)?;
        let mut enc = zstd::stream::write::Encoder::new(inner, level).map_err(setup_error)?;
        enc.include_checksum(true).map_err(setup_error)?;
        match threads(params)? {
            1 => {}
            // zstd's workers: jobs of the one frame compressed in parallel
            // (and off the caller's thread). The threads start with the
            // first write; if they cannot be started, that write fails.
            n => enc.multithread(n).map_err(setup_error)?,
        }
        Ok(Box::new(ZstdWriter { inner: enc }))
    }

    fn decoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
        self.validate(params)?;
        Ok(Box::new(ZstdReader::new(inner)?))
    }
}

/// Encoder: one zstd frame over the inner writer.
struct ZstdWriter<'a> {
    inner: zstd::stream::write::Encoder<'static, Box<dyn EncodeWriter + 'a>>,
}

impl Write for ZstdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // ZSTD_e_flush: the current block is completed and written out,
        // then the inner writer is flushed. The frame stays open.
        self.inner.flush()
    }
}

impl EncodeWriter for ZstdWriter<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let inner = self.inner.finish()?;
        inner.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside the frame (or before its first byte).
    Frame,
    /// The frame is complete and all its data handed out; what is left to
    /// check is that nothing follows it.
    FrameDone,
    /// Verified end of the stream.
    Done,
}

/// Decoder: exactly one zstd frame, complete, and nothing after it.
struct ZstdReader<'a> {
    inner: Box<dyn Read + Send + 'a>,
    dec: zstd::stream::raw::Decoder<'static>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Bytes taken from the inner reader (to tell "no stream at all").
    seen: u64,
    state: State,
}

fn corrupt(e: io::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd stream: {e}"))
}

impl<'a> ZstdReader<'a> {
    fn new(inner: Box<dyn Read + Send + 'a>) -> Result<Self, CodecError> {
        let mut dec = zstd::stream::raw::Decoder::new().map_err(setup_error)?;
        dec.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(setup_error)?;
        Ok(ZstdReader {
            inner,
            dec,
            buf: vec![0; IN_BUF],
            pos: 0,
            len: 0,
            seen: 0,
            state: State::Frame,
        })
    }

    /// Reads more input; `Ok(false)` at the end of the inner stream.
    fn refill(&mut self) -> io::Result<bool> {
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                    self.seen += n as u64;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// After the frame: the stream must end here.
    fn check_end(&mut self) -> io::Result<()> {
        if self.pos < self.len || self.refill()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "zstd stream: data after the end of the frame",
            ));
        }
        self.state = State::Done;
        Ok(())
    }
}

impl Read for ZstdReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::FrameDone => {
                    self.check_end()?;
                    return Ok(0);
                }
                State::Frame => {}
            }
            if out.is_empty() {
                return Ok(0);
            }
            let mut input = InBuffer::around(&self.buf[self.pos..self.len]);
            let mut output = OutBuffer::around(&mut *out);
            let hint = self.dec.run(&mut input, &mut output).map_err(corrupt)?;
            let consumed = input.pos();
            let produced = output.pos();
            self.pos += consumed;
            if hint == 0 {
                // The frame is complete (checksum verified) and fully
                // flushed into `out`.
                self.state = State::FrameDone;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if self.state == State::FrameDone {
                continue;
            }
            if consumed == 0 && self.pos < self.len {
                // zstd always makes progress when it has input and room
                // for output; never spin if it does not.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zstd stream: decoder made no progress",
                ));
            }
            if self.pos == self.len && !self.refill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.seen == 0 {
                        "zstd stream: no data (missing the frame)"
                    } else {
                        "zstd stream: ended inside the frame (truncated)"
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec_api::PlainSink;

    fn encode(data: &[u8], level: &str) -> Vec<u8> {
        let p = CodecParams::new().with_option("level", level);
        codec_api::encode_all(&Zstd, &p, data, None).expect("encode")
    }

    fn decode(wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Zstd.decoder(&CodecParams::new(), Box::new(wire))
            .expect("decoder")
            .read_to_end(&mut out)?;
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
            .collect()
    }

    fn encode_threads(data: &[u8], threads: &str, flush_every: Option<usize>) -> Vec<u8> {
        let p = CodecParams::new().with_option("threads", threads);
        codec_api::encode_all(&Zstd, &p, data, flush_every).expect("encode")
    }

    #[test]
    fn several_threads_make_one_frame() {
        // Larger than zstd's job size at level 1, so that the workers
        // really share the frame.
        let data = sample(9 << 20);
        for threads in ["1", "2", "4"] {
            let wire = encode_threads(&data, threads, None);
            assert_eq!(decode(&wire).expect("one frame"), data, "threads {threads}");
            // Exactly one frame: the plain zstd decoder reads all of it.
            assert_eq!(zstd::decode_all(&wire[..]).expect("zstd"), data);
        }
        let wire = encode_threads(&data[..300_000], "4", Some(10_000));
        assert_eq!(decode(&wire).expect("flushed frame"), &data[..300_000]);
        let wire = encode_threads(b"", "4", None);
        assert_eq!(decode(&wire).expect("empty frame"), b"");
    }

    #[test]
    fn threads_option() {
        assert!(
            (1..=codec_api::MAX_DEFAULT_THREADS as u32)
                .contains(&threads(&CodecParams::new()).expect("default"))
        );
        for bad in ["0", "65", "x"] {
            let p = CodecParams::new().with_option("threads", bad);
            assert!(
                matches!(Zstd.validate(&p), Err(CodecError::InvalidOption { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn level_option() {
        assert_eq!(level(&CodecParams::new()).expect("default"), 1);
        let p = CodecParams::new().with_option("level", "-3");
        assert_eq!(level(&p).expect("-3"), -3);
        for bad in ["20", "22", "-8", "fast", ""] {
            let p = CodecParams::new().with_option("level", bad);
            assert!(
                matches!(Zstd.validate(&p), Err(CodecError::InvalidOption { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn one_checksummed_frame() {
        let wire = encode(b"hello", "1");
        assert_eq!(&wire[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        // Frame header descriptor: Content_Checksum_flag (bit 2) set.
        assert_ne!(wire[4] & 0x04, 0);
        assert_eq!(decode(&wire).expect("decode"), b"hello");
    }

    #[test]
    fn empty_data_is_a_full_frame() {
        let wire = encode(b"", "1");
        assert!(!wire.is_empty());
        assert_eq!(decode(&wire).expect("decode"), b"");
    }

    #[test]
    fn empty_stream_is_an_error() {
        let e = decode(b"").expect_err("no frame");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = sample(300_000);
        let wire = encode(&data, "1");
        for cut in 0..wire.len() {
            let e = decode(&wire[..cut]).expect_err("truncated");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
        }
    }

    #[test]
    fn checksum_corruption_and_trailing_data_are_invalid() {
        let data = sample(5000);
        let mut wire = encode(&data, "3");
        let n = wire.len();
        wire[n - 1] ^= 0x10; // checksum byte
        assert_eq!(
            decode(&wire).expect_err("checksum").kind(),
            io::ErrorKind::InvalidData
        );
        let mut wire = encode(b"abc", "1");
        wire.push(0);
        assert_eq!(
            decode(&wire).expect_err("garbage").kind(),
            io::ErrorKind::InvalidData
        );
        // a second frame is refused too: one frame per stream
        let mut two = encode(b"abc", "1");
        two.extend_from_slice(&encode(b"def", "1"));
        assert_eq!(
            decode(&two).expect_err("second frame").kind(),
            io::ErrorKind::InvalidData
        );
        // not zstd at all
        assert_eq!(
            decode(b"plain text, not a frame")
                .expect_err("magic")
                .kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn flush_makes_written_data_decodable() {
        let mut wire = Vec::new();
        {
            let mut enc = Zstd
                .encoder(&CodecParams::new(), Box::new(PlainSink::new(&mut wire)))
                .expect("encoder");
            enc.write_all(b"first part ").expect("w");
            enc.flush().expect("flush");
            enc.write_all(b"second part").expect("w");
            enc.finish().expect("finish");
        }
        assert_eq!(decode(&wire).expect("decode"), b"first part second part");

        // Everything written before a flush can be read before the end.
        let mut flushed = Vec::new();
        let mut enc = Zstd
            .encoder(&CodecParams::new(), Box::new(PlainSink::new(&mut flushed)))
            .expect("encoder");
        enc.write_all(b"visible early").expect("w");
        enc.flush().expect("flush");
        drop(enc); // no finish: the frame never ends
        let mut dec = Zstd
            .decoder(&CodecParams::new(), Box::new(&flushed[..]))
            .expect("decoder");
        let mut got = vec![0u8; 13];
        dec.read_exact(&mut got).expect("flushed data readable");
        assert_eq!(&got, b"visible early");
        assert_eq!(
            dec.read(&mut [0u8; 10]).expect_err("no end").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn oversized_window_is_refused() {
        // level 22 with a large input uses a 128 MiB window
        let mut c = zstd::stream::raw::Encoder::new(22).expect("enc");
        c.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .expect("wlog");
        let wire = {
            let mut w = zstd::stream::write::Encoder::with_encoder(Vec::new(), c);
            w.write_all(&sample(100_000)).expect("w");
            w.finish().expect("finish")
        };
        assert_eq!(
            decode(&wire).expect_err("window").kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn tiny_reads() {
        let data = sample(70_000);
        let wire = encode(&data, "1");
        let mut dec = Zstd
            .decoder(&CodecParams::new(), Box::new(&wire[..]))
            .expect("decoder");
        let mut out = Vec::new();
        let mut b = [0u8; 7];
        loop {
            let n = dec.read(&mut b).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[..n]);
        }
        assert_eq!(out, data);
    }

    #[test]
    fn registered() {
        let d = codec_api::lookup("ZSTD").expect("registered");
        assert_eq!(d.kind, CodecKind::Compression);
        assert_eq!(DESCRIPTOR.name, d.name);
    }
}
