//! gzip stream codec for uftpd, wire-compatible with UFTPD 3.x, pyuftp and
//! the Java UFTP client.
//!
//! Each TCP stream carries ONE gzip member (RFC 1952) that starts when the
//! stream opens and ends, with its CRC-32/ISIZE trailer, when the encoder is
//! [finished](codec_api::EncodeWriter::finish). The layer sits inside the
//! encryption (if any), so it sees plain data.
//!
//! Facts this follows:
//! * Java writes with `java.util.zip.GZIPOutputStream` (10-byte header, no
//!   optional fields, one member) and reads with `GZIPInputStream`, which
//!   accepts any header flags and reads further members when more bytes
//!   follow a trailer. Python (UFTPD, pyuftp) uses `zlib` with `wbits=31`
//!   (one member, sync flush after each block it writes).
//! * The encoder here writes a 10-byte header (no name, mtime 0, OS 255)
//!   and a single member; `flush` is a zlib sync flush.
//! * The decoder accepts every header flag (FEXTRA, FNAME, FCOMMENT, FHCRC)
//!   and concatenated members, and REQUIRES each member's trailer: a stream
//!   that ends before the trailer (or has no bytes at all) is an
//!   [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) error, a bad CRC
//!   or corrupt deflate data is [`InvalidData`](std::io::ErrorKind::InvalidData).
//!
//! Options: `level` = 0..=9 (zlib compression level), default
//! [`DEFAULT_LEVEL`] (6, as Java's and Python's defaults); `threads` =
//! 1..=[`codec_api::MAX_THREADS`] (64), how many threads compress ONE
//! stream (default [`codec_api::default_threads`]: the machine's cores, at
//! most 4). With more than one the member is cut into 256 KiB pieces
//! compressed in parallel, each primed with the 32 KiB before it and ended
//! by a sync flush (the technique of pigz, see `src/parallel.rs`); the wire
//! format is the same single member, readers cannot tell. `engine` =
//! `auto` | `zlib` | `isal` ([`ENGINE_OPTION`]): levels 1-3 are compressed
//! by Intel's ISA-L when the system has `libisal.so.2` (loaded at run time
//! and self-tested, see `src/isal.rs`; several times faster than zlib at
//! those levels), by zlib-rs otherwise; ISA-L goes through the same piece
//! writer, in the stream's own thread with `threads` = 1. Decoding uses
//! ISA-L's inflate as well (`auto` or `isal`, any level; about 1.6 times
//! as fast as zlib-rs's), which checks each member's trailer itself and
//! stops exactly at its end (`src/member.rs`); zlib-rs otherwise.
//!
//! ```
//! use std::io::{Read, Write};
//! use codec_api::{CodecParams, PlainSink};
//! use uftpd_gzip as _; // link the plugin so that its registration is seen
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gzip = codec_api::codec("gzip")?;
//! let params = CodecParams::new().with_option("level", "1");
//! let mut wire = Vec::new();
//! let mut enc = gzip.encoder(&params, Box::new(PlainSink::new(&mut wire)))?;
//! enc.write_all(&[b'x'; 10_000])?;
//! enc.finish()?;
//! assert!(wire.len() < 200 && wire.starts_with(&[0x1f, 0x8b, 8]));
//!
//! let mut out = Vec::new();
//! gzip.decoder(&params, Box::new(&wire[..]))?.read_to_end(&mut out)?;
//! assert_eq!(out, vec![b'x'; 10_000]);
//!
//! // A stream cut before its trailer is an error, not a short file.
//! let cut = &wire[..wire.len() - 4];
//! let err = gzip.decoder(&params, Box::new(cut))?.read_to_end(&mut Vec::new()).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
//! # Ok(()) }
//! ```

mod isal;
mod member;
mod parallel;

use std::io::{self, Read, Write};

use codec_api::{CodecDescriptor, CodecError, CodecKind, CodecParams, EncodeWriter, StreamCodec};
use flate2::Compression;

/// Registered name of this codec.
pub const NAME: &str = "gzip";

/// Compression level used when the `level` option is absent.
pub const DEFAULT_LEVEL: u32 = 6;

