//! ChaCha20-Poly1305 authenticated record codec for uftpd: an extension
//! beyond UFTPD 3.x, negotiated with `algo=CHACHA20-POLY1305` and a 32-byte
//! `key` in the transfer request (the session's FEAT then lists
//! `CRYPTED-CHACHA20-POLY1305`; see the protocol book, "Extensions").
//!
//! # Wire format (one TCP stream of the data channel)
//!
//! ```text
//! stream  = header record* final-record
//! header  = version:u8 (= 0x01) | salt:16 bytes (random, fresh per stream)
//! record  = word:u32 big-endian | ciphertext | tag:16 bytes
//!           word bit 31   = F, the final flag (1 only on the last record)
//!           word bits 0-30 = L, the number of bytes that follow the word
//!                            (ciphertext + tag), 16 <= L <= 65536 + 16
//! ```
//!
//! * Session key `K`: the 32 bytes of the request's base64 `key`.
//! * Stream key: `HKDF-SHA256(ikm = K, salt = salt, info = "uftp
//!   chacha20-poly1305 stream <i>/<n>")`, 32 bytes, where `<i>` is the
//!   stream's index (0-based) and `<n>` the number of streams of the data
//!   channel, both in decimal ASCII (e.g. `uftp chacha20-poly1305 stream
//!   0/1`).
//! * Record `r` (0, 1, 2, ... in stream order) is ChaCha20-Poly1305 (RFC
//!   8439) under the stream key with the nonce = `r` as a 96-bit big-endian
//!   integer (4 zero bytes, then `r` as u64 big-endian) and the associated
//!   data = the record's 4-byte word as sent. A record holds at most 64 KiB
//!   ([`MAX_RECORD`]) of plaintext; a record may be empty (`L` = 16).
//! * The stream ends with exactly one record with `F` = 1 (possibly empty),
//!   and nothing follows it: the sender closes the stream.
//!
//! # What this gives
//!
//! * Integrity of every byte: a record whose tag does not verify (wrong key,
//!   a flipped bit, a record moved to another position or another stream, a
//!   changed length or final flag) fails with
//!   [`InvalidData`](std::io::ErrorKind::InvalidData) before any of its
//!   plaintext is handed out.
//! * Truncation detection: a stream that ends anywhere before the end of its
//!   final record, including exactly at a record boundary, fails with
//!   [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof); any byte after
//!   the final record is `InvalidData`.
//! * Nonces are never reused: every stream of every transfer has its own key
//!   (fresh random salt, and the stream index and count in the derivation),
//!   and within a stream the record counter only increases. A whole stream
//!   replayed onto another stream index or channel width fails
//!   authentication.
//! * Replays within a session: each codec instance (one per session's codec
//!   stack) remembers the last [`SALT_MEMORY`] salts it generated or
//!   accepted and refuses a stream that repeats one, so a stream recorded
//!   earlier in the same session (in either direction) cannot be
//!   substituted for a later one. A stream recorded in ANOTHER session with
//!   the same key (a persistent secret) is not caught: the receiver adds no
//!   randomness of its own to the stream.
//! * Not hidden: record sizes, hence the data's length and (with
//!   compression) something of its compressibility; the stream count.
//!
//! # Engines
//!
//! The AEAD runs on the system's OpenSSL libcrypto where it loads and
//! passes a self-test (`src/libcrypto.rs`: about 1.6 times ring's speed on
//! AVX-512 machines, and it seals from the caller's bytes), on ring
//! otherwise; the `engine` option ([`ENGINE_OPTION`], [`Engine`]) chooses.
//! The records are the same either way.
//!
//! ```
//! use std::io::{Read, Write};
//! use codec_api::{CodecParams, PlainSink};
//! use uftpd_chacha20poly1305 as _; // link the plugin so that its registration is seen
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = [7u8; 32];
//! codec_api::validate_key("CHACHA20-POLY1305", &key)?;
//! assert!(codec_api::validate_key("chacha20-poly1305", &key[..16]).is_err());
//!
//! let params = CodecParams::new().with_key(key.to_vec()).for_stream(0, 1);
//! let sender = codec_api::codec("CHACHA20-POLY1305")?;
//! let mut wire = Vec::new();
//! let mut enc = sender.encoder(&params, Box::new(PlainSink::new(&mut wire)))?;
//! enc.write_all(b"attack at dawn")?;
//! enc.finish()?;
//! // header (17) + one final record: word (4) + 14 bytes + tag (16)
//! assert_eq!(wire.len(), 17 + 4 + 14 + 16);
//! assert_eq!(wire[17] & 0x80, 0x80); // the final flag
//!
//! let receiver = codec_api::codec("CHACHA20-POLY1305")?;
//! let mut out = Vec::new();
//! receiver.decoder(&params, Box::new(&wire[..]))?.read_to_end(&mut out)?;
//! assert_eq!(out, b"attack at dawn");
//!
//! // Cut after the header (a record boundary): detected.
//! let receiver = codec_api::codec("CHACHA20-POLY1305")?;
//! let err = receiver.decoder(&params, Box::new(&wire[..17]))?
//!     .read_to_end(&mut Vec::new()).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
//! # Ok(()) }
//! ```

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use codec_api::{
    CodecDescriptor, CodecError, CodecKind, CodecParams, EncodeWriter, StreamCodec, read_full,
};
use hkdf::Hkdf;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use sha2::Sha256;
use zeroize::Zeroizing;

mod libcrypto;

/// Registered name of this codec (and the `algo=` value that selects it).
pub const NAME: &str = "CHACHA20-POLY1305";

/// Length of the session key (the request's `key`, base64-decoded).
pub const KEY_LEN: usize = 32;

