//! Round trips through every stack over in-memory pipes and loopback TCP.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use common::*;
use proptest::prelude::*;
use uftp_datachannel::{ChannelOptions, DataReader, DataWriter};

#[test]
fn every_stack_and_stream_count_over_pipes() {
    for (name, stack) in all_stacks() {
        for n in 1..=8 {
            for len in [0usize, 1, 16383, 16384, 16385, 40_000] {
                let d = data(len, (n * 1000 + len) as u32);
                let got = roundtrip_pipes(n, &stack, &d, &[7000, 1, 333], 5000, 4096)
                    .unwrap_or_else(|e| panic!("{name} n={n} len={len}: {e}"));
                assert!(got == d, "{name} n={n} len={len}: data differs");
            }
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

/// Sending options with the codec streams' socket threads on, off, and
/// chosen by the core count (the default): each must give the same bytes.
fn socket_thread_variants() -> [(Option<bool>, ChannelOptions); 3] {
    [None, Some(true), Some(false)].map(|t| {
        (
            t,
            ChannelOptions {
                socket_threads: t,
                ..ChannelOptions::default()
            },
        )
    })
}

/// Reads `r` to its end, then waits for the `sender` thread; panics naming
/// `what` if either failed.
fn receive_all(
    mut r: DataReader,
    sender: std::thread::JoinHandle<std::io::Result<()>>,
    what: &str,
) -> Vec<u8> {
    let mut got = Vec::new();
    r.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    sender
        .join()
        .expect("join")
        .unwrap_or_else(|e| panic!("{what} writer: {e}"));
    got
}

#[test]
fn every_stack_over_loopback_tcp() {
    for (name, stack) in all_stacks() {
        for (threads, opts) in socket_thread_variants() {
            for n in [1usize, 2, 3, 4, 8] {
                let d = data(300_000, n as u32);
                let (ws, rs) = tcp_pairs(n);
                let (st, dd, o) = (stack.clone(), d.clone(), opts.clone());
                let sender = std::thread::spawn(move || -> std::io::Result<()> {
                    let mut w = DataWriter::new(ws, &st, &o)?;
                    let mut src = &dd[..];
                    w.copy_from(&mut src)?;
                    w.finish()
                });
                let what = format!("{name} n={n} threads={threads:?}");
                let r = DataReader::new(rs, &stack, &ChannelOptions::default()).expect("reader");
                let got = receive_all(r, sender, &what);
                assert!(got == d, "{what}: data differs");
            }
        }
    }
}

#[test]
fn bufread_hands_out_buffers() {
    use std::io::BufRead;
    let stack = &all_stacks()[3].1; // BLOWFISH+gzip
    let d = data(100_000, 9);
    let (ws, rs) = tcp_pairs(3);
    let (st, dd) = (stack.clone(), d.clone());
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = DataWriter::new(ws, &st, &ChannelOptions::default())?;
        w.write_all(&dd)?;
        w.flush()?;
        w.finish()
    });
    let mut r = DataReader::new(rs, stack, &ChannelOptions::default()).expect("reader");
    let mut got = Vec::new();
    loop {
        let b = r.fill_buf().expect("fill");
        if b.is_empty() {
            break;
        }
        let k = b.len().min(1000);
        got.extend_from_slice(&b[..k]);
        r.consume(k);
    }
    sender.join().expect("join").expect("writer");
    assert!(got == d);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_input_any_chunking_roundtrips(
        d in proptest::collection::vec(any::<u8>(), 0..60_000),
        n in 1usize..=8,
        which in 0usize..10,
        chunks in proptest::collection::vec(1usize..20_000, 0..6),
        read_size in 1usize..40_000,
        cap in 1usize..70_000,
    ) {
        let (name, stack) = &all_stacks()[which];
        let got = roundtrip_pipes(n, stack, &d, &chunks, read_size, cap)
            .map_err(|e| TestCaseError::fail(format!("{name} n={n}: {e}")))?;
        prop_assert!(got == d, "{} n={}: data differs", name, n);
    }
}

/// One stream's share compresses to almost nothing while the other's does
/// not compress at all: the compressor of stream 0 sits on its data while
/// stream 1 fills the sockets. The idle flush of the sending workers keeps
/// this from deadlocking with a round-robin reader.
#[test]
fn skewed_compression_does_not_deadlock() {
    let stack = uftp_datachannel::CodecStack::legacy(None, None, true).expect("gzip");
    let mut d = Vec::with_capacity(24 << 20);
    let noise = data(1 << 20, 99);
    let mut k = 0;
    while d.len() < 24 << 20 {
        d.extend_from_slice(&[0u8; 8192]);
        d.extend_from_slice(&noise[k..k + 8192]);
        k = (k + 8192) % ((1 << 20) - 8192);
    }
    for (threads, opts) in socket_thread_variants() {
        let (ws, rs) = tcp_pairs(2);
        let (st, dd) = (stack.clone(), d.clone());
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            let mut w = DataWriter::new(ws, &st, &opts)?;
            w.write_all(&dd)?;
            w.finish()
        });
        let mut r = DataReader::new(rs, &stack, &ChannelOptions::default()).expect("reader");
        let mut got = Vec::new();
        r.read_to_end(&mut got).expect("read");
        sender.join().expect("join").expect("writer");
        assert!(got == d, "threads={threads:?}: data differs");
    }
}

