//! Property tests over whole data channels: any data, written in any
//! chunking, round-trips through ChaCha20-Poly1305 (alone and under zstd)
//! over 1..8 streams (`CodecStack` + `DataWriter`/`DataReader`); cut,
//! swapped, reordered or replayed streams are refused.

use std::io::{self, Cursor, Read, Write};
use std::thread;

use codec_api::{CodecParams, EncodeWriter, PlainSink};
use proptest::prelude::*;
use uftp_datachannel::pipe::{PipeReader, PipeWriter, pipe};
use uftp_datachannel::{ChannelOptions, CodecStack, DataReader, DataWriter};
use uftpd_chacha20poly1305::{FINAL_FLAG, HEADER_LEN, NAME};
use uftpd_zstd as _;

const KEY: [u8; 32] = [0x5a; 32];

/// The stack of one side (client or server): each side has its own.
fn stack(zstd: bool) -> CodecStack {
    let s = CodecStack::plain()
        .with(NAME, CodecParams::new().with_key(KEY.to_vec()))
        .expect("chacha stack");
    if zstd {
        s.with("zstd", CodecParams::new()).expect("zstd layer")
    } else {
        s
    }
}

/// Writes `data` (cut at `cuts`) through a data channel of `n` streams
/// and returns what went over each stream.
fn send(data: &[u8], n: usize, stack: &CodecStack, cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut ws: Vec<PipeWriter> = Vec::new();
    let mut drains = Vec::new();
    for _ in 0..n {
        let (w, mut r): (PipeWriter, PipeReader) = pipe(64 * 1024);
        ws.push(w);
        drains.push(thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        }));
    }
    let mut w = DataWriter::new(ws, stack, &ChannelOptions::default()).expect("writer");
    let mut rest = data;
    for &c in cuts {
        let (a, b) = rest.split_at(c.min(rest.len()));
        w.write_all(a).expect("write");
        rest = b;
    }
    w.write_all(rest).expect("write");
    w.finish().expect("finish");
    drains
        .into_iter()
        .map(|h| h.join().expect("drain").expect("drain read"))
        .collect()
}

/// Reads a data channel whose streams carry `wires`.
fn receive(wires: Vec<Vec<u8>>, stack: &CodecStack) -> io::Result<Vec<u8>> {
    let streams: Vec<Cursor<Vec<u8>>> = wires.into_iter().map(Cursor::new).collect();
    let mut r = DataReader::new(streams, stack, &ChannelOptions::default())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

fn assert_refused(r: io::Result<Vec<u8>>, what: &str) {
    match r {
        Ok(v) => panic!("{what}: accepted ({} bytes)", v.len()),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ),
            "{what}: {e:?}"
        ),
    }
}

/// Start offsets of the records of one stream (after its header).
fn record_starts(wire: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut p = HEADER_LEN;
    while p + 4 <= wire.len() {
        v.push(p);
        let w = u32::from_be_bytes([wire[p], wire[p + 1], wire[p + 2], wire[p + 3]]);
        p += 4 + (w & !FINAL_FLAG) as usize;
    }
    v
}

fn sample(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn codec_alone_any_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..200_000),
        cuts in proptest::collection::vec(0usize..70_000, 0..8),
        flushes in proptest::collection::vec(any::<bool>(), 8),
        read_size in 1usize..140_000,
        index in 0u32..8,
    ) {
        let p = CodecParams::new().with_key(KEY.to_vec()).for_stream(index, 8);
        let mut wire = Vec::new();
        {
            let c = codec_api::codec(NAME).expect("codec");
            let mut enc: Box<dyn EncodeWriter + '_> =
                c.encoder(&p, Box::new(PlainSink::new(&mut wire))).expect("encoder");
            let mut rest = &data[..];
            for (k, &cut) in cuts.iter().enumerate() {
                let (a, b) = rest.split_at(cut.min(rest.len()));
                enc.write_all(a).expect("write");
                if flushes[k] { enc.flush().expect("flush"); }
                rest = b;
            }
            enc.write_all(rest).expect("write");
            enc.finish().expect("finish");
        }
        let c = codec_api::codec(NAME).expect("codec");
        let mut dec = c.decoder(&p, Box::new(&wire[..])).expect("decoder");
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = dec.read(&mut buf).expect("read");
            if n == 0 { break; }
            out.extend_from_slice(&buf[..n]);
        }
        prop_assert_eq!(out, data);
    }

    #[test]
    fn channel_roundtrip_1_to_8_streams(
        data in proptest::collection::vec(any::<u8>(), 0..150_000),
        n in 1usize..=8,
        cuts in proptest::collection::vec(1usize..50_000, 0..4),
        zstd in any::<bool>(),
    ) {
        let wires = send(&data, n, &stack(zstd), &cuts);
        prop_assert_eq!(receive(wires, &stack(zstd)).expect("receive"), data);
    }

    #[test]
    fn channel_cut_anywhere_is_refused(
        n in 1usize..=4,
        which in 0usize..4,
        frac in 0.0f64..1.0,
        zstd in any::<bool>(),
    ) {
        let data = sample(180_000);
        let mut wires = send(&data, n, &stack(zstd), &[]);
        let k = which % n;
        let cut = ((wires[k].len() as f64) * frac) as usize;
        wires[k].truncate(cut);
        assert_refused(receive(wires, &stack(zstd)), &format!("stream {k} of {n} cut at {cut}"));
    }
}

