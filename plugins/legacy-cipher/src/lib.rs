//! BLOWFISH-ECB and AES-CBC stream codecs for uftpd, wire-compatible with
//! UFTPD 3.x / pyuftp (pycryptodome) and the Java UFTP client (javax.crypto
//! `Blowfish/ECB/PKCS5Padding` and `AES/CBC/PKCS5Padding`).
//!
//! The whole TCP stream is ONE ECB/CBC message: one cipher instance per
//! stream, PKCS#5/7 padding once at its end (always 1..=block-size bytes,
//! so an empty stream is one block of padding).
//!
//! Keys (the `key` of the transfer request, base64-decoded):
//! * `BLOWFISH`: ECB, key = the request key, 4..=56 bytes. (UFTPD checks
//!   only the upper bound, but pycryptodome, javax.crypto and RustCrypto all
//!   refuse keys under 4 bytes, so no peer could use them.)
//! * `AES`: CBC, request key = 16-byte IV followed by a 16/24/32-byte AES
//!   key (32, 40 or 48 bytes in all). The same IV starts every stream.
//!
//! This is NOT authenticated encryption: see the admin manual's page on
//! legacy encryption for what it does and does not protect.
//!
//! Decoding holds back the last block until the end of the stream to check
//! and strip the padding. A ciphertext whose length is not a multiple of
//! the block size, or whose padding is malformed (usually: the wrong key),
//! is [`InvalidData`](io::ErrorKind::InvalidData); an empty stream is
//! [`UnexpectedEof`](io::ErrorKind::UnexpectedEof).
//!
//! ```
//! use std::io::{Read, Write};
//! use codec_api::{CodecParams, PlainSink};
//! use uftpd_legacy_cipher as _; // link the plugin so that its registration is seen
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = [7u8; 48]; // IV (16) + AES-256 key (32)
//! codec_api::validate_key("AES", &key)?;
//! assert!(codec_api::validate_key("AES", &key[..20]).is_err());
//!
//! let aes = codec_api::codec("aes")?;
//! let params = CodecParams::new().with_key(key.to_vec());
//! let mut wire = Vec::new();
//! let mut enc = aes.encoder(&params, Box::new(PlainSink::new(&mut wire)))?;
//! enc.write_all(b"attack at dawn")?;
//! enc.finish()?;
//! assert_eq!(wire.len(), 16); // 14 bytes + 2 bytes of padding
//!
//! let mut out = Vec::new();
//! aes.decoder(&params, Box::new(&wire[..]))?.read_to_end(&mut out)?;
//! assert_eq!(out, b"attack at dawn");
//! # Ok(()) }
//! ```

use std::io::{self, IoSlice, Read, Write};

use codec_api::{CodecDescriptor, CodecError, CodecKind, CodecParams, EncodeWriter, StreamCodec};

/// Registered name of the Blowfish codec.
pub const BLOWFISH: &str = "BLOWFISH";
/// Registered name of the AES codec.
pub const AES: &str = "AES";

mod aes_cbc;
mod bf;
mod bf_consts;

use aes_cbc::{CbcDecrypt, CbcEncrypt};
use bf::Bf;

/// Bytes of ciphertext collected before one write to the inner writer.
const OUT_CAP: usize = 256 * 1024;

/// Ciphertext buffer of the reader: grows with the caller's reads between
/// these bounds (one socket read fills it).
const IN_MIN: usize = 64 * 1024;
const IN_MAX: usize = 1 << 20;

/// The algorithm UFTPD assumes when a transfer request has a key but no
/// `algo`: AES if the key is 32, 40 or 48 bytes long, else BLOWFISH.
pub fn default_algorithm(key: &[u8]) -> &'static str {
    match key.len() {
        32 | 40 | 48 => AES,
        _ => BLOWFISH,
    }
}

/// Legacy cipher algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Blowfish in ECB mode.
    Blowfish,
    /// AES in CBC mode, IV taken from the key.
    Aes,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Blowfish => BLOWFISH,
            Algorithm::Aes => AES,
        }
    }

    /// Checks a request key for this algorithm.
    pub fn validate_key(self, key: &[u8]) -> Result<(), CodecError> {
        let ok = match self {
            Algorithm::Blowfish => (4..=56).contains(&key.len()),
            Algorithm::Aes => matches!(key.len(), 32 | 40 | 48),
        };
        if ok {
            Ok(())
        } else {
            Err(CodecError::InvalidKeyLength {
                codec: self.name(),
                len: key.len(),
                expected: match self {
                    Algorithm::Blowfish => "4..=56 bytes",
                    Algorithm::Aes => "16 bytes IV + 16/24/32 bytes key = 32, 40 or 48 bytes",
                },
            })
        }
    }

    /// Block size in bytes (8 for Blowfish, 16 for AES).
    pub fn block_size(self) -> usize {
        match self {
            Algorithm::Blowfish => 8,
            Algorithm::Aes => 16,
        }
    }
}

