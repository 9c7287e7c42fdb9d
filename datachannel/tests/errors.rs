//! Truncated, corrupt and dying streams give clear errors: never a panic,
//! a hang or a silently short result.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

use common::*;
use proptest::prelude::*;
use uftp_datachannel::frame::HEADER_LEN;
use uftp_datachannel::{ChannelError, ChannelOptions, CodecStack, DataReader, DataWriter};

fn plain() -> CodecStack {
    CodecStack::plain()
}

fn err_kind(r: io::Result<Vec<u8>>) -> io::ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got {} bytes", v.len()),
        Err(e) => e.kind(),
    }
}

#[test]
fn no_streams_is_a_setup_error() {
    let r = DataWriter::new(Vec::<Capture>::new(), &plain(), &ChannelOptions::default());
    assert!(matches!(r, Err(ChannelError::NoStreams)));
}

#[test]
fn zero_length_input_sends_no_frames() {
    // Python readers take an empty block for end of data: never send one.
    let s = encode_streams(3, &plain(), b"");
    assert!(s.iter().all(|x| x.is_empty()));
    assert_eq!(decode_streams(&s, &plain(), 100).expect("decode"), b"");
}

#[test]
fn frame_layout_matches_protocol() {
    let d = data(20_000, 1);
    let s = encode_streams(3, &plain(), &d);
    // block 0: 16384 bytes, chunk 5461, last stream 5462
    assert_eq!(
        &s[0][..16],
        &[
            0xCE, 0xBF, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x15, 0x55
        ]
    );
    assert_eq!(
        &s[2][..16],
        &[
            0xCE, 0xBF, 0, 2, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x15, 0x56
        ]
    );
    assert_eq!(&s[1][16..16 + 5461], &d[5461..2 * 5461]);
    // block 1: 3616 bytes, seq 1
    let b1 = 16 + 5461;
    assert_eq!(
        &s[0][b1..b1 + 16],
        &[
            0xCE, 0xBF, 0, 0, 0, 0, 0, 1, 0, 0, 0x0E, 0x20, 0, 0, 0x04, 0xB5
        ]
    );
}

