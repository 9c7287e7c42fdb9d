//! Stream codec traits for uftpd data channels (compression, encryption).
//!
//! A *codec* wraps the byte stream of ONE TCP data connection: on the sending
//! side an [`EncodeWriter`] that transforms everything written to it and
//! writes a trailer on [`EncodeWriter::finish`], on the receiving side a
//! decoding [`Read`] that checks the trailer and reports a truncated or
//! corrupt stream as an error (never as a silently short stream).
//!
//! Codecs stack. On the wire, per TCP stream, the layers are, outermost
//! first: socket, encryption, compression, multi-stream framing. The
//! [`CodecKind`] of a codec says where it belongs; `CodecKind`'s `Ord` puts
//! the outermost layer (the one next to the socket) first, so a stack can
//! be sorted into order.
//!
//! The trait is shaped to carry three families of codecs without change:
//!
//! * streaming transforms (gzip, later zstd): compress on write, write the
//!   footer on `finish`;
//! * block ciphers over the whole stream (legacy BLOWFISH-ECB, AES-CBC):
//!   the whole TCP stream is one message, PKCS#5/7 padding once at its end,
//!   written by `finish`;
//! * authenticated record codecs (ChaCha20-Poly1305, later): the encoder
//!   derives a per-stream key from the session key, the stream index in
//!   [`CodecParams::stream_index`] and a random salt that it sends first;
//!   `finish` writes a final record so that the decoder can tell a complete
//!   stream from a truncated one.
//!
//! Codecs register statically: each plugin crate submits a
//! [`CodecDescriptor`] with `inventory::submit!`, and [`lookup`] finds it by
//! name (case-insensitively). A binary only sees the codecs of the crates it
//! links, so it must reference each plugin crate (for example with
//! `use uftpd_gzip as _;`).
//!
//! # Example: a codec, registered and used
//!
//! ```
//! use std::io::{self, Read, Write};
//! use codec_api::{
//!     CodecDescriptor, CodecError, CodecKind, CodecParams, EncodeWriter, PlainSink, StreamCodec,
//! };
//!
//! /// Toy codec: XOR every byte with the first key byte (NOT encryption).
//! #[derive(Debug)]
//! struct Xor;
//!
//! struct XorWriter<'a> { k: u8, inner: Box<dyn EncodeWriter + 'a> }
//! impl Write for XorWriter<'_> {
//!     fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
//!         let x: Vec<u8> = buf.iter().map(|b| b ^ self.k).collect();
//!         self.inner.write_all(&x)?;
//!         Ok(buf.len())
//!     }
//!     fn flush(&mut self) -> io::Result<()> { self.inner.flush() }
//! }
//! impl EncodeWriter for XorWriter<'_> {
//!     fn finish(self: Box<Self>) -> io::Result<()> { self.inner.finish() }
//! }
//!
//! struct XorReader<'a> { k: u8, inner: Box<dyn Read + Send + 'a> }
//! impl Read for XorReader<'_> {
//!     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
//!         let n = self.inner.read(buf)?;
//!         buf[..n].iter_mut().for_each(|b| *b ^= self.k);
//!         Ok(n)
//!     }
//! }
//!
//! impl StreamCodec for Xor {
//!     fn name(&self) -> &'static str { "XOR" }
//!     fn kind(&self) -> CodecKind { CodecKind::Encryption }
//!     fn validate(&self, p: &CodecParams) -> Result<(), CodecError> {
//!         match p.key_bytes() {
//!             Some(k) if !k.is_empty() => Ok(()),
//!             Some(k) => Err(CodecError::InvalidKeyLength {
//!                 codec: "XOR", len: k.len(), expected: "at least 1 byte" }),
//!             None => Err(CodecError::MissingKey { codec: "XOR" }),
//!         }
//!     }
//!     fn encoder<'a>(&self, p: &CodecParams, inner: Box<dyn EncodeWriter + 'a>)
//!         -> Result<Box<dyn EncodeWriter + 'a>, CodecError> {
//!         self.validate(p)?;
//!         let k = p.key_bytes().map_or(0, |k| k[0]);
//!         Ok(Box::new(XorWriter { k, inner }))
//!     }
//!     fn decoder<'a>(&self, p: &CodecParams, inner: Box<dyn Read + Send + 'a>)
//!         -> Result<Box<dyn Read + Send + 'a>, CodecError> {
//!         self.validate(p)?;
//!         let k = p.key_bytes().map_or(0, |k| k[0]);
//!         Ok(Box::new(XorReader { k, inner }))
//!     }
//! }
//!
//! fn new_xor() -> Box<dyn StreamCodec> { Box::new(Xor) }
//! inventory::submit! {
//!     CodecDescriptor::new("XOR", CodecKind::Encryption, "0.1.0", "toy XOR codec", new_xor)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The daemon refuses a bad key when the transfer request arrives ...
//! assert!(codec_api::validate_key("xor", b"").is_err());
//! codec_api::validate_key("xor", b"k")?;
//!
//! // ... and later builds one encoder/decoder per TCP stream.
//! let codec = codec_api::codec("xor")?;
//! let params = CodecParams::new().with_key(b"k".to_vec()).for_stream(0, 1);
//! let mut wire = Vec::new();
//! let mut enc = codec.encoder(&params, Box::new(PlainSink::new(&mut wire)))?;
//! enc.write_all(b"hello")?;
//! enc.finish()?;
//! assert_ne!(wire, b"hello");
//!
//! let mut dec = codec.decoder(&params, Box::new(&wire[..]))?;
//! let mut out = Vec::new();
//! dec.read_to_end(&mut out)?;
//! assert_eq!(out, b"hello");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