/// Format version, the first byte of every stream.
pub const VERSION: u8 = 1;

/// Length of the random salt that follows the version byte.
pub const SALT_LEN: usize = 16;

/// Length of the stream header (version + salt).
pub const HEADER_LEN: usize = 1 + SALT_LEN;

/// Most plaintext bytes in one record (64 KiB).
pub const MAX_RECORD: usize = 64 * 1024;

/// Length of the Poly1305 tag at the end of every record.
pub const TAG_LEN: usize = 16;

/// Bit of the record word that marks the final record.
pub const FINAL_FLAG: u32 = 1 << 31;

/// How many salts a codec instance remembers to refuse replayed streams.
pub const SALT_MEMORY: usize = 65_536;

/// The HKDF `info` of stream `index` of `count`.
///
/// ```
/// assert_eq!(uftpd_chacha20poly1305::stream_info(2, 4), "uftp chacha20-poly1305 stream 2/4");
/// ```
pub fn stream_info(index: u32, count: u32) -> String {
    format!("uftp chacha20-poly1305 stream {index}/{count}")
}

/// Derives the key of one stream: HKDF-SHA256 with the session key as input
/// key material, the stream's salt, and [`stream_info`] as info.
pub fn derive_stream_key(
    session_key: &[u8],
    salt: &[u8; SALT_LEN],
    index: u32,
    count: u32,
) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), session_key);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let _ = hk.expand(stream_info(index, count).as_bytes(), &mut okm[..]);
    okm
}

/// The nonce of record number `counter`: a 96-bit big-endian integer.
pub fn record_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Salts seen by one codec instance (generated by its encoders or accepted
/// by its decoders), oldest forgotten first.
#[derive(Default)]
struct SaltMemory {
    set: HashSet<[u8; SALT_LEN]>,
    order: VecDeque<[u8; SALT_LEN]>,
}

impl SaltMemory {
    /// Records `salt`; `false` if it was seen before.
    fn insert(&mut self, salt: [u8; SALT_LEN]) -> bool {
        if !self.set.insert(salt) {
            return false;
        }
        self.order.push_back(salt);
        if self.order.len() > SALT_MEMORY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

type Salts = Arc<Mutex<SaltMemory>>;

fn remember(salts: &Salts, salt: [u8; SALT_LEN]) -> bool {
    salts.lock().unwrap_or_else(|p| p.into_inner()).insert(salt)
}

/// The ChaCha20-Poly1305 codec.
///
/// A factory like every codec, with one piece of shared state: the salts
/// its encoders and decoders have used (see the crate documentation on
/// replays). A session builds its codec stack once, so one instance serves
/// all transfers of a session.
#[derive(Clone, Default)]
pub struct ChaCha20Poly1305Codec {
    salts: Salts,
}

impl fmt::Debug for ChaCha20Poly1305Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaCha20Poly1305Codec")
    }
}

fn new_codec() -> Box<dyn StreamCodec> {
    Box::new(ChaCha20Poly1305Codec::default())
}

const fn descriptor() -> CodecDescriptor {
    CodecDescriptor::new(
        NAME,
        CodecKind::Encryption,
        env!("CARGO_PKG_VERSION"),
        "ChaCha20-Poly1305 records, per-stream HKDF keys, final record (extension, authenticated)",
        new_codec,
    )
}

/// The registration record of this codec (the same one is submitted to the
/// `codec-api` registry; referencing this static also keeps the crate
/// linked).
pub static DESCRIPTOR: CodecDescriptor = descriptor();

inventory::submit!(descriptor());

/// The session key of `params`, checked.
fn session_key(params: &CodecParams) -> Result<&[u8], CodecError> {
    let key = params
        .key_bytes()
        .ok_or(CodecError::MissingKey { codec: NAME })?;
    if key.len() != KEY_LEN {
        return Err(CodecError::InvalidKeyLength {
            codec: NAME,
            len: key.len(),
            expected: "32 bytes",
        });
    }
    Ok(key)
}

/// Codec option that chooses the implementation of the AEAD (the wire
/// format is the same): `auto` (the default: OpenSSL's libcrypto when the
/// system has a usable one, ring otherwise), `ring`, or `libcrypto`.
pub const ENGINE_OPTION: &str = "engine";

/// An implementation of ChaCha20-Poly1305 (see [`ENGINE_OPTION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// libcrypto when it loads and passes its self-test, else ring.
    Auto,
    /// ring (BoringSSL's assembly, linked in).
    Ring,
    /// The system's OpenSSL libcrypto (1.1.1 or 3.x), loaded at run time;
    /// an error if there is none that passes the self-test.
    Libcrypto,
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Engine::Auto),
            "ring" => Ok(Engine::Ring),
            "libcrypto" | "openssl" => Ok(Engine::Libcrypto),
            _ => Err(format!(
                "unknown engine '{s}': expected auto, ring or libcrypto"
            )),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Auto => "auto",
            Engine::Ring => "ring",
            Engine::Libcrypto => "libcrypto",
        })
    }
}

impl Engine {
    /// The engine `self` resolves to on this machine, described for
    /// admins (`uftpd check-config`): e.g. `libcrypto (OpenSSL 3.0.15 3
    /// Sep 2024)` or `ring (libcrypto: no OpenSSL libcrypto (...))`;
    /// `Err` if `self` is [`Engine::Libcrypto`] and it cannot be used.
    pub fn describe(self) -> Result<String, String> {
        match (self, libcrypto::load()) {
            (Engine::Ring, _) => Ok("ring".into()),
            (_, Ok(api)) => Ok(format!("libcrypto ({})", api.version)),
            (Engine::Auto, Err(why)) => Ok(format!("ring (libcrypto: {why})")),
            (Engine::Libcrypto, Err(why)) => Err(why.to_string()),
        }
    }
}