/// A legacy cipher codec (a stateless factory).
#[derive(Debug, Clone, Copy)]
pub struct LegacyCipher(pub Algorithm);

fn new_blowfish() -> Box<dyn StreamCodec> {
    Box::new(LegacyCipher(Algorithm::Blowfish))
}

fn new_aes() -> Box<dyn StreamCodec> {
    Box::new(LegacyCipher(Algorithm::Aes))
}

const fn blowfish_descriptor() -> CodecDescriptor {
    CodecDescriptor::new(
        BLOWFISH,
        CodecKind::Encryption,
        env!("CARGO_PKG_VERSION"),
        "Blowfish-ECB, PKCS#5 padding at the end of each stream (legacy, unauthenticated)",
        new_blowfish,
    )
}

const fn aes_descriptor() -> CodecDescriptor {
    CodecDescriptor::new(
        AES,
        CodecKind::Encryption,
        env!("CARGO_PKG_VERSION"),
        "AES-CBC, IV from the key, PKCS#7 padding at the end of each stream (legacy, unauthenticated)",
        new_aes,
    )
}

/// Registration record of the Blowfish codec (also submitted to the
/// registry; referencing it keeps this crate linked).
pub static BLOWFISH_DESCRIPTOR: CodecDescriptor = blowfish_descriptor();
/// Registration record of the AES codec.
pub static AES_DESCRIPTOR: CodecDescriptor = aes_descriptor();

inventory::submit!(blowfish_descriptor());
inventory::submit!(aes_descriptor());

fn key_of(alg: Algorithm, params: &CodecParams) -> Result<&[u8], CodecError> {
    let key = params
        .key_bytes()
        .ok_or(CodecError::MissingKey { codec: alg.name() })?;
    alg.validate_key(key)?;
    Ok(key)
}

fn invalid_key(alg: Algorithm, key: &[u8]) -> CodecError {
    // Unreachable after validate_key; kept as a typed error, not a panic.
    CodecError::InvalidKeyLength {
        codec: alg.name(),
        len: key.len(),
        expected: "a valid key",
    }
}

impl StreamCodec for LegacyCipher {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn kind(&self) -> CodecKind {
        CodecKind::Encryption
    }

    fn validate(&self, params: &CodecParams) -> Result<(), CodecError> {
        key_of(self.0, params).map(|_| ())
    }

    fn encoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn EncodeWriter + 'a>,
    ) -> Result<Box<dyn EncodeWriter + 'a>, CodecError> {
        let alg = self.0;
        let key = key_of(alg, params)?;
        let bad = || invalid_key(alg, key);
        let enc = match alg {
            Algorithm::Blowfish => Enc::Blowfish(Box::new(Bf::new(key))),
            Algorithm::Aes => {
                let (iv, k) = split_iv(key).ok_or_else(bad)?;
                Enc::Aes(Box::new(CbcEncrypt::new(k, &iv).ok_or_else(bad)?))
            }
        };
        Ok(Box::new(CipherWriter::new(enc, alg.block_size(), inner)))
    }

    fn decoder<'a>(
        &self,
        params: &CodecParams,
        inner: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
        let alg = self.0;
        let key = key_of(alg, params)?;
        let bad = || invalid_key(alg, key);
        let dec = match alg {
            Algorithm::Blowfish => Dec::Blowfish(Box::new(Bf::new(key))),
            Algorithm::Aes => {
                let (iv, k) = split_iv(key).ok_or_else(bad)?;
                Dec::Aes(Box::new(CbcDecrypt::new(k, &iv).ok_or_else(bad)?))
            }
        };
        Ok(Box::new(CipherReader::new(dec, alg.block_size(), inner)))
    }
}

/// AES request key: 16-byte IV, then the key.
fn split_iv(key: &[u8]) -> Option<([u8; 16], &[u8])> {
    let (iv, k) = key.split_at_checked(16)?;
    Some((iv.try_into().ok()?, k))
}