/// The gzip codec (a stateless factory).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gzip;

fn new_codec() -> Box<dyn StreamCodec> {
    Box::new(Gzip)
}

const fn descriptor() -> CodecDescriptor {
    CodecDescriptor::new(
        NAME,
        CodecKind::Compression,
        env!("CARGO_PKG_VERSION"),
        "gzip (RFC 1952), one member per TCP stream",
        new_codec,
    )
}

/// The registration record of this codec (the same one is submitted to the
/// `codec-api` registry; referencing this static also keeps the crate
/// linked).
pub static DESCRIPTOR: CodecDescriptor = descriptor();

inventory::submit!(descriptor());

/// Reads the `level` option (0..=9, default [`DEFAULT_LEVEL`]).
pub fn level(params: &CodecParams) -> Result<u32, CodecError> {
    params.int_option(NAME, "level", 0..=9, DEFAULT_LEVEL)
}

/// Codec option that chooses the deflate implementation (the wire format
/// is the same): `auto` (the default: ISA-L where the system has a usable
/// `libisal.so.2`, zlib-rs otherwise), `zlib`, or `isal` (an error where
/// ISA-L cannot be used). The encoder uses ISA-L for levels 1-3 only;
/// levels 0 and 4-9 always use zlib-rs. The decoder uses ISA-L at any
/// level.
pub const ENGINE_OPTION: &str = "engine";

/// A deflate implementation (see [`ENGINE_OPTION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// ISA-L for levels 1-3 when it loads and passes its self-test, else
    /// zlib-rs.
    Auto,
    /// zlib-rs (linked in).
    Zlib,
    /// Intel's ISA-L (`libisal.so.2`), loaded at run time, for levels 1-3.
    Isal,
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Engine::Auto),
            "zlib" => Ok(Engine::Zlib),
            "isal" | "isa-l" => Ok(Engine::Isal),
            _ => Err(format!("unknown engine '{s}': expected auto, zlib or isal")),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Auto => "auto",
            Engine::Zlib => "zlib",
            Engine::Isal => "isal",
        })
    }
}

impl Engine {
    /// What `self` compresses `level` with on this machine, for admins
    /// (`uftpd check-config`): e.g. `ISA-L (libisal.so.2) level 1` or
    /// `zlib-rs level 1 (ISA-L: no ISA-L (...))`; `Err` if `self` is
    /// [`Engine::Isal`] and ISA-L cannot be used.
    pub fn describe(self, level: u32) -> Result<String, String> {
        let zlib = format!("zlib-rs level {level}");
        if self == Engine::Zlib {
            return Ok(zlib);
        }
        match isal::load() {
            Ok(_) if isal::LEVELS.contains(&level) => {
                Ok(format!("ISA-L (libisal.so.2) level {level}"))
            }
            Ok(_) => Ok(format!("{zlib} (ISA-L has levels 1-3 only)")),
            Err(why) if self == Engine::Isal => Err(why.to_string()),
            Err(why) => Ok(format!("{zlib} (ISA-L: {why})")),
        }
    }

    /// What `self` decompresses with on this machine, for admins (`uftpd
    /// check-config`): `ISA-L (libisal.so.2)` or `zlib-rs` with the reason
    /// ISA-L is not used; `Err` if `self` is [`Engine::Isal`] and ISA-L
    /// cannot decode.
    pub fn describe_decoder(self) -> Result<String, String> {
        if self == Engine::Zlib {
            return Ok("zlib-rs".into());
        }
        match isal::load_inflate() {
            Ok(_) => Ok("ISA-L (libisal.so.2)".into()),
            Err(why) if self == Engine::Isal => Err(why.to_string()),
            Err(why) => Ok(format!("zlib-rs (ISA-L: {why})")),
        }
    }
}

/// Reads the `engine` option ([`ENGINE_OPTION`], default `auto`).
pub fn engine(params: &CodecParams) -> Result<Engine, CodecError> {
    params.choice_option(NAME, ENGINE_OPTION, Engine::Auto, |e| match e {
        Engine::Isal => isal::load_inflate().map(drop).map_err(str::to_string),
        Engine::Auto | Engine::Zlib => Ok(()),
    })
}