pub use inventory;

/// Version of this API that plugins are built against. A descriptor whose
/// `api_version` differs is refused by [`lookup`].
///
/// 2: [`EncodeWriter::write_owned`] (a new trait method changes the layout
/// of `dyn EncodeWriter`, so plugins built for 1 cannot be loaded).
pub const API_VERSION: u32 = 2;

/// Where a codec sits in a stack.
///
/// The derived `Ord` sorts the layer closest to the socket first
/// (`Encryption < Compression`), which is the wire order: socket,
/// encryption, compression, multi-stream framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CodecKind {
    /// Encryption: next to the socket, so it sees compressed bytes.
    Encryption,
    /// Compression: inside the encryption, so it sees plain data.
    Compression,
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecKind::Encryption => "encryption",
            CodecKind::Compression => "compression",
        })
    }
}

/// Key material. Its `Debug` output never shows the bytes (keys must never
/// reach a log), and the bytes are overwritten with zeros on drop (best
/// effort: copies made by the codecs' own key schedules are theirs to wipe).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretKey(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretKey {
    fn from(v: Vec<u8>) -> Self {
        SecretKey(v)
    }
}

impl From<&[u8]> for SecretKey {
    fn from(v: &[u8]) -> Self {
        SecretKey(v.to_vec())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({} bytes, redacted)", self.0.len())
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

/// Parameters of one codec instance (one layer on one TCP stream).
///
/// ```
/// use codec_api::CodecParams;
/// let p = CodecParams::new()
///     .with_key(vec![7u8; 16])
///     .with_option("level", "9")
///     .for_stream(2, 4);
/// assert_eq!(p.stream_index, 2);
/// assert_eq!(p.option("level"), Some("9"));
/// assert_eq!(p.key_bytes().map(|k| k.len()), Some(16));
/// assert!(!format!("{p:?}").contains("7, 7"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CodecParams {
    /// Key bytes as sent in the transfer request (after base64 decoding),
    /// or the session key of an extension codec.
    pub key: Option<SecretKey>,
    /// Index of the TCP stream this instance serves (0-based).
    pub stream_index: u32,
    /// Number of TCP streams of the data channel (at least 1).
    pub stream_count: u32,
    /// Codec-specific options, e.g. `level=6` for gzip.
    pub options: BTreeMap<String, String>,
}

impl CodecParams {
    /// Parameters with no key, stream 0 of 1 and no options.
    pub fn new() -> Self {
        CodecParams {
            key: None,
            stream_index: 0,
            stream_count: 1,
            options: BTreeMap::new(),
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<SecretKey>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets one option.
    pub fn with_option(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(name.into(), value.into());
        self
    }

    /// Sets the stream index and count.
    pub fn for_stream(mut self, index: u32, count: u32) -> Self {
        self.stream_index = index;
        self.stream_count = count;
        self
    }

    /// The key bytes, if a key is set.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_ref().map(SecretKey::as_bytes)
    }

    /// The value of an option.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// An integer option within `range` (`default` when absent); any other
    /// value is refused with [`CodecError::InvalidOption`] for `codec`.
    ///
    /// ```
    /// use codec_api::CodecParams;
    /// let p = CodecParams::new().with_option("level", "3");
    /// assert_eq!(p.int_option("gzip", "level", 0..=9, 6).unwrap(), 3);
    /// assert_eq!(CodecParams::new().int_option("gzip", "level", 0..=9, 6).unwrap(), 6);
    /// let bad = CodecParams::new().with_option("level", "12");
    /// assert!(bad.int_option("gzip", "level", 0..=9, 6).is_err());
    /// ```
    pub fn int_option<T>(
        &self,
        codec: &'static str,
        name: &str,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> Result<T, CodecError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display,
    {
        let Some(v) = self.option(name) else {
            return Ok(default);
        };
        match v.trim().parse::<T>() {
            Ok(x) if range.contains(&x) => Ok(x),
            _ => Err(CodecError::InvalidOption {
                codec,
                name: name.into(),
                value: v.into(),
                reason: format!("expected an integer {}..={}", range.start(), range.end()),
            }),
        }
    }

    /// An option naming one of several choices, parsed by `T`'s `FromStr`
    /// (whose error says what is accepted), `default` when absent; `check`
    /// may still refuse a parsed choice (an engine this machine cannot
    /// load). A refusal is [`CodecError::InvalidOption`] for `codec`.
    ///
    /// ```
    /// use codec_api::CodecParams;
    /// #[derive(Debug, PartialEq)]
    /// struct YesNo(bool);
    /// impl std::str::FromStr for YesNo {
    ///     type Err = String;
    ///     fn from_str(s: &str) -> Result<Self, String> {
    ///         match s {
    ///             "yes" => Ok(YesNo(true)),
    ///             "no" => Ok(YesNo(false)),
    ///             _ => Err(format!("unknown '{s}': expected yes or no")),
    ///         }
    ///     }
    /// }
    /// let p = CodecParams::new().with_option("fast", "no");
    /// assert_eq!(p.choice_option("x", "fast", YesNo(true), |_| Ok(())).unwrap(), YesNo(false));
    /// let p = CodecParams::new().with_option("fast", "maybe");
    /// assert!(p.choice_option("x", "fast", YesNo(true), |_| Ok(())).is_err());
    /// let p = CodecParams::new().with_option("fast", "yes");
    /// assert!(p.choice_option("x", "fast", YesNo(false), |_| Err("not here".into())).is_err());
    /// ```
    pub fn choice_option<T>(
        &self,
        codec: &'static str,
        name: &str,
        default: T,
        check: impl FnOnce(&T) -> Result<(), String>,
    ) -> Result<T, CodecError>
    where
        T: std::str::FromStr<Err = String>,
    {
        let Some(v) = self.option(name) else {
            return Ok(default);
        };
        let invalid = |reason: String| CodecError::InvalidOption {
            codec,
            name: name.into(),
            value: v.into(),
            reason,
        };
        let choice: T = v.parse().map_err(invalid)?;
        check(&choice).map_err(invalid)?;
        Ok(choice)
    }

    /// The `threads` option of a codec that compresses ONE stream with
    /// several threads: 1..=[`MAX_THREADS`], default [`default_threads`].
    ///
    /// ```
    /// use codec_api::CodecParams;
    /// let p = CodecParams::new().with_option("threads", "8");
    /// assert_eq!(p.threads_option("gzip").unwrap(), 8);
    /// assert!(CodecParams::new().with_option("threads", "0").threads_option("gzip").is_err());
    /// ```
    pub fn threads_option(&self, codec: &'static str) -> Result<usize, CodecError> {
        self.int_option(codec, "threads", 1..=MAX_THREADS, default_threads())
    }
}

/// Most threads the `threads` option allows for one stream.
pub const MAX_THREADS: usize = 64;

/// Most threads a codec uses for one stream by default.
pub const MAX_DEFAULT_THREADS: usize = 4;

/// The default of the `threads` option ([`CodecParams::threads_option`]):
/// the cores this process may use, at most [`MAX_DEFAULT_THREADS`].
pub fn default_threads() -> usize {
    available_cores().min(MAX_DEFAULT_THREADS)
}

/// The cores this process may run on (affinity and cgroup quota), asked
/// once per process: the answer reads cgroup files, and codecs and data
/// channels ask for every transfer.
pub fn available_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The encoding side of a codec: a writer that transforms what is written
/// to it into its inner writer.
///
/// * `write` may buffer (a block cipher holds back a partial block, a
///   compressor its window);
/// * `flush` pushes out everything that can be pushed out WITHOUT ending the
///   stream (gzip: a sync flush; a block cipher: all complete blocks) and
///   then flushes the inner writer;
/// * [`finish`](EncodeWriter::finish) ends the stream: it writes the trailer
///   (gzip footer, final padded block, final record), then finishes the
///   inner writer, so that finishing the top of a stack finishes all of it.
///
/// Dropping an `EncodeWriter` without `finish` writes no trailer: the peer
/// sees a truncated stream, which is the right outcome for an aborted
/// transfer.
///
/// The bytes given to `write` may be a view of a memory-mapped file that
/// another process can change while the call runs (the data channel maps
/// files for downloads, like `sendfile`): read each input byte once, or
/// copy the input before looking at it twice (for example before
/// computing a checksum and then encrypting), so that the output is
/// always consistent with itself.
///
/// A codec that builds its output in a buffer of its own (a cipher, a
/// record sealer) should hand that buffer down with
/// [`write_owned`](EncodeWriter::write_owned) rather than `write`: under a
/// socket thread the buffer is then sent while the codec fills the next
/// one, without a copy.
pub trait EncodeWriter: Write + Send {
    /// Writes the trailer, flushes, and finishes the inner writer.
    fn finish(self: Box<Self>) -> io::Result<()>;

    /// Writes `buf[..len]` like `write_all`, taking the buffer itself, and
    /// returns a buffer of the same length (contents unspecified) for the
    /// caller to fill next.
    ///
    /// For codecs that produce their output in a buffer of their own (a
    /// cipher, a record sealer): a sink that writes the socket on another
    /// thread takes the buffer over and hands back one it has finished
    /// writing, so the codec works on the next buffer while the previous
    /// one is being sent, and no byte is copied in between. The default
    /// writes the bytes and returns `buf` itself. `len` larger than
    /// `buf.len()` is an `InvalidInput` error.
    fn write_owned(&mut self, buf: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
        let bytes = buf.get(..len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "write_owned: len beyond the buffer",
            )
        })?;
        self.write_all(bytes)?;
        Ok(buf)
    }
}

/// The bottom of a stack: any writer, with `finish` = `flush`.
///
/// ```
/// use std::io::Write;
/// use codec_api::{EncodeWriter, PlainSink};
/// let mut out = Vec::new();
/// let mut w: Box<dyn EncodeWriter + '_> = Box::new(PlainSink::new(&mut out));
/// w.write_all(b"abc").unwrap();
/// w.finish().unwrap();
/// assert_eq!(out, b"abc");
/// ```
#[derive(Debug)]
pub struct PlainSink<W>(W);

impl<W: Write + Send> PlainSink<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        PlainSink(inner)
    }

    /// Returns the wrapped writer.
    pub fn into_inner(self) -> W {
        self.0
    }
}