/// ChaCha20-Poly1305 hands whole buffers of sealed records to the socket
/// thread (`write_owned`); with a flush between two messages and at every
/// stream count, with the socket threads on and off.
#[test]
fn sealed_records_with_and_without_socket_threads() {
    use uftp_datachannel::{CodecParams, CodecStack};
    use uftpd_chacha20poly1305 as _; // registers the codec
    let make = || {
        CodecStack::plain()
            .with(
                "CHACHA20-POLY1305",
                CodecParams::new().with_key((1..=32).collect::<Vec<u8>>()),
            )
            .expect("chacha stack")
    };
    let (a, b) = (data(700_000, 3), data(65_536 * 3 + 5, 4));
    for (threads, opts) in socket_thread_variants() {
        for n in [1usize, 2, 3] {
            let (ws, rs) = tcp_pairs(n);
            let (st, aa, bb, o) = (make(), a.clone(), b.clone(), opts.clone());
            let sender = std::thread::spawn(move || -> std::io::Result<()> {
                let mut w = DataWriter::new(ws, &st, &o)?;
                w.write_all(&aa)?;
                w.flush()?;
                w.write_all(&bb)?;
                w.finish()
            });
            let r = DataReader::new(rs, &make(), &ChannelOptions::default()).expect("reader");
            let got = receive_all(r, sender, &format!("n={n} threads={threads:?}"));
            assert!(
                got.len() == a.len() + b.len()
                    && got[..a.len()] == a[..]
                    && got[a.len()..] == b[..],
                "n={n} threads={threads:?}: data differs"
            );
        }
    }
}

#[test]
fn single_codec_stream_delivers_what_arrived_without_waiting_for_more() {
    // A request/response exchange over one gzip stream (what sync does over
    // a codec channel): the reader must hand out a flushed message while
    // the writer waits for the answer, however the reader batches its reads.
    // (A block cipher's reader holds back the last block until more
    // arrives, to check the padding: no such exchange over AES alone.)
    for stack in [uftp_datachannel::CodecStack::legacy(None, None, true).expect("gzip")] {
        for (threads, opts) in socket_thread_variants() {
            let what = format!("{} threads={threads:?}", stack.describe());
            let (ws, rs) = tcp_pairs(1);
            let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
            let (a, b) = (data(200_000, 1), data(50_000, 2));
            let (st, aa, bb) = (stack.clone(), a.clone(), b.clone());
            let sender = std::thread::spawn(move || -> std::io::Result<()> {
                let mut w = DataWriter::new(ws, &st, &opts)?;
                w.write_all(&aa)?;
                w.flush()?;
                ack_rx
                    .recv_timeout(std::time::Duration::from_secs(20))
                    .map_err(|_| std::io::Error::other("the reader never got the first message"))?;
                w.write_all(&bb)?;
                w.finish()
            });
            let mut r = DataReader::new(rs, &stack, &ChannelOptions::default()).expect("reader");
            let mut got = vec![0u8; a.len()];
            r.read_exact(&mut got)
                .unwrap_or_else(|e| panic!("{what}: first message: {e}"));
            assert!(got == a, "{what}: first message differs");
            ack_tx.send(()).expect("ack");
            let mut rest = Vec::new();
            r.read_to_end(&mut rest)
                .unwrap_or_else(|e| panic!("{what}: second message: {e}"));
            assert!(rest == b, "{what}: second message differs");
            sender
                .join()
                .expect("join")
                .unwrap_or_else(|e| panic!("{what}: writer: {e}"));
        }
    }
}