#[test]
fn cut_at_every_record_boundary_of_every_stream() {
    let data = sample(400_000);
    for n in [1, 3] {
        let wires = send(&data, n, &stack(false), &[]);
        for k in 0..n {
            let starts = record_starts(&wires[k]);
            assert!(starts.len() > 1, "stream {k} has several records");
            for &cut in std::iter::once(&HEADER_LEN).chain(&starts) {
                let mut w = wires.clone();
                w[k].truncate(cut);
                assert_refused(receive(w, &stack(false)), &format!("{n}/{k} cut at {cut}"));
            }
        }
    }
}

#[test]
fn swapped_streams_and_reordered_records_are_refused() {
    let data = sample(700_000);
    let wires = send(&data, 3, &stack(false), &[]);
    assert!(wires.iter().all(|w| record_starts(w).len() >= 3));
    // streams 0 and 1 exchanged
    let mut w = wires.clone();
    w.swap(0, 1);
    assert_refused(receive(w, &stack(false)), "swapped streams");
    // a record of stream 2 moved to stream 1 (after its header)
    let mut w = wires.clone();
    let s2 = record_starts(&wires[2]);
    let s1 = record_starts(&wires[1]);
    let rec2 = wires[2][s2[0]..s2[1]].to_vec();
    let mut forged = wires[1][..s1[0]].to_vec();
    forged.extend_from_slice(&rec2);
    forged.extend_from_slice(&wires[1][s1[1]..]);
    w[1] = forged;
    assert_refused(receive(w, &stack(false)), "record from another stream");
    // two records of stream 0 exchanged
    let s0 = record_starts(&wires[0]);
    let mut forged = wires[0][..s0[0]].to_vec();
    forged.extend_from_slice(&wires[0][s0[1]..s0[2]]);
    forged.extend_from_slice(&wires[0][s0[0]..s0[1]]);
    forged.extend_from_slice(&wires[0][s0[2]..]);
    let mut w = wires.clone();
    w[0] = forged;
    assert_refused(receive(w, &stack(false)), "records reordered");
    // the untouched channel is fine
    assert_eq!(receive(wires, &stack(false)).expect("intact"), data);
}

#[test]
fn stream_replayed_from_an_earlier_transfer_of_the_session_is_refused() {
    let server = stack(false); // one stack for the whole session
    let first = send(b"the first upload, 32 bytes long!", 2, &stack(false), &[]);
    let second = send(b"the second upload, also 32 bytes", 2, &stack(false), &[]);
    assert_eq!(
        receive(first.clone(), &server).expect("first"),
        b"the first upload, 32 bytes long!"
    );
    let mut replay = second.clone();
    replay[1] = first[1].clone();
    assert_refused(receive(replay, &server), "replayed stream 1");
    // the whole first transfer again
    assert_refused(receive(first, &server), "replayed transfer");
    // a fresh transfer is fine
    let third = send(b"a third upload", 2, &stack(false), &[]);
    assert_eq!(receive(third, &server).expect("third"), b"a third upload");
}

#[test]
fn wrong_key_is_refused_on_every_width() {
    let other = CodecStack::plain()
        .with(NAME, CodecParams::new().with_key(vec![0x5b; 32]))
        .expect("stack");
    for n in [1, 2, 5] {
        let wires = send(&sample(50_000), n, &stack(true), &[]);
        assert_refused(receive(wires, &other), &format!("{n} streams"));
    }
}