impl<W: Write + Send> Write for PlainSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> EncodeWriter for PlainSink<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

/// A stream codec: makes encoders and decoders for single TCP streams.
///
/// Implementations are factories (`Send + Sync`); all per-stream state
/// lives in the encoder/decoder they return. A codec instance may keep
/// state across the streams it makes (the ChaCha20-Poly1305 codec remembers
/// the salts it issued and accepted, so that a stream replayed within one
/// session is refused): use one instance (one `CodecStack`) per session and
/// side, not one shared by a sender and a receiver. See the
/// [crate documentation](crate) for a complete example.
pub trait StreamCodec: Send + Sync + fmt::Debug {
    /// The registered name, e.g. `"gzip"`, `"AES"`, `"BLOWFISH"`.
    fn name(&self) -> &'static str;

    /// Where the codec belongs in a stack.
    fn kind(&self) -> CodecKind;

    /// Checks key and options without building anything, so that a
    /// transfer request with e.g. a wrong-length key is refused when it
    /// arrives rather than when the data channel opens.
    fn validate(&self, params: &CodecParams) -> Result<(), CodecError>;

    /// Wraps `inner` (the next layer towards the socket) in an encoder.
    fn encoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn EncodeWriter + 'a>,
    ) -> Result<Box<dyn EncodeWriter + 'a>, CodecError>;

    /// Wraps `inner` (the next layer towards the socket) in a decoder.
    ///
    /// The decoder returns `Ok(0)` only at the verified end of the stream.
    /// Input that ends early fails with [`io::ErrorKind::UnexpectedEof`],
    /// corrupt input with [`io::ErrorKind::InvalidData`]; it never panics.
    fn decoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError>;
}