/// Encryption of one stream (whole blocks, input to output buffer).
enum Enc {
    Blowfish(Box<Bf>),
    Aes(Box<CbcEncrypt>),
}

impl Enc {
    fn encrypt(&mut self, input: &[u8], out: &mut [u8]) {
        match self {
            Enc::Blowfish(b) => b.encrypt(input, out),
            Enc::Aes(a) => a.encrypt(input, out),
        }
    }
}

/// Decryption of one stream (whole blocks, input to output buffer).
enum Dec {
    Blowfish(Box<Bf>),
    Aes(Box<CbcDecrypt>),
}

impl Dec {
    fn decrypt(&mut self, input: &[u8], out: &mut [u8]) {
        match self {
            Dec::Blowfish(b) => b.decrypt(input, out),
            Dec::Aes(a) => a.decrypt(input, out),
        }
    }
}

fn broken() -> io::Error {
    io::Error::other("cipher stream unusable after an earlier error")
}

/// Encrypting writer: whole blocks are encrypted straight from the
/// caller's buffer into an output buffer (no intermediate copy), which is
/// written to the inner writer when full, on `flush` and on `finish`.
struct CipherWriter<'a> {
    enc: Enc,
    bs: usize,
    inner: Box<dyn EncodeWriter + 'a>,
    /// Partial block (< block size bytes) waiting for more input.
    pend: [u8; 16],
    pend_len: usize,
    out: Vec<u8>,
    out_len: usize,
    broken: bool,
}

impl<'a> CipherWriter<'a> {
    fn new(enc: Enc, bs: usize, inner: Box<dyn EncodeWriter + 'a>) -> Self {
        CipherWriter {
            enc,
            bs,
            inner,
            pend: [0; 16],
            pend_len: 0,
            out: vec![0; OUT_CAP],
            out_len: 0,
            broken: false,
        }
    }

    /// Hands the output buffer to the inner writer, which gives back one
    /// to fill next (the same one, or one a socket thread has finished
    /// sending: see `EncodeWriter::write_owned`).
    fn drain(&mut self) -> io::Result<()> {
        if self.out_len > 0 {
            let out = std::mem::take(&mut self.out);
            let len = std::mem::replace(&mut self.out_len, 0);
            match self.inner.write_owned(out, len) {
                Ok(mut out) => {
                    if out.len() < OUT_CAP {
                        out.resize(OUT_CAP, 0);
                    }
                    self.out = out;
                }
                Err(e) => {
                    // Every later call fails before touching `out`.
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Encrypts `input` (a whole number of blocks that fits in `out`) into
    /// `out` at `out_len`.
    fn encrypt_into_out(&mut self, input: &[u8]) {
        let end = self.out_len + input.len();
        self.enc.encrypt(input, &mut self.out[self.out_len..end]);
        self.out_len = end;
    }

    fn encrypt_pending(&mut self) -> io::Result<()> {
        if self.out_len + self.bs > self.out.len() {
            self.drain()?;
        }
        let pend = self.pend;
        self.encrypt_into_out(&pend[..self.bs]);
        self.pend_len = 0;
        Ok(())
    }
}

impl Write for CipherWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(broken());
        }
        let total = data.len();
        let bs = self.bs;
        if self.pend_len > 0 {
            let take = (bs - self.pend_len).min(data.len());
            self.pend[self.pend_len..self.pend_len + take].copy_from_slice(&data[..take]);
            self.pend_len += take;
            data = &data[take..];
            if self.pend_len == bs {
                self.encrypt_pending()?;
            }
        }
        while data.len() >= bs {
            let room = (self.out.len() - self.out_len) / bs * bs;
            if room == 0 {
                self.drain()?;
                continue;
            }
            let n = (data.len() / bs * bs).min(room);
            self.encrypt_into_out(&data[..n]);
            data = &data[n..];
        }
        if !data.is_empty() {
            self.pend[..data.len()].copy_from_slice(data);
            self.pend_len = data.len();
        }
        Ok(total)
    }

    /// Encrypts every slice (frame headers and payloads) in one call.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            match self.write(b) {
                Ok(n) => total += n,
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        self.drain()?;
        self.inner.flush()
    }
}