fn engine_of(params: &CodecParams) -> Result<Engine, CodecError> {
    params.choice_option(NAME, ENGINE_OPTION, Engine::Auto, |e| match e {
        Engine::Libcrypto => libcrypto::load().map(drop).map_err(str::to_string),
        Engine::Auto | Engine::Ring => Ok(()),
    })
}

/// The AEAD of one direction of one stream.
///
/// - ring: BoringSSL's AVX2 assembly, about twice the speed of the portable
///   RustCrypto crate on x86-64; seals in place only. ring does not wipe
///   the expanded key when it is dropped; the stream key lives only in the
///   session process of the user it protects.
/// - libcrypto: OpenSSL's routines (AVX-512 where the CPU has it), about
///   1.6x ring's speed on such machines, and seals from the caller's bytes
///   into the record; freeing the context cleanses the key.
enum Aead {
    Ring(Box<LessSafeKey>),
    Libcrypto(libcrypto::EvpAead),
}

impl Aead {
    fn new(engine: Engine, stream_key: &[u8; 32], seal: bool) -> Result<Aead, CodecError> {
        let api = match engine {
            Engine::Ring => None,
            Engine::Auto => libcrypto::load().ok(),
            Engine::Libcrypto => {
                Some(libcrypto::load().map_err(|why| CodecError::InvalidOption {
                    codec: NAME,
                    name: ENGINE_OPTION.into(),
                    value: engine.to_string(),
                    reason: why.to_string(),
                })?)
            }
        };
        if let Some(api) = api {
            return libcrypto::EvpAead::new(api, stream_key, seal)
                .map(Aead::Libcrypto)
                .map_err(|e| CodecError::Io(io::Error::other(format!("{NAME}: {e}"))));
        }
        UnboundKey::new(&CHACHA20_POLY1305, stream_key)
            .map(|k| Aead::Ring(Box::new(LessSafeKey::new(k))))
            .map_err(|_| CodecError::InvalidKeyLength {
                codec: NAME,
                len: stream_key.len(),
                expected: "32 bytes",
            })
    }

    /// Seals `input` into `msg` (same length), or `msg` in place.
    fn seal(
        &mut self,
        nonce: [u8; 12],
        aad: &[u8; 4],
        input: Option<&[u8]>,
        msg: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ()> {
        match self {
            Aead::Libcrypto(c) => c.seal(&nonce, aad, input, msg),
            Aead::Ring(k) => {
                if let Some(input) = input {
                    // ring seals in place: one memcpy of the record
                    msg.copy_from_slice(input);
                }
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(*aad),
                        msg,
                    )
                    .map_err(|_| ())?;
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                Ok(out)
            }
        }
    }

    /// Opens `msg` in place; `Err` if the tag does not verify.
    fn open(
        &mut self,
        nonce: [u8; 12],
        aad: &[u8; 4],
        msg: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        match self {
            Aead::Libcrypto(c) => c.open(&nonce, aad, msg, tag),
            Aead::Ring(k) => {
                let tag = Tag::try_from(&tag[..]).map_err(|_| ())?;
                k.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(*aad),
                    tag,
                    msg,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| ())
            }
        }
    }
}

impl StreamCodec for ChaCha20Poly1305Codec {
    fn name(&self) -> &'static str {
        NAME
    }

    fn kind(&self) -> CodecKind {
        CodecKind::Encryption
    }

    fn validate(&self, params: &CodecParams) -> Result<(), CodecError> {
        session_key(params)?;
        engine_of(params).map(|_| ())
    }

    fn encoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn EncodeWriter + 'a>,
    ) -> Result<Box<dyn EncodeWriter + 'a>, CodecError> {
        let key = session_key(params)?;
        let engine = engine_of(params)?;
        let mut salt = [0u8; SALT_LEN];
        loop {
            getrandom::fill(&mut salt).map_err(|e| {
                CodecError::Io(io::Error::other(format!(
                    "{NAME}: no random salt from the operating system: {e}"
                )))
            })?;
            // A repeat of a 128-bit random salt does not happen; if the
            // random source were broken, refuse to reuse a key.
            if remember(&self.salts, salt) {
                break;
            }
        }
        let stream_key = derive_stream_key(key, &salt, params.stream_index, params.stream_count);
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..].copy_from_slice(&salt);
        Ok(Box::new(SealWriter::new(
            Aead::new(engine, &stream_key, true)?,
            inner,
            header,
        )))
    }

    fn decoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
        let key = session_key(params)?;
        let engine = engine_of(params)?;
        let mut session = Zeroizing::new([0u8; KEY_LEN]);
        session.copy_from_slice(key);
        Ok(Box::new(OpenReader {
            inner,
            session,
            index: params.stream_index,
            count: params.stream_count,
            salts: self.salts.clone(),
            engine,
            aead: None,
            rec: vec![0; MAX_RECORD + TAG_LEN],
            pos: 0,
            len: 0,
            counter: 0,
            state: ReadState::Header,
        }))
    }
}

fn broken() -> io::Error {
    io::Error::other(format!(
        "{NAME}: stream unusable after an earlier write error"
    ))
}

/// Records sealed into one output buffer before it is handed on: a socket
/// thread under the codec (see `EncodeWriter::write_owned`) then wakes once
/// per 256 KiB, not once per record.
const OUT_RECORDS: usize = 4;

/// Room one record takes in the output buffer: `word | plaintext | tag`.
const RECORD_SPACE: usize = 4 + MAX_RECORD + TAG_LEN;