/// Errors when choosing, configuring or building a codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// No registered codec has this name.
    #[error("unknown codec '{0}'")]
    UnknownCodec(String),
    /// A codec was built against another version of this API.
    #[error("codec '{name}' was built for codec API {found}, this build has {expected}")]
    ApiMismatch {
        /// Codec name.
        name: &'static str,
        /// The plugin's API version.
        found: u32,
        /// [`API_VERSION`].
        expected: u32,
    },
    /// The codec needs a key and none was given.
    #[error("{codec}: a key is required")]
    MissingKey {
        /// Codec name.
        codec: &'static str,
    },
    /// The key has a length the codec cannot use.
    #[error("{codec}: invalid key length {len} bytes (expected {expected})")]
    InvalidKeyLength {
        /// Codec name.
        codec: &'static str,
        /// Length given.
        len: usize,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// An option has a value the codec cannot use.
    #[error("{codec}: invalid option {name}={value}: {reason}")]
    InvalidOption {
        /// Codec name.
        codec: &'static str,
        /// Option name.
        name: String,
        /// Option value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An I/O error while setting up (e.g. writing a salt).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<CodecError> for io::Error {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}

/// Static registration record of a codec plugin.
///
/// A plugin crate submits one per codec name:
///
/// ```
/// # use codec_api::{CodecDescriptor, CodecKind, StreamCodec};
/// # #[derive(Debug)] struct Mine;
/// # impl StreamCodec for Mine {
/// #   fn name(&self) -> &'static str { "mine" }
/// #   fn kind(&self) -> CodecKind { CodecKind::Compression }
/// #   fn validate(&self, _: &codec_api::CodecParams) -> Result<(), codec_api::CodecError> { Ok(()) }
/// #   fn encoder<'a>(&self, _: &codec_api::CodecParams, i: Box<dyn codec_api::EncodeWriter + 'a>)
/// #     -> Result<Box<dyn codec_api::EncodeWriter + 'a>, codec_api::CodecError> { Ok(i) }
/// #   fn decoder<'a>(&self, _: &codec_api::CodecParams, i: Box<dyn std::io::Read + Send + 'a>)
/// #     -> Result<Box<dyn std::io::Read + Send + 'a>, codec_api::CodecError> { Ok(i) }
/// # }
/// fn make() -> Box<dyn StreamCodec> { Box::new(Mine) }
/// inventory::submit! {
///     CodecDescriptor::new("mine", CodecKind::Compression, env!("CARGO_PKG_VERSION"), "my codec", make)
/// }
/// # fn main() {
/// assert_eq!(codec_api::lookup("MINE").unwrap().version, env!("CARGO_PKG_VERSION"));
/// # }
/// ```
#[derive(Debug)]
pub struct CodecDescriptor {
    /// Name looked up by [`lookup`] (case-insensitive), e.g. `"AES"`.
    pub name: &'static str,
    /// Where the codec belongs in a stack.
    pub kind: CodecKind,
    /// Version of the plugin crate.
    pub version: &'static str,
    /// [`API_VERSION`] the plugin was built against.
    pub api_version: u32,
    /// One line for logs and `--list-codecs` style output.
    pub summary: &'static str,
    /// Makes the codec.
    pub constructor: fn() -> Box<dyn StreamCodec>,
}

impl CodecDescriptor {
    /// A descriptor for the current [`API_VERSION`] (usable in
    /// `inventory::submit!`).
    pub const fn new(
        name: &'static str,
        kind: CodecKind,
        version: &'static str,
        summary: &'static str,
        constructor: fn() -> Box<dyn StreamCodec>,
    ) -> Self {
        CodecDescriptor {
            name,
            kind,
            version,
            api_version: API_VERSION,
            summary,
            constructor,
        }
    }

    /// Makes the codec.
    pub fn instantiate(&self) -> Box<dyn StreamCodec> {
        (self.constructor)()
    }
}

inventory::collect!(CodecDescriptor);

/// All codecs linked into this binary.
pub fn registered() -> impl Iterator<Item = &'static CodecDescriptor> {
    inventory::iter::<CodecDescriptor>.into_iter()
}

/// Finds a codec by name, ignoring ASCII case (`aes` = `AES`).
pub fn lookup(name: &str) -> Result<&'static CodecDescriptor, CodecError> {
    let d = registered()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| CodecError::UnknownCodec(name.to_owned()))?;
    if d.api_version != API_VERSION {
        return Err(CodecError::ApiMismatch {
            name: d.name,
            found: d.api_version,
            expected: API_VERSION,
        });
    }
    Ok(d)
}

