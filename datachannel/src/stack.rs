//! The codec stack of a data channel: which codecs wrap each TCP stream, in
//! wire order (outermost first: encryption, then compression).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use codec_api::{CodecError, CodecParams, EncodeWriter, StreamCodec};

use crate::stream::SinkStream;

/// One layer: a codec and its parameters (the stream index and count are
/// filled in per stream).
#[derive(Clone)]
struct Layer {
    codec: Arc<dyn StreamCodec>,
    params: CodecParams,
}

/// The codecs applied to every TCP stream of a data channel.
///
/// Layers are kept in wire order, outermost (next to the socket) first,
/// whatever order they were added in: encryption, then compression. Each
/// TCP stream gets its OWN instances (own cipher state, own gzip member).
///
/// ```
/// use uftp_datachannel::CodecStack;
/// // What a UFTPD 3.x transfer request asks for: key (+ algo), compress.
/// let key = [1u8; 48];
/// let stack = CodecStack::legacy(Some(&key), Some("AES"), true).unwrap();
/// assert_eq!(stack.describe(), "AES+gzip");
/// assert!(CodecStack::legacy(Some(&key[..20]), Some("AES"), false).is_err());
/// assert!(CodecStack::legacy(None, None, false).unwrap().is_plain());
/// ```
#[derive(Clone, Default)]
pub struct CodecStack {
    layers: Vec<Layer>,
}

impl fmt::Debug for CodecStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodecStack({})", self.describe())
    }
}

impl CodecStack {
    /// No codecs: bytes go to the sockets as they are.
    pub fn plain() -> Self {
        CodecStack::default()
    }

    /// The stack of a UFTPD 3.x transfer request: `key` (base64-decoded)
    /// and `algo` (`BLOWFISH`/`AES`, any case; when absent, AES for 32, 40
    /// or 48-byte keys, else BLOWFISH), and `compress`. Validates the key,
    /// so call it when the request arrives.
    ///
    /// Uses the codecs of the `legacy-cipher` and `gzip` features directly
    /// (no registry lookup).
    #[cfg(all(feature = "gzip", feature = "legacy-cipher"))]
    pub fn legacy(
        key: Option<&[u8]>,
        algo: Option<&str>,
        compress: bool,
    ) -> Result<Self, CodecError> {
        use uftpd_legacy_cipher::{AES_DESCRIPTOR, BLOWFISH_DESCRIPTOR};
        let mut stack = CodecStack::plain();
        if let Some(key) = key {
            let algo = algo.unwrap_or_else(|| uftpd_legacy_cipher::default_algorithm(key));
            let d = if algo.eq_ignore_ascii_case(AES_DESCRIPTOR.name) {
                &AES_DESCRIPTOR
            } else if algo.eq_ignore_ascii_case(BLOWFISH_DESCRIPTOR.name) {
                &BLOWFISH_DESCRIPTOR
            } else {
                return Err(CodecError::UnknownCodec(algo.to_owned()));
            };
            stack = stack.with_codec(
                Arc::from(d.instantiate()),
                CodecParams::new().with_key(key.to_vec()),
            )?;
        } else if let Some(algo) = algo {
            // An algorithm without a key cannot be honoured.
            return Err(CodecError::MissingKey {
                codec: if algo.eq_ignore_ascii_case("AES") {
                    "AES"
                } else {
                    "BLOWFISH"
                },
            });
        }
        if compress {
            stack = stack.with_codec(
                Arc::from(uftpd_gzip::DESCRIPTOR.instantiate()),
                CodecParams::new(),
            )?;
        }
        Ok(stack)
    }

    /// Adds the registered codec `name` (see [`codec_api::lookup`]) with
    /// `params` (key, options); validates them.
    pub fn with(self, name: &str, params: CodecParams) -> Result<Self, CodecError> {
        let codec: Arc<dyn StreamCodec> = Arc::from(codec_api::codec(name)?);
        self.with_codec(codec, params)
    }

    /// Adds a codec object with `params`; validates them. The layer goes to
    /// its wire position by its [`kind`](StreamCodec::kind).
    pub fn with_codec(
        mut self,
        codec: Arc<dyn StreamCodec>,
        params: CodecParams,
    ) -> Result<Self, CodecError> {
        codec.validate(&params)?;
        let kind = codec.kind();
        let pos = self
            .layers
            .iter()
            .position(|l| l.codec.kind() > kind)
            .unwrap_or(self.layers.len());
        self.layers.insert(pos, Layer { codec, params });
        Ok(self)
    }

    /// Whether there are no codecs.
    pub fn is_plain(&self) -> bool {
        self.layers.is_empty()
    }

    /// Layer names, outermost first, joined with `+` (`"plain"` if none).
    /// Never shows keys.
    pub fn describe(&self) -> String {
        if self.layers.is_empty() {
            return "plain".into();
        }
        self.layers
            .iter()
            .map(|l| l.codec.name())
            .collect::<Vec<_>>()
            .join("+")
    }

    fn params_for(l: &Layer, index: usize, count: usize) -> CodecParams {
        l.params.clone().for_stream(index as u32, count as u32)
    }

    /// Wraps the write side of stream `index` of `count` in the stack.
    pub fn encoder<'a>(
        &self,
        index: usize,
        count: usize,
        sink: Box<dyn EncodeWriter + 'a>,
    ) -> Result<Box<dyn EncodeWriter + 'a>, CodecError> {
        let mut w = sink;
        for l in &self.layers {
            w = l.codec.encoder(&Self::params_for(l, index, count), w)?;
        }
        Ok(w)
    }

    /// Wraps the read side of stream `index` of `count` in the stack.
    pub fn decoder<'a>(
        &self,
        index: usize,
        count: usize,
        source: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, CodecError> {
        let mut r = source;
        for l in &self.layers {
            r = l.codec.decoder(&Self::params_for(l, index, count), r)?;
        }
        Ok(r)
    }
}

/// Bottom of an encoder stack over a [`SinkStream`]: `finish` ends the
/// stream ([`SinkStream::finish_write`]).
pub(crate) struct SinkAdapter<S>(pub S);

impl<S: SinkStream> Write for SinkAdapter<S> {
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

impl<S: SinkStream> EncodeWriter for SinkAdapter<S> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.finish_write()
    }
}
