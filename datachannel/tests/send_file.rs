//! `DataWriter::send_file`: frames straight out of a mapped file put the
//! same bytes on the wire as reading the file, plain or through codecs
//! that read the mapping, and a file truncated while it is being sent
//! fails the transfer (no SIGBUS: the kernel's EFAULT for plain frames,
//! the guarded mapping for codecs).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use common::*;
use uftp_datachannel::{ChannelOptions, CodecStack, DataWriter};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uftp-dc-sendfile-{}", std::process::id()));
    fs::create_dir_all(&d).expect("scratch dir");
    d.join(name)
}

/// Truncates the file at `path` to zero bytes (another process's doing,
/// as far as the sender can tell).
fn cut_to_nothing(path: &PathBuf) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncation")
        .set_len(0)
        .expect("truncate");
}

/// Sends `len` bytes of `path` from `offset` over `n` file sinks.
fn send(
    path: &PathBuf,
    n: usize,
    offset: u64,
    len: u64,
    opts: &ChannelOptions,
) -> (Option<u64>, Vec<Vec<u8>>) {
    send_with(path, n, offset, len, opts, &CodecStack::plain())
}

/// `send` through the codecs of `stack`.
fn send_with(
    path: &PathBuf,
    n: usize,
    offset: u64,
    len: u64,
    opts: &ChannelOptions,
    stack: &CodecStack,
) -> (Option<u64>, Vec<Vec<u8>>) {
    let outs: Vec<PathBuf> = (0..n)
        .map(|i| scratch(&format!("out.{n}.{offset}.{i}")))
        .collect();
    let sinks: Vec<File> = outs
        .iter()
        .map(|p| File::create(p).expect("sink"))
        .collect();
    let mut w = DataWriter::new(sinks, stack, opts).expect("writer");
    let mut f = File::open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let sent = w.send_file(f.as_fd(), len).expect("send_file");
    if sent.is_some() {
        let pos = f.stream_position().expect("position");
        assert_eq!(pos, offset + sent.unwrap_or(0), "position after send_file");
    }
    w.finish().expect("finish");
    let got = outs
        .iter()
        .map(|p| {
            let b = fs::read(p).expect("read sink");
            let _ = fs::remove_file(p);
            b
        })
        .collect();
    (sent, got)
}

#[test]
fn mapped_frames_match_read_frames() {
    let d = data(3 * (1 << 20) + 77_777, 21);
    let path = scratch("src.bin");
    fs::write(&path, &d).expect("write source");
    let small = ChannelOptions {
        batch_size: 3 * 16384,
        ..ChannelOptions::default()
    };
    for opts in [ChannelOptions::default(), small] {
        for n in [2usize, 3, 4] {
            for (offset, len) in [
                (0u64, d.len() as u64),
                (5000, 1_000_000),
                (4096, 16384),
                (123, 0),
                (d.len() as u64 - 10, 10),
            ] {
                let (sent, got) = send(&path, n, offset, len, &opts);
                assert_eq!(sent, Some(len), "n={n} offset={offset}");
                let part = &d[offset as usize..(offset + len) as usize];
                let want = encode_streams(n, &CodecStack::plain(), part);
                assert!(got == want, "n={n} offset={offset} len={len}: wire differs");
            }
        }
    }
    // a file shorter than asked for: what there is, and the count says so
    let (sent, got) = send(&path, 2, 1000, 1 << 40, &ChannelOptions::default());
    assert_eq!(sent, Some(d.len() as u64 - 1000));
    assert!(got == encode_streams(2, &CodecStack::plain(), &d[1000..]));
    let _ = fs::remove_file(&path);
}

#[test]
fn not_applicable_sends_nothing() {
    let path = scratch("na.bin");
    fs::write(&path, b"hello").expect("write");
    let f = File::open(&path).expect("open");
    // one plain stream (sendfile is used there), or plain sinks without
    // descriptors: the caller copies
    let mut w = DataWriter::new(
        vec![io::sink()],
        &CodecStack::plain(),
        &ChannelOptions::default(),
    )
    .expect("writer");
    assert_eq!(w.send_file(f.as_fd(), 5).expect("one stream"), None);
    let caps: Vec<Capture> = (0..2).map(|_| Capture::default()).collect();
    let mut w =
        DataWriter::new(caps, &CodecStack::plain(), &ChannelOptions::default()).expect("writer");
    // sinks without a descriptor
    assert_eq!(w.send_file(f.as_fd(), 5).expect("no fds"), None);
    w.write_all(b"abc").expect("write");
    w.finish().expect("finish");
    // not a regular file
    let (a, _b) = UnixStream::pair().expect("pair");
    let sinks: Vec<File> = (0..2)
        .map(|i| File::create(scratch(&format!("na.{i}"))).expect("sink"))
        .collect();
    let mut w =
        DataWriter::new(sinks, &CodecStack::plain(), &ChannelOptions::default()).expect("writer");
    assert_eq!(w.send_file(a.as_fd(), 5).expect("socket"), None);
    w.finish().expect("finish");
    let _ = fs::remove_file(&path);
}

