//! The UFTP data channel: multi-stream (JPARSS) framing and codec stacks,
//! shared by the daemon and the client library.
//!
//! A data channel is `n` connected TCP streams. Per stream, the layers
//! are, outermost first: socket, encryption, compression, multi-stream
//! framing (PROTOCOL.md section 6). This crate turns them into ONE
//! [`DataWriter`] (`Write` + [`finish`](DataWriter::finish)) on the sending
//! side and ONE [`DataReader`] (`Read` + `BufRead`) on the receiving side:
//!
//! * `n == 1`: no framing; the codecs (if any) sit directly on the socket.
//! * `n > 1`: the data is cut into blocks of at most 16384 bytes, each
//!   block split over the streams with a 16-byte header per stream
//!   ([`frame`]); each stream has its own codec instances (own cipher
//!   state, own gzip member).
//!
//! Codec and multi-stream channels run as a pipeline so that both cores
//! work: one worker thread per TCP stream owns that stream's codecs and
//! socket and exchanges recycled buffers with the caller through bounded
//! queues. With fewer streams than cores, a sending stream with codecs
//! also gets a socket thread, so that its codecs work on the next buffer
//! while the previous one is being sent (module `offload`;
//! [`ChannelOptions::socket_threads`]). An error on any stream stops all
//! of them (their sockets are shut down) and comes back to the caller as
//! an `io::Error` naming the stream. Set socket timeouts on the
//! `TcpStream`s to bound how long a silent peer can stall a transfer.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use uftp_datachannel::{ChannelOptions, CodecStack, DataReader, DataWriter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two loopback connections stand in for the passive data connections.
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let mut ours = Vec::new();
//! let mut theirs = Vec::new();
//! for _ in 0..2 {
//!     ours.push(TcpStream::connect(addr)?);
//!     theirs.push(listener.accept()?.0);
//! }
//!
//! // transfer request: key=<48 bytes>, algo=AES, compress=true
//! let key = [42u8; 48];
//! let stack = CodecStack::legacy(Some(&key), Some("AES"), true)?;
//! let opts = ChannelOptions::default();
//!
//! let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
//! let sent = data.clone();
//! let (stack2, opts2) = (stack.clone(), opts.clone());
//! let sender = std::thread::spawn(move || -> std::io::Result<()> {
//!     let mut w = DataWriter::new(ours, &stack2, &opts2)?;
//!     w.write_all(&sent)?;
//!     w.finish() // trailers, shutdown, errors of every stream
//! });
//!
//! let mut r = DataReader::new(theirs, &stack, &opts)?;
//! let mut got = Vec::new();
//! r.read_to_end(&mut got)?; // Ok only at the verified end
//! sender.join().expect("sender thread")?;
//! assert_eq!(got, data);
//! # Ok(()) }
//! ```

pub mod frame;
pub mod iobuf;
pub mod kept;
pub mod lowat;
mod mapped;
mod offload;
pub mod pipe;
mod reader;
mod shared;
mod sigbus;
mod stack;
pub mod stream;
mod writer;

pub use codec_api::{CodecError, CodecParams, read_full};

/// The zlib level gzip data channels are compressed with unless the
/// server's GZIP_LEVEL or the client's options say otherwise: 1, because
/// on-the-fly compression is about throughput. Level 6 (zlib's default,
/// used by UFTPD 3.x, the Java client and pyuftp) costs zlib-rs about twice
/// the CPU for 1.55:1 instead of 1.31:1 on the benchmark's
/// semi-compressible file (with ISA-L installed, level 1 is ISA-L's: 1.38:1
/// at about a third of zlib-rs's level-1 CPU). Readers accept every level.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
pub use reader::DataReader;
pub use stack::CodecStack;
pub use stream::{Abort, SinkStream, SourceStream};
pub use writer::{DataWriter, SendFileError};

/// Tuning of a data channel. The defaults suit the UFTP wire format.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Block size of multi-stream framing when sending (clamped to
    /// 1..=16384; Java readers reject larger blocks). Default 16384.
    pub block_size: usize,
    /// Bytes handed between the caller and the stream workers at a time:
    /// a sending batch (a whole number of blocks, read from a file in one
    /// call by [`DataWriter::copy_from`]), and the read buffer of each
    /// receiving stream worker. Default 1 MiB.
    pub batch_size: usize,
    /// Batches queued between the caller and each stream's worker (and
    /// buffers queued by each receiving worker). Default 4.
    pub queue_depth: usize,
    /// Buffer size of a plain single-stream reader. Default 256 KiB, the
    /// receive low-water mark ([`lowat::BULK_LOW_WATER`]) that uftpc sets,
    /// so that one wakeup fills it.
    pub single_stream_buffer: usize,
    /// Whether a sending stream with codecs writes its socket on a thread
    /// of its own, so that its codecs work on the next buffer while the
    /// previous one is being sent (buffers change hands, no copy). `None`
    /// (the default): when there are fewer streams than cores, where the
    /// stream workers alone would leave cores idle. Plain streams never do.
    pub socket_threads: Option<bool>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            block_size: frame::MAX_SEND_BLOCK,
            batch_size: 1 << 20,
            queue_depth: 4,
            single_stream_buffer: 256 * 1024,
            socket_threads: None,
        }
    }
}

/// Errors when setting up a data channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// No streams were given.
    #[error("a data channel needs at least one stream")]
    NoStreams,
    /// More streams than the frame header can number.
    #[error("{0} streams is more than a data channel can carry")]
    TooManyStreams(usize),
    /// A codec could not be built (bad key, unknown codec, ...).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Starting a worker thread failed.
    #[error("starting a data channel worker: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ChannelError> for std::io::Error {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Io(e) => e,
            ChannelError::Codec(c) => c.into(),
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other),
        }
    }
}

/// Codecs compiled into this build (the statically linked ones, whether or
/// not the `inventory` registry sees them).
pub fn builtin_codecs() -> Vec<&'static codec_api::CodecDescriptor> {
    #[allow(unused_mut)]
    let mut v: Vec<&'static codec_api::CodecDescriptor> = Vec::new();
    #[cfg(feature = "legacy-cipher")]
    {
        v.push(&uftpd_legacy_cipher::BLOWFISH_DESCRIPTOR);
        v.push(&uftpd_legacy_cipher::AES_DESCRIPTOR);
    }
    #[cfg(feature = "gzip")]
    v.push(&uftpd_gzip::DESCRIPTOR);
    v
}