/// Finds a codec by name and makes it.
pub fn codec(name: &str) -> Result<Box<dyn StreamCodec>, CodecError> {
    Ok(lookup(name)?.instantiate())
}

/// Checks that `key` is usable with the codec named `algo` (for the command
/// port: refuse a transfer request with a bad key when it arrives).
pub fn validate_key(algo: &str, key: &[u8]) -> Result<(), CodecError> {
    let c = codec(algo)?;
    c.validate(&CodecParams::new().with_key(key.to_vec()))
}

/// Reads into all of `buf` unless the stream ends first; returns how many
/// bytes were read (less than `buf.len()` only at the end). Retries
/// interrupted reads. For codecs that read whole records.
///
/// ```
/// let mut r: &[u8] = b"abc";
/// let mut buf = [0u8; 5];
/// assert_eq!(codec_api::read_full(&mut r, &mut buf).unwrap(), 3);
/// ```
pub fn read_full<R: std::io::Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// An optional engine of a codec plugin that is loaded at run time (a
/// system library found with `dlopen`) and checked once before use: the
/// first [`get`](Self::get) opens it, then runs the plugin's self-test;
/// both results are kept for the life of the process, so a library that
/// is missing or fails its test is not tried again, and every later caller
/// gets the same answer at once.
///
/// ```
/// use codec_api::CheckedEngine;
/// static ENGINE: CheckedEngine<u32> = CheckedEngine::new();
/// fn open() -> Result<u32, String> { Ok(7) }
/// fn check(v: &'static u32) -> Result<(), String> {
///     if *v == 7 { Ok(()) } else { Err("wrong answer".into()) }
/// }
/// assert_eq!(ENGINE.get(open, check), Ok(&7));
/// ```
#[derive(Debug)]
pub struct CheckedEngine<T: 'static> {
    opened: std::sync::OnceLock<Result<T, String>>,
    checked: std::sync::OnceLock<Result<(), String>>,
}