/// The file is cut to nothing while the workers are still sending it: the
/// kernel's copy from the mapping faults, the transfer fails with an error
/// and this process is not killed by SIGBUS.
#[test]
fn truncated_while_sending_is_an_error() {
    let d = data(8 << 20, 4);
    let path = scratch("trunc.bin");
    fs::write(&path, &d).expect("write source");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..2 {
        let (a, b) = UnixStream::pair().expect("pair");
        ours.push(a);
        theirs.push(b);
    }
    let mut w =
        DataWriter::new(ours, &CodecStack::plain(), &ChannelOptions::default()).expect("writer");
    let f = File::open(&path).expect("open");
    let sent = w.send_file(f.as_fd(), d.len() as u64).expect("send_file");
    assert_eq!(sent, Some(d.len() as u64));
    // the workers are blocked on full sockets: cut the file now
    cut_to_nothing(&path);
    let readers: Vec<_> = theirs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                sink.len()
            })
        })
        .collect();
    let r = w.finish();
    let got: usize = readers.into_iter().map(|h| h.join().expect("reader")).sum();
    let e = r.expect_err("a truncated file must fail the transfer");
    assert!(e.to_string().contains("shrank"), "{e}");
    assert!(
        got < d.len(),
        "only part of the file was sent ({got} bytes)"
    );
    let _ = fs::remove_file(&path);
}

/// Codecs read their input from the (guarded) mapping: the same bytes on
/// the wire as through `copy_from` (deterministic ciphers compared byte
/// for byte; every stack decoded), over one and several streams.
#[test]
fn codecs_read_the_mapping_and_send_the_same_data() {
    let d = data(3 * (1 << 20) + 77_777, 22);
    let path = scratch("codec-src.bin");
    fs::write(&path, &d).expect("write source");
    let aes = CodecStack::legacy(Some(&[7u8; 32]), Some("AES"), false).expect("aes");
    for n in [1usize, 2, 4] {
        for (offset, len) in [(0u64, d.len() as u64), (5000, 1_000_000), (123, 0)] {
            let (sent, got) = send_with(&path, n, offset, len, &ChannelOptions::default(), &aes);
            assert_eq!(
                sent,
                Some(len),
                "n={n} offset={offset}: the mapped path applies"
            );
            let part = &d[offset as usize..(offset + len) as usize];
            assert!(
                got == encode_streams(n, &aes, part),
                "n={n} offset={offset}: wire differs"
            );
        }
    }
    for (name, stack) in all_stacks() {
        for n in [1usize, 3] {
            let (sent, got) = send_with(
                &path,
                n,
                1000,
                2_000_000,
                &ChannelOptions::default(),
                &stack,
            );
            if stack.is_plain() && n == 1 {
                assert_eq!(sent, None, "one plain stream is sendfile's business");
                continue;
            }
            assert_eq!(sent, Some(2_000_000), "{name} n={n}");
            let back = decode_streams(&got, &stack, 65536).expect("decode");
            assert!(
                back == d[1000..2_001_000],
                "{name} n={n}: decoded data differs"
            );
        }
    }
    let _ = fs::remove_file(&path);
}

/// The file is cut to nothing while encrypting workers read it from the
/// mapping: the transfer fails with an error, the streams end without
/// their final cipher block, and this process is not killed by SIGBUS.
#[test]
fn codec_reading_a_truncated_file_is_an_error() {
    let d = data(24 << 20, 5);
    let aes = CodecStack::legacy(Some(&[9u8; 32]), Some("AES"), false).expect("aes");
    for n in [1usize, 2] {
        let path = scratch(&format!("codec-trunc.{n}.bin"));
        fs::write(&path, &d).expect("write source");
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..n {
            let (a, b) = UnixStream::pair().expect("pair");
            ours.push(a);
            theirs.push(b);
        }
        let mut w = DataWriter::new(ours, &aes, &ChannelOptions::default()).expect("writer");
        let f = File::open(&path).expect("open");
        // Slow readers: the workers block on full sockets long before the
        // end; the file is cut meanwhile, then the readers drain.
        let readers: Vec<_> = theirs
            .into_iter()
            .map(|mut s| {
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(400));
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    sink
                })
            })
            .collect();
        let cut = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                cut_to_nothing(&path);
            })
        };
        let sent = w.send_file(f.as_fd(), d.len() as u64);
        let r = sent
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|_| w.finish());
        cut.join().expect("truncation");
        let got: Vec<Vec<u8>> = readers
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .collect();
        let e = r.expect_err("a truncated file must fail the transfer");
        assert!(e.to_string().contains("shrank"), "n={n}: {e}");
        assert!(
            decode_streams(&got, &aes, 65536).is_err(),
            "n={n}: the receiver must not see a complete-looking stream"
        );
        let _ = fs::remove_file(&path);
    }
}
