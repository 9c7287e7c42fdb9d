//! Batched hand-offs: the wire format does not depend on how the bytes
//! were handed to the writer, frames of any size a peer may send are
//! read, and `read` / `fill_buf` / `consume` mix freely.

mod common;

use std::io::{self, BufRead, Read, Write};

use common::*;
use uftp_datachannel::frame::{FrameHeader, MAX_ACCEPT_BLOCK, chunk_range};
use uftp_datachannel::{ChannelOptions, CodecStack, DataReader, DataWriter};

fn capture_with(
    n: usize,
    stack: &CodecStack,
    opts: &ChannelOptions,
    f: impl FnOnce(&mut DataWriter) -> io::Result<()>,
) -> Vec<Vec<u8>> {
    let caps: Vec<Capture> = (0..n).map(|_| Capture::default()).collect();
    let mut w = DataWriter::new(caps.clone(), stack, opts).expect("writer");
    f(&mut w).expect("write");
    w.finish().expect("finish");
    caps.iter()
        .map(|c| c.0.lock().expect("lock").clone())
        .collect()
}

/// Sending the complete blocks early (a paced sender) and small batches
/// put the same bytes on the wire as one large write.
#[test]
fn send_blocks_and_batch_size_keep_the_wire_format() {
    let d = data(200_000, 5);
    for (name, stack) in all_stacks()
        .into_iter()
        .filter(|(n, _)| !n.contains("gzip"))
    {
        for n in [2usize, 3, 4] {
            let opts = ChannelOptions::default();
            let whole = capture_with(n, &stack, &opts, |w| w.write_all(&d));
            let paced = capture_with(n, &stack, &opts, |w| {
                for piece in d.chunks(7_000) {
                    w.write_all(piece)?;
                    w.send_blocks()?;
                }
                Ok(())
            });
            assert!(whole == paced, "{name} n={n}: send_blocks changed the wire");
            let small = ChannelOptions {
                batch_size: 1,
                ..ChannelOptions::default()
            };
            let tiny = capture_with(n, &stack, &small, |w| {
                let mut src = &d[..];
                w.copy_from(&mut src).map(|_| ())
            });
            assert!(whole == tiny, "{name} n={n}: batch size changed the wire");
        }
    }
}

/// Frames as a sender with large blocks makes them (UFTPD 3.x sends
/// blocks of its BUFFER_SIZE), up to the largest accepted block.
fn foreign_streams(n: usize, block: usize, d: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new(); n];
    for (seq, b) in d.chunks(block).enumerate() {
        for (i, s) in out.iter_mut().enumerate() {
            let (off, len) = chunk_range(b.len(), n, i);
            let h = FrameHeader {
                stream: i as u16,
                seq: seq as u32,
                size: b.len() as u32,
                len: len as u32,
            };
            s.extend_from_slice(&h.encode());
            s.extend_from_slice(&b[off..off + len]);
        }
    }
    out
}

#[test]
fn large_foreign_blocks_are_read() {
    let d = data(3 * MAX_ACCEPT_BLOCK + 12_345, 11);
    let plain = CodecStack::plain();
    for n in [2usize, 3] {
        for block in [100_000usize, 700_001, MAX_ACCEPT_BLOCK] {
            let streams = foreign_streams(n, block, &d);
            for read_size in [1usize, 4096, 1 << 20] {
                if read_size == 1 && block != 100_000 {
                    continue;
                }
                let got = decode_streams(&streams, &plain, read_size)
                    .unwrap_or_else(|e| panic!("n={n} block={block}: {e}"));
                assert!(
                    got == d,
                    "n={n} block={block} read={read_size}: data differs"
                );
            }
        }
    }
}

/// `read`, `fill_buf` and `consume` in any mix give the bytes in order,
/// framed or not, with or without codecs.
#[test]
fn read_and_fill_buf_mix() {
    let d = data(500_000, 3);
    for (name, stack) in all_stacks() {
        for n in [1usize, 2, 4] {
            if n == 1 && stack.is_plain() {
                continue;
            }
            let streams = encode_streams(n, &stack, &d);
            let srcs: Vec<io::Cursor<Vec<u8>>> =
                streams.iter().map(|s| io::Cursor::new(s.clone())).collect();
            let mut r = DataReader::new(srcs, &stack, &ChannelOptions::default()).expect("reader");
            let mut got = Vec::new();
            let mut buf = vec![0u8; 70_000];
            let mut k = 0usize;
            loop {
                k += 1;
                if k.is_multiple_of(3) {
                    let b = r.fill_buf().unwrap_or_else(|e| panic!("{name} n={n}: {e}"));
                    if b.is_empty() {
                        break;
                    }
                    let take = b.len().min(1 + k * 997 % 50_000);
                    got.extend_from_slice(&b[..take]);
                    r.consume(take);
                } else {
                    let want = 1 + k * 7919 % buf.len();
                    let m = r
                        .read(&mut buf[..want])
                        .unwrap_or_else(|e| panic!("{name} n={n}: {e}"));
                    if m == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..m]);
                }
            }
            assert!(got == d, "{name} n={n}: data differs");
            // the end stays the end
            assert_eq!(r.read(&mut buf).expect("after end"), 0);
            assert!(r.fill_buf().expect("after end").is_empty());
        }
    }
}

/// A writer that takes at most `step` bytes per call (partial writes).
struct Trickle {
    out: Vec<u8>,
    step: usize,
}

impl Write for Trickle {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let k = b.len().min(self.step);
        self.out.extend_from_slice(&b[..k]);
        Ok(k)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(self.step - n);
            self.out.extend_from_slice(&b[..k]);
            n += k;
            if n == self.step {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `write_to` hands over the bytes in order (whatever the writer takes per
/// call), mixed with `read` and `fill_buf`, and respects `max`.
#[test]
fn write_to_mixes_with_read_and_fill_buf() {
    let d = data(700_000, 8);
    for (name, stack) in all_stacks() {
        for n in [1usize, 2, 3, 4] {
            let streams = encode_streams(n, &stack, &d);
            let srcs: Vec<io::Cursor<Vec<u8>>> =
                streams.iter().map(|s| io::Cursor::new(s.clone())).collect();
            let mut r = DataReader::new(srcs, &stack, &ChannelOptions::default()).expect("reader");
            let mut sink = Trickle {
                out: Vec::new(),
                step: 777,
            };
            let mut buf = vec![0u8; 5000];
            let mut k = 0usize;
            loop {
                k += 1;
                let before = sink.out.len();
                let m = match k % 4 {
                    0 => {
                        let m = r.read(&mut buf).expect("read");
                        sink.out.extend_from_slice(&buf[..m]);
                        m
                    }
                    1 => {
                        let b = r.fill_buf().expect("fill");
                        let m = b.len().min(3000);
                        sink.out.extend_from_slice(&b[..m]);
                        r.consume(m);
                        m
                    }
                    _ => {
                        let max = 1 + k * 7919 % 300_000;
                        let m = r
                            .write_to(&mut sink, max)
                            .unwrap_or_else(|e| panic!("{name} n={n}: {e}"));
                        assert!(m <= max, "{name} n={n}: wrote {m} > max {max}");
                        m
                    }
                };
                assert_eq!(sink.out.len() - before, m, "{name} n={n}: count");
                if m == 0 {
                    break;
                }
            }
            assert!(sink.out == d, "{name} n={n}: data differs");
            assert_eq!(r.write_to(&mut sink, 10).expect("after end"), 0);
        }
    }
}