/// Reads the `threads` option (1..=[`codec_api::MAX_THREADS`], default
/// [`codec_api::default_threads`]).
pub fn threads(params: &CodecParams) -> Result<usize, CodecError> {
    params.threads_option(NAME)
}

impl StreamCodec for Gzip {
    fn name(&self) -> &'static str {
        NAME
    }

    fn kind(&self) -> CodecKind {
        CodecKind::Compression
    }

    fn validate(&self, params: &CodecParams) -> Result<(), CodecError> {
        level(params)?;
        engine(params)?;
        threads(params).map(|_| ())
    }

    fn encoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn EncodeWriter + 'a>,
    ) -> Result<Box<dyn EncodeWriter + 'a>, CodecError> {
        let level = level(params)?;
        let threads = threads(params)?;
        let isal = match engine(params)? {
            Engine::Zlib => None,
            Engine::Auto | Engine::Isal => isal::load().ok(),
        }
        .filter(|_| isal::LEVELS.contains(&level));
        let spec = match isal {
            Some(api) => parallel::EngineSpec::Isal(api, level),
            None if threads == 1 => {
                return Ok(Box::new(GzipWriter {
                    inner: flate2::write::GzEncoder::new(inner, Compression::new(level)),
                }));
            }
            None => parallel::EngineSpec::Zlib(Compression::new(level)),
        };
        Ok(Box::new(parallel::ParallelGzipWriter::new(
            inner, spec, threads,
        )?))
    }

    fn decoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
        self.validate(params)?;
        // `engine` has checked that ISA-L decodes if `isal` was asked for.
        let isal = match engine(params)? {
            Engine::Zlib => None,
            Engine::Auto | Engine::Isal => isal::load_inflate().ok(),
        };
        match isal {
            Some(api) => {
                let inflater = isal::Inflater::new(api).map_err(CodecError::Io)?;
                Ok(Box::new(member::IsalGzipReader::new(inner, inflater)))
            }
            None => Ok(Box::new(GzipReader::new(inner))),
        }
    }
}

/// Encoder: one gzip member over the inner writer.
struct GzipWriter<'a> {
    inner: flate2::write::GzEncoder<Box<dyn EncodeWriter + 'a>>,
}

impl Write for GzipWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // flate2: sync flush of the deflate stream, then flush of the inner.
        self.inner.flush()
    }
}

impl EncodeWriter for GzipWriter<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let inner = self.inner.finish()?;
        inner.finish()
    }
}

/// Counts bytes taken from the inner reader (to tell "no stream at all"
/// from a complete one).
struct Counting<'a> {
    inner: Box<dyn Read + Send + 'a>,
    seen: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        Ok(n)
    }
}

/// Decoder: concatenated gzip members, each with a checked trailer.
struct GzipReader<'a> {
    inner: flate2::read::MultiGzDecoder<Counting<'a>>,
    done: bool,
}

impl<'a> GzipReader<'a> {
    fn new(inner: Box<dyn Read + Send + 'a>) -> Self {
        GzipReader {
            inner: flate2::read::MultiGzDecoder::new(Counting { inner, seen: 0 }),
            done: false,
        }
    }
}

fn gzip_error(e: io::Error) -> io::Error {
    let kind = match e.kind() {
        io::ErrorKind::UnexpectedEof => io::ErrorKind::UnexpectedEof,
        // flate2 reports corrupt deflate data and bad headers/CRCs as
        // InvalidInput or InvalidData; to a reader of the wire both are
        // corrupt data.
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => io::ErrorKind::InvalidData,
        _ => return e,
    };
    io::Error::new(kind, format!("gzip stream: {e}"))
}