impl EncodeWriter for CipherWriter<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        if self.broken {
            return Err(broken());
        }
        let bs = self.bs;
        let pad = bs - self.pend_len; // 1..=bs
        let start = self.pend_len;
        self.pend[start..bs].fill(pad as u8);
        self.encrypt_pending()?;
        self.drain()?;
        self.inner.flush()?;
        self.inner.finish()
    }
}

/// Decrypting reader. It reads the socket into its own ciphertext buffer
/// (as much as one read brings, up to about the size of the caller's read)
/// and decrypts from there straight into the caller's buffer. The last
/// complete block (and any partial one) is held back until more data or
/// the end of the stream arrives, so the padding can be checked and
/// stripped.
struct CipherReader<'a> {
    dec: Dec,
    bs: usize,
    inner: Box<dyn Read + Send + 'a>,
    /// Ciphertext read; `input[start..end]` is not decrypted yet.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Decrypted bytes not yet handed out (reads smaller than a block,
    /// and the final block).
    plain: [u8; 16],
    plain_pos: usize,
    plain_len: usize,
    started: bool,
    done: bool,
}

impl<'a> CipherReader<'a> {
    fn new(dec: Dec, bs: usize, inner: Box<dyn Read + Send + 'a>) -> Self {
        CipherReader {
            dec,
            bs,
            inner,
            input: Vec::new(),
            start: 0,
            end: 0,
            plain: [0; 16],
            plain_pos: 0,
            plain_len: 0,
            started: false,
            done: false,
        }
    }

    /// Decrypts the next block of `input` into `plain`.
    fn decrypt_block(&mut self) -> [u8; 16] {
        let bs = self.bs;
        let mut block = [0u8; 16];
        self.dec
            .decrypt(&self.input[self.start..self.start + bs], &mut block[..bs]);
        self.start += bs;
        block
    }

    /// The inner reader is at its end: decrypt and unpad the final block.
    fn at_eof(&mut self) -> io::Result<()> {
        let bs = self.bs;
        if !self.started {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "encrypted stream is empty (missing the final padded block)",
            ));
        }
        if self.end - self.start != bs {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "encrypted stream length is not a multiple of the cipher block size \
                 (truncated or corrupt)",
            ));
        }
        let block = self.decrypt_block();
        let pad = block[bs - 1] as usize;
        if pad == 0 || pad > bs || block[bs - pad..bs].iter().any(|&b| b as usize != pad) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "encrypted stream has invalid padding (wrong key, or corrupt or truncated data)",
            ));
        }
        self.plain = block;
        self.plain_pos = 0;
        self.plain_len = bs - pad;
        self.done = true;
        Ok(())
    }
}