/// Encrypting writer. Its output buffer holds the stream header (until it
/// is written) and the records sealed so far, followed by the record being
/// filled, laid out as `word | plaintext | tag` and sealed in place when
/// full (or on flush or finish). The buffer goes to the inner writer when
/// it has no room for another record, on flush and on finish.
struct SealWriter<'a> {
    aead: Aead,
    inner: Box<dyn EncodeWriter + 'a>,
    out: Vec<u8>,
    /// Bytes of `out` ready to be written (header and sealed records); the
    /// record being filled starts here.
    done: usize,
    /// Plaintext bytes pending in `out[done + 4..done + 4 + fill]`.
    fill: usize,
    counter: u64,
    broken: bool,
}

impl SealWriter<'_> {
    fn new<'a>(
        aead: Aead,
        inner: Box<dyn EncodeWriter + 'a>,
        header: [u8; HEADER_LEN],
    ) -> SealWriter<'a> {
        let mut out = vec![0; HEADER_LEN + OUT_RECORDS * RECORD_SPACE];
        out[..HEADER_LEN].copy_from_slice(&header);
        SealWriter {
            aead,
            inner,
            out,
            done: HEADER_LEN,
            fill: 0,
            counter: 0,
            broken: false,
        }
    }

    /// Hands `out[..done]` to the inner writer, which gives back a buffer
    /// to fill next. Only with no record being filled.
    fn write_out(&mut self) -> io::Result<()> {
        debug_assert_eq!(self.fill, 0);
        if self.done == 0 {
            return Ok(());
        }
        let size = self.out.len();
        let len = std::mem::replace(&mut self.done, 0);
        match self.inner.write_owned(std::mem::take(&mut self.out), len) {
            Ok(mut out) => {
                if out.len() < size {
                    out.resize(size, 0);
                }
                self.out = out;
                Ok(())
            }
            Err(e) => {
                // Every later call fails before touching `out`.
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Makes room for a whole record at `done` (with none being filled).
    fn room(&mut self) -> io::Result<()> {
        if self.out.len() - self.done < RECORD_SPACE {
            self.write_out()?;
        }
        Ok(())
    }

    /// Seals one record: the pending plaintext (`input` = `None`) or
    /// `input` (nothing pending).
    fn seal(&mut self, input: Option<&[u8]>, last: bool) -> io::Result<()> {
        if self.fill == 0 {
            self.room()?;
        }
        let n = input.map_or(self.fill, <[u8]>::len);
        debug_assert!(n <= MAX_RECORD);
        let word = (n + TAG_LEN) as u32 | if last { FINAL_FLAG } else { 0 };
        let nonce = record_nonce(self.counter);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other(format!("{NAME}: record counter exhausted")))?;
        let (head, body) = self.out[self.done..].split_at_mut(4);
        let word = word.to_be_bytes();
        head.copy_from_slice(&word);
        let (msg, rest) = body.split_at_mut(n);
        let tag = self.aead.seal(nonce, &word, input, msg).map_err(|()| {
            self.broken = true;
            io::Error::other(format!("{NAME}: record could not be sealed"))
        })?;
        rest[..TAG_LEN].copy_from_slice(&tag);
        self.fill = 0;
        self.done += 4 + n + TAG_LEN;
        // A full buffer goes out now, while the next one is being filled.
        self.room()
    }
}

impl Write for SealWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(broken());
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.fill == 0 && rest.len() >= MAX_RECORD {
                let (rec, tail) = rest.split_at(MAX_RECORD);
                self.seal(Some(rec), false)?;
                rest = tail;
                continue;
            }
            if self.fill == 0 {
                self.room()?;
            }
            let take = (MAX_RECORD - self.fill).min(rest.len());
            let at = self.done + 4 + self.fill;
            self.out[at..at + take].copy_from_slice(&rest[..take]);
            self.fill += take;
            rest = &rest[take..];
            if self.fill == MAX_RECORD {
                self.seal(None, false)?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        if self.fill > 0 {
            self.seal(None, false)?;
        }
        self.write_out()?;
        self.inner.flush()
    }
}

impl EncodeWriter for SealWriter<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        self.seal(None, true)?;
        self.write_out()?;
        self.inner.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// The stream header is still to be read.
    Header,
    /// Records follow.
    Records,
    /// The final record was verified and the stream ended after it.
    Done,
    /// An error was reported; nothing more comes out.
    Failed,
}

/// Decrypting reader: reads one record at a time, verifies its tag, and
/// hands out its plaintext only then.
struct OpenReader<'a> {
    inner: Box<dyn Read + Send + 'a>,
    session: Zeroizing<[u8; KEY_LEN]>,
    index: u32,
    count: u32,
    salts: Salts,
    engine: Engine,
    aead: Option<Aead>,
    /// Ciphertext of the current record; after verification, its
    /// plaintext in `rec[pos..len]`.
    rec: Vec<u8>,
    pos: usize,
    len: usize,
    counter: u64,
    state: ReadState,
}

fn eof(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("{NAME}: {msg}"))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{NAME}: {msg}"))
}