impl Read for GzipReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf).map_err(gzip_error)?;
        if n == 0 {
            if self.inner.get_ref().seen == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "gzip stream: no data (missing header and trailer)",
                ));
            }
            self.done = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec_api::PlainSink;

    fn encode(data: &[u8], level: &str) -> Vec<u8> {
        let p = CodecParams::new().with_option("level", level);
        codec_api::encode_all(&Gzip, &p, data, None).expect("encode")
    }

    /// Decodes `wire` with every decoder (zlib-rs, ISA-L), which must
    /// agree (see [`agreed`]).
    fn decode(wire: &[u8]) -> io::Result<Vec<u8>> {
        agreed(|p| {
            let mut out = Vec::new();
            Gzip.decoder(p, Box::new(wire))
                .expect("decoder")
                .read_to_end(&mut out)?;
            Ok(out)
        })
    }

    /// Runs `decode` with the params of each engine and checks that they
    /// agree: the same bytes, or both an error. Returns the first
    /// (zlib-rs) result; where both fail with different kinds, the one
    /// that is not UnexpectedEof, so that a test expecting UnexpectedEof
    /// (a cut, and nothing else wrong) holds only if every decoder says so.
    /// (A stream both damaged and cut may be found corrupt by one decoder
    /// before its end and cut by the other: both are right.)
    fn agreed(decode: impl Fn(&CodecParams) -> io::Result<Vec<u8>>) -> io::Result<Vec<u8>> {
        let mut results = engines().into_iter().map(|e| {
            let p = CodecParams::new().with_option(ENGINE_OPTION, e.to_string());
            (e, decode(&p))
        });
        let (first_engine, mut first) = results.next().expect("an engine");
        for (e, r) in results {
            match (&first, r) {
                (Ok(a), Ok(b)) => assert!(*a == b, "{e} decoded other bytes than {first_engine}"),
                (Err(a), Err(b))
                    if a.kind() != b.kind() && b.kind() != io::ErrorKind::UnexpectedEof =>
                {
                    first = Err(io::Error::new(
                        b.kind(),
                        format!("{e}: {b} ({first_engine}: {a})"),
                    ));
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!(
                    "{first_engine}: {:?}, {e}: {:?}",
                    a.as_ref().map(Vec::len),
                    b.as_ref().map(Vec::len)
                ),
            }
        }
        first
    }

    #[test]
    fn level_option() {
        assert_eq!(level(&CodecParams::new()).expect("default"), 6);
        let p = CodecParams::new().with_option("level", "9");
        assert_eq!(level(&p).expect("9"), 9);
        for bad in ["10", "-1", "fast", ""] {
            let p = CodecParams::new().with_option("level", bad);
            assert!(
                matches!(Gzip.validate(&p), Err(CodecError::InvalidOption { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_is_plain_single_member() {
        let wire = encode(b"hello", "6");
        // ID1 ID2 CM=8 FLG=0, then MTIME(4) XFL OS
        assert_eq!(&wire[..4], &[0x1f, 0x8b, 8, 0]);
        // trailer: CRC32 + ISIZE (little endian)
        let n = wire.len();
        assert_eq!(&wire[n - 4..], &5u32.to_le_bytes());
        assert_eq!(decode(&wire).expect("decode"), b"hello");
    }

    #[test]
    fn empty_data_is_a_full_member() {
        let wire = encode(b"", "6");
        assert!(wire.len() >= 20);
        assert_eq!(decode(&wire).expect("decode"), b"");
    }

    #[test]
    fn empty_stream_is_an_error() {
        let e = decode(b"").expect_err("no member");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let wire = encode(&data, "6");
        for cut in 0..wire.len() {
            let e = decode(&wire[..cut]).expect_err("truncated");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
        }
    }

    #[test]
    fn bad_crc_and_garbage_are_invalid_data() {
        let mut wire = encode(b"some data to protect", "6");
        let n = wire.len();
        wire[n - 6] ^= 1; // CRC byte
        assert_eq!(
            decode(&wire).expect_err("crc").kind(),
            io::ErrorKind::InvalidData
        );
        let mut wire = encode(b"abc", "6");
        wire.extend_from_slice(b"trailing garbage");
        assert_eq!(
            decode(&wire).expect_err("garbage").kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn concatenated_members_and_sync_flushes() {
        // What Python's writer produces: sync flush after each block.
        let mut wire = Vec::new();
        let mut enc = Gzip
            .encoder(&CodecParams::new(), Box::new(PlainSink::new(&mut wire)))
            .expect("encoder");
        enc.write_all(b"first ").expect("w");
        enc.flush().expect("sync flush");
        enc.write_all(b"second").expect("w");
        enc.finish().expect("finish");
        let mut two = wire.clone();
        two.extend_from_slice(&encode(b" third", "1"));
        assert_eq!(decode(&two).expect("decode"), b"first second third");
    }

    #[test]
    fn header_with_name_and_comment_is_accepted() {
        let mut wire = Vec::new();
        let mut enc = flate2::GzBuilder::new()
            .filename("f.txt")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(&mut wire, Compression::default());
        enc.write_all(b"flags").expect("w");
        enc.finish().expect("finish");
        assert_eq!(decode(&wire).expect("decode"), b"flags");
    }

    fn encode_with(data: &[u8], level: &str, threads: &str, flush_every: Option<usize>) -> Vec<u8> {
        let p = CodecParams::new()
            .with_option("level", level)
            .with_option("threads", threads);
        codec_api::encode_all(&Gzip, &p, data, flush_every).expect("encode")
    }

    /// Text-like data with repeats far apart (matches across piece cuts)
    /// and incompressible stretches.
    fn mixed(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        let words: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("w{}x{} ", i * 7919 % 1000, i % 13).into_bytes())
            .collect();
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if x.is_multiple_of(17) {
                out.extend((0..200).map(|k| (x >> (k % 24)) as u8 ^ k as u8));
            } else {
                out.extend_from_slice(&words[(x >> 8) as usize % words.len()]);
            }
        }
        out.truncate(len);
        out
    }

    /// One member, decodable by a decoder that reads exactly one (as
    /// Python's zlib with wbits=31 does).
    fn single_member_decode(wire: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::GzDecoder::new(wire);
        let mut out = Vec::new();
        d.read_to_end(&mut out).expect("one member");
        out
    }

    #[test]
    fn parallel_member_round_trips_at_every_size_and_level() {
        let piece = parallel::PIECE;
        let data = mixed(3 * piece + 1000);
        let cases = [
            0,
            1,
            100,
            piece - 1,
            piece,
            piece + 1,
            2 * piece + 7,
            data.len(),
        ]
        .into_iter()
        .flat_map(|len| [("2", "1"), ("4", "6")].map(|(t, l)| (len, t, l)))
        .chain([(piece + 1, "3", "0"), (piece + 1, "3", "9")]);
        for (len, threads, level) in cases {
            let wire = encode_with(&data[..len], level, threads, None);
            assert_eq!(&wire[..4], &[0x1f, 0x8b, 8, 0]);
            assert_eq!(
                single_member_decode(&wire),
                &data[..len],
                "len {len} threads {threads} level {level}"
            );
            assert_eq!(decode(&wire).expect("decode"), &data[..len]);
        }
    }

    #[test]
    fn parallel_member_with_sync_flushes() {
        let data = mixed(parallel::PIECE * 2 + 333);
        for (len, every) in [
            (3000, 1),
            (data.len(), 7000),
            (data.len(), 70_000),
            (data.len(), parallel::PIECE + 5),
        ] {
            let wire = encode_with(&data[..len], "1", "4", Some(every));
            assert_eq!(
                single_member_decode(&wire),
                &data[..len],
                "flush every {every}"
            );
        }
    }

    #[test]
    fn parallel_member_compresses_about_as_well_as_one_thread() {
        let data = mixed(4 * parallel::PIECE);
        for level in ["1", "6"] {
            let serial = encode_with(&data, level, "1", None).len();
            let par = encode_with(&data, level, "4", None).len();
            assert!(
                (par as f64) < serial as f64 * 1.01,
                "level {level}: {par} bytes with 4 threads, {serial} with one"
            );
        }
    }

    #[test]
    fn parallel_member_truncations_are_errors() {
        let data = mixed(parallel::PIECE + 5000);
        let wire = encode_with(&data, "1", "2", None);
        for cut in (0..wire.len())
            .step_by(997)
            .chain(wire.len() - 9..wire.len())
        {
            let e = decode(&wire[..cut]).expect_err("truncated");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
        }
    }

    /// Both engines; ISA-L must load and pass both self-tests here (CI
    /// installs `libisal2`) unless UFTPD_TEST_WITHOUT_ISAL=1 says to test
    /// zlib-rs alone.
    fn engines() -> Vec<Engine> {
        match Engine::Isal
            .describe(1)
            .and(Engine::Isal.describe_decoder())
        {
            Ok(_) => vec![Engine::Zlib, Engine::Isal],
            Err(why) if std::env::var_os("UFTPD_TEST_WITHOUT_ISAL").is_some() => {
                eprintln!("testing zlib-rs only: {why}");
                vec![Engine::Zlib]
            }
            Err(why) => panic!(
                "ISA-L engine unusable: {why} (install libisal2, or set UFTPD_TEST_WITHOUT_ISAL=1)"
            ),
        }
    }

    #[test]
    fn every_engine_makes_one_standard_member() {
        // Each engine, at levels 0-3 and 6, with 1 and 3 threads, with and
        // without sync flushes in between: one member that a one-member
        // decoder (Python's zlib with wbits=31 reads this way) and our
        // decoder read back, and that `gzip -d` reads where it is installed.
        let piece = parallel::PIECE;
        let data = mixed(2 * piece + 4321);
        for engine in engines() {
            for (level, threads, len, flush) in [
                ("1", "1", data.len(), None),
                ("1", "3", data.len(), None),
                ("2", "1", piece + 1, None),
                ("3", "3", data.len(), Some(70_000)),
                ("1", "1", 3000, Some(1)),
                ("1", "2", 0, None),
                ("0", "2", piece - 1, None),
                ("6", "1", 5000, None),
            ] {
                let p = CodecParams::new()
                    .with_option("level", level)
                    .with_option("threads", threads)
                    .with_option(ENGINE_OPTION, engine.to_string());
                let wire = codec_api::encode_all(&Gzip, &p, &data[..len], flush).expect("encode");
                let what =
                    format!("{engine} level {level} threads {threads} len {len} flush {flush:?}");
                assert_eq!(&wire[..4], &[0x1f, 0x8b, 8, 0], "{what}");
                assert_eq!(single_member_decode(&wire), &data[..len], "{what}");
                assert_eq!(decode(&wire).expect("decode"), &data[..len], "{what}");
                if let Ok(mut child) = std::process::Command::new("gzip")
                    .arg("-dc")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                {
                    let mut stdin = child.stdin.take().expect("stdin");
                    let w = wire.clone();
                    let feeder = std::thread::spawn(move || stdin.write_all(&w));
                    let out = child.wait_with_output().expect("gzip -d");
                    feeder.join().expect("feeder").expect("feed gzip");
                    assert!(out.status.success(), "gzip -d: {what}");
                    assert_eq!(out.stdout, &data[..len], "gzip -d: {what}");
                }
            }
        }
    }

    #[test]
    fn isal_at_level_1_beats_zlib_rs_on_size() {
        // Not a speed test: ISA-L's level 1 shrinks text-like data at least
        // as well as zlib-rs's level 1 (a broken engine that stored
        // everything would fail here).
        if engines().len() < 2 {
            return;
        }
        let data = mixed(4 * parallel::PIECE);
        let size = |e: Engine| {
            let p = CodecParams::new()
                .with_option("level", "1")
                .with_option("threads", "2")
                .with_option(ENGINE_OPTION, e.to_string());
            codec_api::encode_all(&Gzip, &p, &data, None)
                .expect("encode")
                .len()
        };
        let (isal, zlib) = (size(Engine::Isal), size(Engine::Zlib));
        assert!(
            isal < data.len() * 9 / 10 && isal <= zlib + zlib / 20,
            "ISA-L {isal}, zlib-rs {zlib}"
        );
    }

    const FNAME_FLAG: u8 = 0x08;

    /// As [`decode`], the input arriving in pieces of 1 to `max` bytes,
    /// read out into a buffer of `read` bytes.
    fn decode_pieces(wire: &[u8], max: usize, read: usize) -> io::Result<Vec<u8>> {
        agreed(|p| {
            let mut d = Gzip
                .decoder(p, Box::new(isal::Pieces::new(wire, max)))
                .expect("decoder");
            let mut out = Vec::new();
            let mut buf = vec![0u8; read];
            loop {
                match d.read(&mut buf)? {
                    0 => return Ok(out),
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
        })
    }

    #[test]
    fn decoder_reads_what_arrives_in_pieces() {
        // Each decoder (zlib-rs, ISA-L; `agreed`), input arriving
        // in pieces of 1 byte up to 64 KB and read into small and large
        // buffers: members of every encoder, two members in a row, sync
        // flushes, every header flag; cuts anywhere are UnexpectedEof, a
        // changed byte is InvalidData (a bad block, a bad CRC or a bad
        // length) or, where it hits a byte that carries nothing, the same
        // data; never other data.
        let data = mixed(600_000);
        let wires: Vec<Vec<u8>> = engines()
            .into_iter()
            .flat_map(|e| {
                [("1", "1"), ("1", "3"), ("6", "2")].map(|(level, threads)| {
                    let p = CodecParams::new()
                        .with_option("level", level)
                        .with_option("threads", threads)
                        .with_option(ENGINE_OPTION, e.to_string());
                    codec_api::encode_all(&Gzip, &p, &data, Some(100_000)).expect("encode")
                })
            })
            .collect();
        let mut flagged = Vec::new();
        {
            let mut enc = flate2::GzBuilder::new()
                .filename("f.txt")
                .comment("a comment")
                .extra(vec![7; 300])
                .write(&mut flagged, Compression::fast());
            enc.write_all(&data[..50_000]).expect("w");
            enc.finish().expect("finish");
        }
        for (i, wire) in wires.iter().enumerate() {
            for (max, read) in [(1, 1000), (37, 70_000), (65_536, 1 << 20), (3000, 7)] {
                if max == 1 && i > 0 {
                    continue; // one wire byte by byte is enough
                }
                let got = decode_pieces(wire, max, read).expect("decodes");
                assert!(got == data, "wire {i}, pieces <= {max}, reads of {read}");
            }
        }
        let mut endless = vec![0x1f, 0x8b, 8, FNAME_FLAG, 0, 0, 0, 0, 0, 0xff];
        endless.resize(3 << 20, b'n');
        let e = decode_pieces(&endless, 65_536, 4096).expect_err("endless name");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ),
            "{e}"
        );
        let two = [wires[0].as_slice(), flagged.as_slice()].concat();
        let got = decode_pieces(&two, 4000, 65_536).expect("two members");
        assert!(got.len() == 650_000 && got[..600_000] == data && got[600_000..] == data[..50_000]);
        // Cuts: two empty members, whose trailer is all zeros as is the
        // byte before it (regression: a decoder that guessed where the
        // trailer starts accepted such a stream cut by one byte), and a
        // short one.
        let short = encode_with(&data[..3000], "1", "1", None);
        for (what, wire, max) in [
            ("empty member, level 1", encode_with(b"", "1", "1", None), 3),
            ("empty member, level 6", encode_with(b"", "6", "1", None), 3),
            ("short member", short.clone(), 5),
        ] {
            for cut in 0..wire.len() {
                let e = decode_pieces(&wire[..cut], max, 4096).expect_err("cut");
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof,
                    "{what} cut at {cut}: {e}"
                );
            }
        }
        for at in (0..short.len()).step_by(3) {
            let mut bad = short.clone();
            bad[at] ^= 0x10;
            match decode_pieces(&bad, 700, 4096) {
                Err(e) => assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ),
                    "byte {at}: {e}"
                ),
                // header bytes that carry nothing (mtime, XFL, OS)
                // or padding bits after the last block: same data
                Ok(got) => assert!(got == data[..3000], "byte {at}: other data"),
            }
        }
    }

    #[test]
    fn member_boundaries_are_exact() {
        // Where one member ends the next starts: a short member, an empty
        // one and a short one again, in pieces of 1-3 bytes; every cut
        // inside a member is UnexpectedEof, a cut between members gives
        // the members before it, and any byte after a member that cannot
        // start another is an error too (both decoders, `agreed`).
        let data = mixed(5000);
        let a = encode_with(&data[..2000], "1", "1", None);
        let b = encode_with(b"", "6", "1", None);
        let c = encode_with(&data[2000..], "6", "1", None);
        let wire = [a.as_slice(), &b, &c].concat();
        let ends = [a.len(), a.len() + b.len(), wire.len()];
        for cut in 1..=wire.len() {
            match decode_pieces(&wire[..cut], 3, 4096) {
                Ok(got) => {
                    assert!(ends.contains(&cut), "cut at {cut} accepted");
                    let want = if cut == a.len() + b.len() || cut == a.len() {
                        &data[..2000]
                    } else {
                        &data[..]
                    };
                    assert!(got == want, "cut at {cut}: other data");
                }
                Err(e) => {
                    assert!(!ends.contains(&cut), "cut at {cut}: {e}");
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
                }
            }
        }
        for byte in 0..=255u8 {
            let mut w = a.clone();
            w.push(byte);
            let e = decode_pieces(&w, 1, 4096).expect_err("a byte after the member");
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "{byte:#04x}: {e}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Random data, level, pieces, cut and damage: both decoders agree
        /// (`agreed`), a whole stream decodes to the data, and a cut or
        /// damaged one never gives other data without an error.
        #[test]
        fn decoders_agree(
            len in 0usize..40_000,
            level in proptest::sample::select(vec!["0", "1", "3", "6", "9"]),
            max in 1usize..5000,
            cut in proptest::option::of(0usize..1_000_000),
            flip in proptest::option::of((0usize..1_000_000, 1u8..=255)),
        ) {
            let data = mixed(len);
            let mut wire = encode_with(&data, level, "1", Some(7000));
            if let Some((at, x)) = flip {
                let at = at % wire.len();
                wire[at] ^= x;
            }
            if let Some(c) = cut {
                wire.truncate(c % (wire.len() + 1));
            }
            match decode_pieces(&wire, max, 3000) {
                Ok(got) => proptest::prop_assert!(got == data, "other data"),
                Err(e) => proptest::prop_assert!(cut.is_some() || flip.is_some(), "{}", e),
            }
        }

        /// Arbitrary bytes after a valid member header (what a hostile
        /// client can send): both decoders agree, byte for byte or both
        /// with an error (`agreed`), and neither crashes or hangs.
        #[test]
        fn decoders_agree_on_arbitrary_deflate_data(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            max in 1usize..700,
        ) {
            let wire = [&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff][..], &body].concat();
            let _ = decode_pieces(&wire, max, 1000);
        }
    }

    #[test]
    fn engine_option() {
        assert_eq!(engine(&CodecParams::new()).expect("default"), Engine::Auto);
        assert_eq!("ISA-L".parse::<Engine>(), Ok(Engine::Isal));
        let p = CodecParams::new().with_option(ENGINE_OPTION, "pigz");
        let e = Gzip.validate(&p).expect_err("unknown").to_string();
        assert!(
            e.contains("pigz") && e.contains("auto, zlib or isal"),
            "{e}"
        );
        assert_eq!(Engine::Zlib.describe(1).as_deref(), Ok("zlib-rs level 1"));
        let d = Engine::Auto.describe(6).expect("auto");
        assert!(d.starts_with("zlib-rs level 6"), "{d}");
        if engines().len() == 2 {
            assert_eq!(
                Engine::Auto.describe(1).as_deref(),
                Ok("ISA-L (libisal.so.2) level 1")
            );
            let p = CodecParams::new().with_option(ENGINE_OPTION, "isal");
            Gzip.validate(&p).expect("isal usable here");
        }
    }

    #[test]
    fn threads_option() {
        assert!(
            (1..=codec_api::MAX_DEFAULT_THREADS)
                .contains(&threads(&CodecParams::new()).expect("default"))
        );
        let p = CodecParams::new().with_option("threads", "8");
        assert_eq!(threads(&p).expect("8"), 8);
        for bad in ["0", "65", "many"] {
            let p = CodecParams::new().with_option("threads", bad);
            assert!(
                matches!(Gzip.validate(&p), Err(CodecError::InvalidOption { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn registered() {
        let d = codec_api::lookup("GZIP").expect("registered");
        assert_eq!(d.kind, CodecKind::Compression);
        assert_eq!(DESCRIPTOR.name, d.name);
    }
}