#[test]
fn corrupt_headers_are_invalid_data() {
    let d = data(40_000, 2);
    let s = encode_streams(3, &plain(), &d);
    for (what, stream, byte) in [
        ("magic", 0, 0),
        ("stream index", 1, 3),
        ("seq", 2, 7),
        ("size", 1, 10),
        ("len", 0, 14),
        ("second header magic", 1, 16 + 5461),
    ] {
        let mut t = s.clone();
        t[stream][byte] ^= 0x40;
        let k = err_kind(decode_streams(&t, &plain(), 4096));
        assert!(
            matches!(k, io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof),
            "{what}: {k:?}"
        );
    }
    // swapped streams
    let mut t = s.clone();
    t.swap(0, 1);
    assert_eq!(
        err_kind(decode_streams(&t, &plain(), 4096)),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn uneven_stream_ends_are_errors() {
    let d = data(40_000, 3);
    let s = encode_streams(2, &plain(), &d);
    // stream 0 ends after its first frame, stream 1 goes on
    let mut t = s.clone();
    t[0].truncate(HEADER_LEN + 8192);
    assert_eq!(
        err_kind(decode_streams(&t, &plain(), 4096)),
        io::ErrorKind::InvalidData
    );
    // stream 1 ends early, at a frame boundary
    let mut t = s.clone();
    t[1].truncate(HEADER_LEN + 8192);
    assert_eq!(
        err_kind(decode_streams(&t, &plain(), 4096)),
        io::ErrorKind::UnexpectedEof
    );
    // stream 1 has an extra frame
    let mut t = s.clone();
    let extra = t[1][..HEADER_LEN + 8192].to_vec();
    t[1].extend_from_slice(&extra);
    assert_eq!(
        err_kind(decode_streams(&t, &plain(), 4096)),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn truncation_of_any_stream_is_an_error_in_every_stack() {
    for (name, stack) in all_stacks() {
        for n in [1usize, 2, 3] {
            if n == 1 && stack.is_plain() {
                continue; // a bare socket has no end marker
            }
            let d = data(50_000, n as u32);
            let s = encode_streams(n, &stack, &d);
            for j in 0..n {
                for cut in [0, 1, s[j].len() / 2, s[j].len() - 1] {
                    let mut t = s.clone();
                    t[j].truncate(cut);
                    if let Ok(v) = decode_streams(&t, &stack, 10_000) {
                        panic!(
                            "{name} n={n} stream {j} cut at {cut}: accepted {} bytes",
                            v.len()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gzip_payload_corruption_is_detected() {
    let stack = CodecStack::legacy(None, None, true).expect("gzip");
    let d = data(50_000, 4);
    let s = encode_streams(2, &stack, &d);
    let mut t = s.clone();
    let mid = t[1].len() / 2;
    t[1][mid] ^= 0xFF;
    assert!(decode_streams(&t, &stack, 4096).is_err());
}

#[test]
fn wrong_key_is_an_error() {
    let k1: Vec<u8> = (0..48).collect();
    let mut k2 = k1.clone();
    k2[40] ^= 1;
    let s1 = CodecStack::legacy(Some(&k1), Some("AES"), false).expect("s1");
    let s2 = CodecStack::legacy(Some(&k2), Some("AES"), false).expect("s2");
    let s = encode_streams(2, &s1, &data(30_000, 5));
    assert!(decode_streams(&s, &s2, 4096).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random cuts: an error unless the cut keeps everything.
    #[test]
    fn random_truncation_is_an_error(
        len in 0usize..40_000,
        n in 1usize..=5,
        which in 0usize..10,
        stream in 0usize..5,
        frac in 0.0f64..1.0,
    ) {
        let (name, stack) = &all_stacks()[which];
        // single plain stream: no end marker; single cipher-only stream:
        // a cut at a block boundary passes the padding check with chance
        // ~1/256 (legacy encryption has no integrity) - covered by the
        // off-boundary test in the cipher crate.
        prop_assume!(n > 1 || which % 2 == 1);
        let d = data(len, len as u32);
        let s = encode_streams(n, stack, &d);
        let j = stream % n;
        let cut = ((s[j].len() as f64) * frac) as usize;
        prop_assume!(cut < s[j].len());
        let mut t = s.clone();
        t[j].truncate(cut);
        let r = decode_streams(&t, stack, 3000);
        prop_assert!(r.is_err(), "{} n={} stream {} cut {}: accepted", name, n, j, cut);
    }

    /// Random byte flips: never a panic, never a result of another length.
    #[test]
    fn random_corruption_never_shortens_silently(
        len in 0usize..30_000,
        n in 1usize..=4,
        which in 0usize..10,
        stream in 0usize..4,
        frac in 0.0f64..1.0,
        flip in 1u8..=255,
    ) {
        let (_, stack) = &all_stacks()[which];
        let d = data(len, 77);
        let s = encode_streams(n, stack, &d);
        let j = stream % n;
        prop_assume!(!s[j].is_empty());
        let at = (((s[j].len() - 1) as f64) * frac) as usize;
        let mut t = s.clone();
        t[j][at] ^= flip;
        if let Ok(v) = decode_streams(&t, stack, 3000) {
            prop_assert_eq!(v.len(), d.len());
        }
    }
}

fn tcp_pairs(n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..n {
        a.push(TcpStream::connect(addr).expect("connect"));
        b.push(l.accept().expect("accept").0);
    }
    (a, b)
}

#[test]
fn dead_reader_stream_fails_the_writer_without_hanging() {
    for stack in [CodecStack::plain(), all_stacks()[5].1.clone()] {
        let (ws, mut rs) = tcp_pairs(4);
        // Peer closes stream 2 at once and never reads the others.
        drop(rs.remove(2));
        let mut w = DataWriter::new(ws, &stack, &ChannelOptions::default()).expect("writer");
        let chunk = data(1 << 20, 6);
        let mut result = Ok(());
        for _ in 0..256 {
            if let Err(e) = w.write_all(&chunk) {
                result = Err(e);
                break;
            }
        }
        let result = result.and_then(|()| w.finish());
        let e = result.expect_err("a dead stream must fail the transfer");
        assert!(e.to_string().contains("data stream"), "{e}");
        drop(rs);
    }
}

#[test]
fn dead_writer_stream_fails_the_reader_without_hanging() {
    for stack in [CodecStack::plain(), all_stacks()[9].1.clone()] {
        let (mut ws, rs) = tcp_pairs(3);
        let d = data(200_000, 7);
        let (st, dd) = (stack.clone(), d.clone());
        // Sender writes a complete transfer on streams 0 and 2 only; the
        // peer of stream 1 dies after a partial frame.
        let mut s1 = ws.remove(1);
        let sender = std::thread::spawn(move || {
            let caps = encode_streams(3, &st, &dd);
            let mut all = ws;
            let w0 = all[0].write_all(&caps[0]);
            let w2 = all[1].write_all(&caps[2]);
            let _ = s1.write_all(&caps[1][..caps[1].len() / 3]);
            drop(s1);
            drop(all);
            (w0.is_ok(), w2.is_ok())
        });
        let mut r = DataReader::new(rs, &stack, &ChannelOptions::default()).expect("reader");
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).expect_err("must fail");
        assert!(e.to_string().contains("data stream 1"), "{e}");
        let _ = sender.join();
    }
}

#[test]
fn dropped_writer_without_finish_is_truncation_for_codecs() {
    let stack = all_stacks()[3].1.clone(); // BLOWFISH+gzip
    let (ws, rs) = tcp_pairs(2);
    let st = stack.clone();
    let sender = std::thread::spawn(move || {
        let mut w = DataWriter::new(ws, &st, &ChannelOptions::default()).expect("writer");
        w.write_all(&data(100_000, 8)).expect("write");
        drop(w); // aborted transfer
    });
    let mut r = DataReader::new(rs, &stack, &ChannelOptions::default()).expect("reader");
    let mut got = Vec::new();
    assert!(r.read_to_end(&mut got).is_err());
    sender.join().expect("join");
}