impl OpenReader<'_> {
    fn read_header(&mut self) -> io::Result<()> {
        let mut h = [0u8; HEADER_LEN];
        let got = read_full(&mut *self.inner, &mut h)?;
        if got == 0 {
            return Err(eof("no data (missing the stream header)".into()));
        }
        if got < HEADER_LEN {
            return Err(eof(format!(
                "stream ended inside its header ({got} of {HEADER_LEN} bytes)"
            )));
        }
        if h[0] != VERSION {
            return Err(invalid(format!(
                "unknown format version {:#04x} (not a {NAME} stream, or the peer uses another version)",
                h[0]
            )));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&h[1..]);
        if !remember(&self.salts, salt) {
            return Err(invalid(
                "the stream repeats a salt already used in this session (replayed stream)".into(),
            ));
        }
        let key = derive_stream_key(&self.session[..], &salt, self.index, self.count);
        self.aead = Some(Aead::new(self.engine, &key, false).map_err(io::Error::from)?);
        self.state = ReadState::Records;
        Ok(())
    }

    /// Reads and verifies the next record. With `direct`, a record whose
    /// plaintext fits is decrypted straight into it and its length
    /// returned; otherwise the plaintext is left in `rec[pos..len]` and 0
    /// returned.
    fn next_record(&mut self, direct: &mut [u8]) -> io::Result<usize> {
        let r = self.counter;
        let mut w = [0u8; 4];
        match read_full(&mut *self.inner, &mut w)? {
            4 => {}
            0 => {
                return Err(eof(format!(
                    "stream ended after {r} records without the final record (truncated)"
                )));
            }
            k => {
                return Err(eof(format!(
                    "stream ended inside the word of record {r} ({k} of 4 bytes)"
                )));
            }
        }
        let word = u32::from_be_bytes(w);
        let last = word & FINAL_FLAG != 0;
        let l = (word & !FINAL_FLAG) as usize;
        if !(TAG_LEN..=MAX_RECORD + TAG_LEN).contains(&l) {
            return Err(invalid(format!(
                "record {r} has length {l} (must be {TAG_LEN}..={})",
                MAX_RECORD + TAG_LEN
            )));
        }
        // A record that fits the caller's buffer whole (ciphertext and tag)
        // is read and opened there: no copy. Its bytes count as data only
        // once the tag has been verified (Ok(n) below); on any error the
        // caller gets the error, never the buffer.
        let into_caller = direct.len() >= l;
        let buf = if into_caller {
            &mut direct[..l]
        } else {
            &mut self.rec[..l]
        };
        let got = read_full(&mut *self.inner, buf)?;
        if got < l {
            return Err(eof(format!(
                "stream ended inside record {r} ({got} of {l} bytes)"
            )));
        }
        let n = l - TAG_LEN;
        let Some(aead) = &mut self.aead else {
            return Err(invalid("record before the stream header".into()));
        };
        let (msg, tag) = buf.split_at_mut(n);
        let tag: &[u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| invalid("bad tag length".into()))?;
        let opened = aead.open(record_nonce(r), &w, msg, tag);
        if opened.is_err() {
            return Err(invalid(format!(
                "record {r} failed authentication (wrong key, or corrupt, reordered, \
                 replayed or truncated data)"
            )));
        }
        self.counter = r
            .checked_add(1)
            .ok_or_else(|| invalid("record counter exhausted".into()))?;
        if last {
            let mut probe = [0u8; 1];
            if read_full(&mut *self.inner, &mut probe)? != 0 {
                return Err(invalid(format!("data after the final record ({r})")));
            }
            self.state = ReadState::Done;
        }
        if into_caller {
            Ok(n)
        } else {
            self.pos = 0;
            self.len = n;
            Ok(0)
        }
    }
}