impl<T: 'static> CheckedEngine<T> {
    /// An engine not loaded yet (for a `static`).
    pub const fn new() -> Self {
        CheckedEngine {
            opened: std::sync::OnceLock::new(),
            checked: std::sync::OnceLock::new(),
        }
    }

    /// The engine, opened with `open` and tested with `check` the first
    /// time; `Err` says why it cannot be used.
    pub fn get(
        &'static self,
        open: fn() -> Result<T, String>,
        check: fn(&'static T) -> Result<(), String>,
    ) -> Result<&'static T, &'static str> {
        let engine = self
            .opened
            .get_or_init(open)
            .as_ref()
            .map_err(String::as_str)?;
        self.checked
            .get_or_init(|| check(engine))
            .as_ref()
            .map_err(String::as_str)?;
        Ok(engine)
    }
}

impl<T: 'static> Default for CheckedEngine<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Encodes all of `data` with `codec` into a new buffer and ends the
/// stream; with `flush_every`, flushes after each such many bytes (what a
/// sender that flushes between messages produces). For tools and tests
/// that encode a whole buffer.
pub fn encode_all(
    codec: &dyn StreamCodec,
    params: &CodecParams,
    data: &[u8],
    flush_every: Option<usize>,
) -> io::Result<Vec<u8>> {
    let mut wire = Vec::new();
    let mut enc = codec.encoder(params, Box::new(PlainSink::new(&mut wire)))?;
    match flush_every {
        None => enc.write_all(data)?,
        Some(n) => {
            for c in data.chunks(n.max(1)) {
                enc.write_all(c)?;
                enc.flush()?;
            }
        }
    }
    enc.finish()?;
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_orders_outermost_first() {
        let mut v = vec![CodecKind::Compression, CodecKind::Encryption];
        v.sort();
        assert_eq!(v, [CodecKind::Encryption, CodecKind::Compression]);
    }

    #[test]
    fn unknown_codec_is_typed_error() {
        match lookup("no-such-codec") {
            Err(CodecError::UnknownCodec(n)) => assert_eq!(n, "no-such-codec"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let k = SecretKey::new(b"topsecret".to_vec());
        let s = format!("{k:?}");
        assert!(!s.contains("topsecret"));
        assert!(s.contains("9 bytes"));
    }

    #[test]
    fn codec_error_maps_to_invalid_input() {
        let e: io::Error = CodecError::MissingKey { codec: "AES" }.into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e: io::Error = CodecError::Io(io::Error::other("x")).into();
        assert_eq!(e.kind(), io::ErrorKind::Other);
    }

    #[test]
    fn plain_sink_passes_through() {
        let mut out = Vec::new();
        let mut w: Box<dyn EncodeWriter + '_> = Box::new(PlainSink::new(&mut out));
        w.write_all(b"xyz").expect("write");
        w.finish().expect("finish");
        assert_eq!(out, b"xyz");
    }
}
