//! Property tests: any data, written in any chunking (with or without
//! flushes), round-trips through the codec alone and through a data channel
//! of 1..8 streams (`CodecStack` + `DataWriter`/`DataReader`); a frame cut
//! anywhere is an error.

use std::io::{self, Read, Write};
use std::thread;

use codec_api::{CodecParams, EncodeWriter, PlainSink};
use proptest::prelude::*;
use uftp_datachannel::pipe::{PipeReader, PipeWriter, pipe};
use uftp_datachannel::{ChannelOptions, CodecStack, DataReader, DataWriter};
use uftpd_zstd as _;

fn encode(data: &[u8], cuts: &[usize], level: i32, flush_between: bool) -> Vec<u8> {
    let zstd = codec_api::codec("zstd").expect("zstd");
    let p = CodecParams::new().with_option("level", level.to_string());
    let mut wire = Vec::new();
    {
        let mut enc: Box<dyn EncodeWriter + '_> = zstd
            .encoder(&p, Box::new(PlainSink::new(&mut wire)))
            .expect("encoder");
        let mut rest = data;
        for &c in cuts {
            let (a, b) = rest.split_at(c.min(rest.len()));
            enc.write_all(a).expect("write");
            if flush_between {
                enc.flush().expect("flush");
            }
            rest = b;
        }
        enc.write_all(rest).expect("write");
        enc.finish().expect("finish");
    }
    wire
}

fn decode(wire: &[u8], read_size: usize) -> io::Result<Vec<u8>> {
    let zstd = codec_api::codec("zstd").expect("zstd");
    let mut dec = zstd.decoder(&CodecParams::new(), Box::new(wire))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Sends `data` over `n` in-memory streams with `stack` on both ends (one
/// stack per side, as a client and a server have) and returns what the
/// reader got.
fn channel_roundtrip(
    data: &[u8],
    n: usize,
    send: &CodecStack,
    recv: &CodecStack,
    cuts: &[usize],
) -> io::Result<Vec<u8>> {
    let mut ws: Vec<PipeWriter> = Vec::new();
    let mut rs: Vec<PipeReader> = Vec::new();
    for _ in 0..n {
        let (w, r) = pipe(32 * 1024);
        ws.push(w);
        rs.push(r);
    }
    let opts = ChannelOptions::default();
    let (send, sent, cuts) = (send.clone(), data.to_vec(), cuts.to_vec());
    let o2 = opts.clone();
    let writer = thread::spawn(move || -> io::Result<()> {
        let mut w = DataWriter::new(ws, &send, &o2)?;
        let mut rest = &sent[..];
        for c in cuts {
            let (a, b) = rest.split_at(c.min(rest.len()));
            w.write_all(a)?;
            rest = b;
        }
        w.write_all(rest)?;
        w.finish()
    });
    let mut r = DataReader::new(rs, recv, &opts)?;
    let mut got = Vec::new();
    let res = r.read_to_end(&mut got);
    drop(r);
    let wres = writer.join().expect("writer thread");
    res?;
    wres?;
    Ok(got)
}

fn zstd_stack(level: i32) -> CodecStack {
    CodecStack::plain()
        .with(
            "zstd",
            CodecParams::new().with_option("level", level.to_string()),
        )
        .expect("zstd stack")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn roundtrip_any_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..40_000),
        text in any::<bool>(),
        cuts in proptest::collection::vec(1usize..9000, 0..8),
        read_size in 1usize..70_000,
        level in -7i32..=9,
        flush_between in any::<bool>(),
    ) {
        // compressible or not
        let data: Vec<u8> = if text { data.iter().map(|b| b % 7 + b'a').collect() } else { data };
        let wire = encode(&data, &cuts, level, flush_between);
        prop_assert_eq!(decode(&wire, read_size).expect("decode"), data);
    }

    #[test]
    fn truncated_frame_is_never_silent(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        cut_frac in 0.0f64..1.0,
        flush_between in any::<bool>(),
    ) {
        let wire = encode(&data, &[777, 5000], 1, flush_between);
        let cut = ((wire.len() as f64) * cut_frac) as usize;
        let e = decode(&wire[..cut], 4096).expect_err("truncated");
        prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn data_channel_1_to_8_streams(
        data in proptest::collection::vec(any::<u8>(), 0..120_000),
        n in 1usize..=8,
        cuts in proptest::collection::vec(1usize..40_000, 0..4),
        level in 1i32..=3,
    ) {
        let got = channel_roundtrip(&data, n, &zstd_stack(level), &zstd_stack(1), &cuts)
            .expect("round trip");
        prop_assert_eq!(got, data);
    }
}

#[test]
fn data_channel_large_compressible_transfer() {
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| b"uftp zstd "[(i % 10) as usize])
        .collect();
    for n in [1, 3, 8] {
        let got = channel_roundtrip(&data, n, &zstd_stack(1), &zstd_stack(1), &[]).expect("rt");
        assert!(got == data, "{n} streams");
    }
}