impl Read for OpenReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.len {
                let k = (self.len - self.pos).min(out.len());
                out[..k].copy_from_slice(&self.rec[self.pos..self.pos + k]);
                self.pos += k;
                return Ok(k);
            }
            let step = match self.state {
                ReadState::Done => return Ok(0),
                ReadState::Failed => {
                    return Err(invalid("stream unusable after an earlier error".into()));
                }
                ReadState::Header => self.read_header().map(|()| 0),
                ReadState::Records => self.next_record(out),
            };
            match step {
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) => {
                    self.state = ReadState::Failed;
                    self.pos = 0;
                    self.len = 0;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec_api::PlainSink;

    const KEY: [u8; 32] = [0x42; 32];

    fn params(i: u32, n: u32) -> CodecParams {
        CodecParams::new().with_key(KEY.to_vec()).for_stream(i, n)
    }

    fn encode(data: &[u8]) -> Vec<u8> {
        encode_with(&ChaCha20Poly1305Codec::default(), &params(0, 1), data)
    }

    fn encode_with(c: &ChaCha20Poly1305Codec, p: &CodecParams, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut enc = c
            .encoder(p, Box::new(PlainSink::new(&mut wire)))
            .expect("encoder");
        enc.write_all(data).expect("write");
        enc.finish().expect("finish");
        wire
    }

    fn decode_with(p: &CodecParams, wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChaCha20Poly1305Codec::default()
            .decoder(p, Box::new(wire))
            .expect("decoder")
            .read_to_end(&mut out)?;
        Ok(out)
    }

    fn decode(wire: &[u8]) -> io::Result<Vec<u8>> {
        decode_with(&params(0, 1), wire)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Offsets where records start (after the header) and the record words.
    fn records(wire: &[u8]) -> Vec<(usize, u32)> {
        let mut v = Vec::new();
        let mut p = HEADER_LEN;
        while p < wire.len() {
            let w = u32::from_be_bytes([wire[p], wire[p + 1], wire[p + 2], wire[p + 3]]);
            v.push((p, w));
            p += 4 + (w & !FINAL_FLAG) as usize;
        }
        assert_eq!(p, wire.len());
        v
    }

    #[test]
    fn key_rules() {
        let c = ChaCha20Poly1305Codec::default();
        for n in 0..80 {
            let p = CodecParams::new().with_key(vec![1; n]);
            assert_eq!(c.validate(&p).is_ok(), n == 32, "{n}");
        }
        assert!(matches!(
            c.validate(&CodecParams::new()),
            Err(CodecError::MissingKey { .. })
        ));
        let e = codec_api::validate_key(NAME, &[0; 16]).expect_err("16 bytes");
        assert_eq!(
            e.to_string(),
            "CHACHA20-POLY1305: invalid key length 16 bytes (expected 32 bytes)"
        );
    }

    #[test]
    fn hkdf_matches_rfc5869_construction() {
        // RFC 5869 A.1 checks the HKDF implementation itself.
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let hk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
        let mut okm = [0u8; 42];
        hk.expand(&info, &mut okm).expect("expand");
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        // Our derivation is exactly HKDF-SHA256(K, salt, info).
        let salt = [9u8; SALT_LEN];
        let k = derive_stream_key(&KEY, &salt, 1, 3);
        let hk = Hkdf::<Sha256>::new(Some(&salt), &KEY);
        let mut want = [0u8; 32];
        hk.expand(b"uftp chacha20-poly1305 stream 1/3", &mut want)
            .expect("expand");
        assert_eq!(*k, want);
        assert_ne!(*derive_stream_key(&KEY, &salt, 0, 3), want);
        assert_ne!(*derive_stream_key(&KEY, &salt, 1, 4), want);
    }

    #[test]
    fn aead_matches_rfc8439() {
        // RFC 8439 2.8.2 test vector through the same cipher calls, with
        // each engine, sealing out of place and in place.
        let key: Vec<u8> = (0x80u8..=0x9f).collect();
        let nonce: [u8; 12] = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut k = [0u8; 32];
        k.copy_from_slice(&key);
        for engine in engines() {
            for in_place in [false, true] {
                // The AAD of the vector is 12 bytes; records use 4.
                let aad = [
                    0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
                ];
                let mut c = Aead::new(engine, &k, true).expect("key");
                let mut msg = if in_place {
                    text.to_vec()
                } else {
                    vec![0; text.len()]
                };
                let tag = match &mut c {
                    Aead::Ring(k) => {
                        msg.copy_from_slice(text);
                        let t = k
                            .seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(nonce),
                                Aad::from(aad),
                                &mut msg[..],
                            )
                            .expect("seal");
                        t.as_ref().to_vec()
                    }
                    Aead::Libcrypto(e) => e
                        .seal(&nonce, &aad, (!in_place).then_some(&text[..]), &mut msg)
                        .expect("seal")
                        .to_vec(),
                };
                assert_eq!(
                    hex(&msg[..16]),
                    "d31a8d34648e60db7b86afbc53ef7ec2",
                    "{engine}"
                );
                assert_eq!(hex(&tag), "1ae10b594f09e26a7e902ecbd0600691", "{engine}");
            }
        }
        assert_eq!(hex(&record_nonce(0x0102)), "000000000000000000000102");
    }

    /// Both engines; libcrypto must load here (the `openssl` package, which
    /// CI installs) unless UFTPD_TEST_WITHOUT_LIBCRYPTO=1 says to test ring
    /// alone.
    fn engines() -> Vec<Engine> {
        match Engine::Libcrypto.describe() {
            Ok(_) => vec![Engine::Ring, Engine::Libcrypto],
            Err(why) if std::env::var_os("UFTPD_TEST_WITHOUT_LIBCRYPTO").is_some() => {
                eprintln!("testing ring only: {why}");
                vec![Engine::Ring]
            }
            Err(why) => panic!(
                "libcrypto engine unusable: {why} (install libssl3, or set \
                 UFTPD_TEST_WITHOUT_LIBCRYPTO=1)"
            ),
        }
    }

    fn with_engine(p: CodecParams, e: Engine) -> CodecParams {
        p.with_option(ENGINE_OPTION, e.to_string())
    }

    #[test]
    fn engines_make_the_same_records_and_read_each_other() {
        // Same stream key, same records: the two engines are byte-identical
        // (sealed out of place, as downloads do, and in place from partial
        // writes); a stream sealed by either opens with either, and a
        // changed byte fails with either.
        let es = engines();
        let key = [9u8; 32];
        let mut sealers: Vec<Aead> = es
            .iter()
            .map(|&e| Aead::new(e, &key, true).expect("aead"))
            .collect();
        for (r, len) in [0usize, 5, 64, 4096, MAX_RECORD].into_iter().enumerate() {
            let plain = data(len);
            let word = (len as u32).to_be_bytes();
            let nonce = record_nonce(r as u64);
            let mut outs = Vec::new();
            for s in &mut sealers {
                let mut a = vec![0u8; len];
                let ta = s.seal(nonce, &word, Some(&plain), &mut a).expect("seal");
                outs.push((a, ta));
            }
            for (a, ta) in &outs[1..] {
                assert_eq!(
                    (a, ta),
                    (&outs[0].0, &outs[0].1),
                    "record {r} of {len} bytes"
                );
            }
            for &e in &es {
                let mut opener = Aead::new(e, &key, false).expect("aead");
                let mut m = outs[0].0.clone();
                opener
                    .open(nonce, &word, &mut m, &outs[0].1)
                    .expect("opens");
                assert_eq!(m, plain);
                let mut bad = outs[0].1;
                bad[0] ^= 0x80;
                let mut m = outs[0].0.clone();
                assert!(
                    Aead::new(e, &key, false)
                        .expect("aead")
                        .open(nonce, &word, &mut m, &bad)
                        .is_err()
                );
            }
        }
        let d = data(3 * MAX_RECORD + 12_345);
        for &from in &es {
            let wire = encode_with(
                &ChaCha20Poly1305Codec::default(),
                &with_engine(params(0, 1), from),
                &d,
            );
            for &to in &es {
                assert_eq!(
                    decode_with(&with_engine(params(0, 1), to), &wire).expect("decodes"),
                    d
                );
                let mut bad = wire.clone();
                let at = bad.len() / 2;
                bad[at] ^= 1;
                let e = decode_with(&with_engine(params(0, 1), to), &bad).expect_err("tampered");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn engine_option() {
        let c = ChaCha20Poly1305Codec::default();
        assert_eq!("AUTO".parse::<Engine>(), Ok(Engine::Auto));
        assert_eq!("openssl".parse::<Engine>(), Ok(Engine::Libcrypto));
        let bad = params(0, 1).with_option(ENGINE_OPTION, "fastest");
        let e = c.validate(&bad).expect_err("unknown engine").to_string();
        assert!(
            e.contains("fastest") && e.contains("auto, ring or libcrypto"),
            "{e}"
        );
        assert!(
            c.encoder(&bad, Box::new(PlainSink::new(Vec::new())))
                .is_err()
        );
        c.validate(&with_engine(params(0, 1), Engine::Ring))
            .expect("ring");
        assert_eq!(Engine::Ring.describe().as_deref(), Ok("ring"));
        let auto = Engine::Auto.describe().expect("auto always works");
        assert!(
            auto.starts_with("libcrypto (OpenSSL") || auto.starts_with("ring (libcrypto: "),
            "{auto}"
        );
        if engines().len() == 2 {
            assert!(auto.starts_with("libcrypto (OpenSSL"), "{auto}");
            c.validate(&with_engine(params(0, 1), Engine::Libcrypto))
                .expect("libcrypto");
        }
    }

    #[test]
    fn records_open_with_an_independent_implementation() {
        // Every record of our stream opens with RustCrypto's
        // chacha20poly1305 (a second, independent implementation) under
        // the derived stream key, the record word as AAD and the counter
        // nonce, and its plaintexts concatenate to the input.
        use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
        let d = data(2 * MAX_RECORD + 777);
        let wire = encode(&d);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&wire[1..HEADER_LEN]);
        let key = derive_stream_key(&KEY, &salt, 0, 1);
        let other = ChaCha20Poly1305::new_from_slice(&key[..]).expect("key");
        let mut plain = Vec::new();
        for (i, (p, w)) in records(&wire).into_iter().enumerate() {
            let l = (w & !FINAL_FLAG) as usize;
            let nonce = chacha20poly1305::Nonce::from(record_nonce(i as u64));
            let mut msg = wire[p + 4..p + 4 + l - TAG_LEN].to_vec();
            let tag = chacha20poly1305::Tag::try_from(&wire[p + 4 + l - TAG_LEN..p + 4 + l])
                .expect("tag");
            other
                .decrypt_inout_detached(&nonce, &w.to_be_bytes(), (&mut msg[..]).into(), &tag)
                .expect("opens");
            plain.extend_from_slice(&msg);
        }
        assert_eq!(plain, d);
    }

    #[test]
    fn layout_header_records_final() {
        let d = data(3 * MAX_RECORD + 100);
        let wire = encode(&d);
        assert_eq!(wire[0], VERSION);
        let recs = records(&wire);
        let lens: Vec<u32> = recs.iter().map(|r| r.1).collect();
        let full = (MAX_RECORD + TAG_LEN) as u32;
        assert_eq!(
            lens,
            [full, full, full, FINAL_FLAG | (100 + TAG_LEN as u32)]
        );
        assert_eq!(decode(&wire).expect("decode"), d);
        // exactly full records: an empty final record follows
        let wire = encode(&data(MAX_RECORD));
        let lens: Vec<u32> = records(&wire).iter().map(|r| r.1).collect();
        assert_eq!(lens, [full, FINAL_FLAG | TAG_LEN as u32]);
        // empty data: header + an empty final record
        let wire = encode(b"");
        assert_eq!(wire.len(), HEADER_LEN + 4 + TAG_LEN);
        assert_eq!(decode(&wire).expect("decode"), b"");
    }

    #[test]
    fn fresh_salt_and_key_per_stream() {
        let a = encode(b"same data");
        let b = encode(b"same data");
        assert_ne!(a[1..HEADER_LEN], b[1..HEADER_LEN]);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn truncation_anywhere_is_an_error() {
        let d = data(2 * MAX_RECORD + 5000);
        let c = ChaCha20Poly1305Codec::default();
        let wire = encode_with(&c, &params(0, 1), &d);
        let boundaries: Vec<usize> = records(&wire).iter().map(|r| r.0).collect();
        // every record boundary (and the header's end)
        for &cut in &boundaries {
            let e = decode(&wire[..cut]).expect_err("boundary");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}: {e}");
            assert!(e.to_string().contains("without the final record"), "{e}");
        }
        // and a sample of other places
        for cut in (0..wire.len())
            .step_by(997)
            .chain([1, 16, 17, 18, 20, wire.len() - 1])
        {
            let e = decode(&wire[..cut]).expect_err("cut");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}: {e}");
        }
    }

    #[test]
    fn tampering_is_invalid_data() {
        let d = data(MAX_RECORD + 1000);
        let wire = encode(&d);
        let recs = records(&wire);
        // a flipped bit anywhere after the version byte
        for pos in (1..wire.len())
            .step_by(641)
            .chain([recs[1].0, recs[1].0 + 3])
        {
            let mut w = wire.clone();
            w[pos] ^= 0x01;
            let e = decode(&w).expect_err("tampered");
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "pos {pos}: {e}"
            );
        }
        // the final flag moved to the first record, cutting the rest: tag fails
        let mut w = wire[..recs[1].0].to_vec();
        w[recs[0].0] |= 0x80;
        let e = decode(&w).expect_err("forged final");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("authentication"), "{e}");
        // trailing garbage after the final record
        let mut w = wire.clone();
        w.push(0);
        assert_eq!(
            decode(&w).expect_err("trailing").kind(),
            io::ErrorKind::InvalidData
        );
        // wrong key
        let p = CodecParams::new().with_key(vec![0x43; 32]);
        assert_eq!(
            decode_with(&p, &wire).expect_err("key").kind(),
            io::ErrorKind::InvalidData
        );
        // unknown version
        let mut w = wire.clone();
        w[0] = 2;
        assert_eq!(
            decode(&w).expect_err("version").kind(),
            io::ErrorKind::InvalidData
        );
        // oversized length word
        let mut w = wire[..HEADER_LEN].to_vec();
        w.extend_from_slice(&((MAX_RECORD + TAG_LEN + 1) as u32).to_be_bytes());
        assert_eq!(
            decode(&w).expect_err("length").kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn reordered_records_fail() {
        let d = data(3 * MAX_RECORD);
        let wire = encode(&d);
        let recs = records(&wire);
        let seg = |k: usize| {
            let end = recs.get(k + 1).map_or(wire.len(), |r| r.0);
            &wire[recs[k].0..end]
        };
        let mut w = wire[..HEADER_LEN].to_vec();
        w.extend_from_slice(seg(1));
        w.extend_from_slice(seg(0));
        w.extend_from_slice(seg(2));
        w.extend_from_slice(seg(3));
        let e = decode(&w).expect_err("reordered");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // a record repeated
        let mut w = wire[..HEADER_LEN].to_vec();
        w.extend_from_slice(seg(0));
        w.extend_from_slice(seg(0));
        assert_eq!(
            decode(&w).expect_err("repeated").kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn stream_replayed_on_other_index_or_width_fails() {
        let wire = encode_with(
            &ChaCha20Poly1305Codec::default(),
            &params(0, 2),
            b"stream zero",
        );
        assert_eq!(
            decode_with(&params(0, 2), &wire).expect("own"),
            b"stream zero"
        );
        for (i, n) in [(1, 2), (0, 1), (0, 3)] {
            let e = decode_with(&params(i, n), &wire).expect_err("other stream");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{i}/{n}");
        }
    }

    #[test]
    fn replay_within_a_session_is_refused() {
        let session = ChaCha20Poly1305Codec::default();
        let p = params(0, 1);
        let wire = encode(b"first transfer");
        let mut out = Vec::new();
        session
            .decoder(&p, Box::new(&wire[..]))
            .expect("decoder")
            .read_to_end(&mut out)
            .expect("first time");
        let e = session
            .decoder(&p, Box::new(&wire[..]))
            .expect("decoder")
            .read_to_end(&mut Vec::new())
            .expect_err("replay");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("replayed"), "{e}");
        // a stream this instance sent, reflected back to it
        let mine = encode_with(&session, &p, b"sent by us");
        let e = session
            .decoder(&p, Box::new(&mine[..]))
            .expect("decoder")
            .read_to_end(&mut Vec::new())
            .expect_err("reflected");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn salt_memory_is_bounded() {
        let mut m = SaltMemory::default();
        for i in 0..(SALT_MEMORY + 10) as u64 {
            let mut s = [0u8; SALT_LEN];
            s[..8].copy_from_slice(&i.to_le_bytes());
            assert!(m.insert(s));
        }
        assert_eq!(m.set.len(), SALT_MEMORY);
        assert_eq!(m.order.len(), SALT_MEMORY);
    }

    #[test]
    fn flush_emits_a_record_and_data_is_readable_before_the_end() {
        let mut wire = Vec::new();
        let c = ChaCha20Poly1305Codec::default();
        let mut enc = c
            .encoder(&params(0, 1), Box::new(PlainSink::new(&mut wire)))
            .expect("encoder");
        enc.flush().expect("flush with nothing pending");
        enc.write_all(b"early").expect("w");
        enc.flush().expect("flush");
        drop(enc); // aborted: no final record
        let recs = records(&wire);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].1, 5 + TAG_LEN as u32);
        let mut dec = ChaCha20Poly1305Codec::default()
            .decoder(&params(0, 1), Box::new(&wire[..]))
            .expect("decoder");
        let mut got = [0u8; 5];
        dec.read_exact(&mut got).expect("flushed record");
        assert_eq!(&got, b"early");
        assert_eq!(
            dec.read(&mut [0u8; 8]).expect_err("no final").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn empty_stream_and_errors_stick() {
        let e = decode(b"").expect_err("empty");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut wire = encode(&data(100));
        let n = wire.len();
        wire[n - 1] ^= 0x80;
        let mut dec = ChaCha20Poly1305Codec::default()
            .decoder(&params(0, 1), Box::new(&wire[..]))
            .expect("decoder");
        let mut b = [0u8; 1000];
        assert!(dec.read(&mut b).is_err());
        assert!(dec.read(&mut b).is_err(), "errors stick");
    }

    #[test]
    fn small_and_large_reads_mix() {
        let d = data(300_000);
        let wire = encode(&d);
        let mut dec = ChaCha20Poly1305Codec::default()
            .decoder(&params(0, 1), Box::new(&wire[..]))
            .expect("decoder");
        let mut out = Vec::new();
        let sizes = [1usize, 70_000, 3, 65_536, 17, 100_000, 2];
        let mut i = 0;
        loop {
            let mut buf = vec![0u8; sizes[i % sizes.len()]];
            i += 1;
            let n = dec.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, d);
    }

    #[test]
    fn registered_and_debug_hides_nothing_secret() {
        let d = codec_api::lookup("chacha20-poly1305").expect("registered");
        assert_eq!(d.kind, CodecKind::Encryption);
        assert_eq!(DESCRIPTOR.name, NAME);
        let s = format!("{:?}", ChaCha20Poly1305Codec::default());
        assert_eq!(s, "ChaCha20Poly1305Codec");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