impl Read for CipherReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bs = self.bs;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.plain_pos < self.plain_len {
                let n = (self.plain_len - self.plain_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            // Whole blocks ready, holding back the last complete one.
            let whole = (self.end - self.start) / bs * bs;
            let ready = whole.saturating_sub(bs);
            if ready > 0 {
                let k = ready.min(buf.len() / bs * bs);
                if k == 0 {
                    // A read smaller than a block: one block into `plain`.
                    self.plain = self.decrypt_block();
                    self.plain_pos = 0;
                    self.plain_len = bs;
                    continue;
                }
                self.dec
                    .decrypt(&self.input[self.start..self.start + k], &mut buf[..k]);
                self.start += k;
                return Ok(k);
            }
            // Fewer than two blocks left: move them to the front (a few
            // bytes) and read more.
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            let want = (buf.len() + 2 * bs).clamp(IN_MIN, IN_MAX);
            if self.input.len() < want {
                self.input.resize(want, 0);
            }
            let r = loop {
                match self.inner.read(&mut self.input[self.end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r?,
                }
            };
            if r == 0 {
                self.at_eof()?;
                continue;
            }
            self.started = true;
            self.end += r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec_api::PlainSink;

    fn params(key: &[u8]) -> CodecParams {
        CodecParams::new().with_key(key.to_vec())
    }

    fn encode(alg: Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut enc = LegacyCipher(alg)
            .encoder(&params(key), Box::new(PlainSink::new(&mut wire)))
            .expect("encoder");
        enc.write_all(data).expect("write");
        enc.finish().expect("finish");
        wire
    }

    fn decode(alg: Algorithm, key: &[u8], wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        LegacyCipher(alg)
            .decoder(&params(key), Box::new(wire))
            .expect("decoder")
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn key_rules() {
        let bf = Algorithm::Blowfish;
        assert!(bf.validate_key(&[1; 3]).is_err());
        assert!(bf.validate_key(&[1; 4]).is_ok());
        assert!(bf.validate_key(&[1; 56]).is_ok());
        assert!(bf.validate_key(&[1; 57]).is_err());
        let aes = Algorithm::Aes;
        for n in 0..100 {
            assert_eq!(
                aes.validate_key(&vec![1; n]).is_ok(),
                [32, 40, 48].contains(&n)
            );
        }
        assert!(matches!(
            LegacyCipher(aes).validate(&CodecParams::new()),
            Err(CodecError::MissingKey { .. })
        ));
        assert_eq!(default_algorithm(&[0; 32]), AES);
        assert_eq!(default_algorithm(&[0; 48]), AES);
        assert_eq!(default_algorithm(&[0; 56]), BLOWFISH);
        assert_eq!(default_algorithm(&[0; 16]), BLOWFISH);
    }

    #[test]
    fn padding_is_always_added() {
        let key = [3u8; 48];
        for len in 0..40 {
            let wire = encode(Algorithm::Aes, &key, &vec![9u8; len]);
            assert_eq!(wire.len(), (len / 16 + 1) * 16, "len {len}");
            assert_eq!(
                decode(Algorithm::Aes, &key, &wire).expect("dec"),
                vec![9u8; len]
            );
        }
        let key = [5u8; 16];
        for len in 0..20 {
            let wire = encode(Algorithm::Blowfish, &key, &vec![1u8; len]);
            assert_eq!(wire.len(), (len / 8 + 1) * 8, "len {len}");
        }
    }

    #[test]
    fn aes_cbc_matches_nist_sp800_38a() {
        // SP 800-38A F.2.1 CBC-AES128.Encrypt, first block, plus our padding.
        let mut key = hex("000102030405060708090a0b0c0d0e0f");
        key.extend(hex("2b7e151628aed2a6abf7158809cf4f3c"));
        let pt = hex("6bc1bee22e409f96e93d7e117393172a");
        let wire = encode(Algorithm::Aes, &key, &pt);
        assert_eq!(&wire[..16], &hex("7649abac8119b246cee98e9b12e9197d")[..]);
        assert_eq!(wire.len(), 32);
    }

    #[test]
    fn blowfish_ecb_matches_known_vector() {
        // Eric Young's Blowfish test vector: key 0000000000000000,
        // plaintext 0000000000000000 -> 4EF997456198DD78 (ECB: same block,
        // same ciphertext, which is also why ECB leaks patterns).
        let wire = encode(Algorithm::Blowfish, &[0u8; 8], &[0u8; 16]);
        assert_eq!(&wire[..8], &hex("4ef997456198dd78")[..]);
        assert_eq!(&wire[8..16], &hex("4ef997456198dd78")[..]);
    }

    #[test]
    fn bad_length_padding_and_empty_are_errors() {
        let key = [1u8; 40];
        let wire = encode(Algorithm::Aes, &key, b"some plaintext here, 35 bytes long");
        for cut in 1..wire.len() {
            let e = decode(Algorithm::Aes, &key, &wire[..cut]).expect_err("cut");
            // A cut at a block boundary leaves a wrong final block: padding error.
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "cut {cut}");
        }
        let e = decode(Algorithm::Aes, &key, b"").expect_err("empty");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut other = key;
        other[20] ^= 0x55;
        let e = decode(Algorithm::Aes, &other, &wire).expect_err("wrong key");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn small_and_large_reads_mix() {
        let key = [2u8; 32];
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let wire = encode(Algorithm::Aes, &key, &data);
        let mut dec = LegacyCipher(Algorithm::Aes)
            .decoder(&params(&key), Box::new(&wire[..]))
            .expect("decoder");
        let mut out = Vec::new();
        let sizes = [1usize, 16, 3, 5000, 17, 256, 70_000, 2];
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
        assert_eq!(out, data);
    }

    #[test]
    fn registered() {
        assert_eq!(codec_api::lookup("aes").expect("aes").name, AES);
        assert_eq!(codec_api::lookup("Blowfish").expect("bf").name, BLOWFISH);
        assert_eq!(BLOWFISH_DESCRIPTOR.kind, CodecKind::Encryption);
        assert_eq!(AES_DESCRIPTOR.kind, CodecKind::Encryption);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
