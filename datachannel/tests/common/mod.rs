//! Helpers shared by the data channel integration tests.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use uftp_datachannel::pipe::pipe;
use uftp_datachannel::{ChannelOptions, CodecStack, DataReader, DataWriter, SinkStream};

/// Every legacy stack: encryption none/BLOWFISH/AES-128/192/256 x gzip.
pub fn all_stacks() -> Vec<(String, CodecStack)> {
    let keys: Vec<(Option<&str>, Option<Vec<u8>>)> = vec![
        (None, None),
        (Some("BLOWFISH"), Some((1..=56).collect())),
        (Some("AES"), Some((100..132).collect())),
        (Some("AES"), Some((100..140).collect())),
        (Some("AES"), Some((100..148).collect())),
    ];
    let mut v = Vec::new();
    for (algo, key) in keys {
        for gz in [false, true] {
            let s = CodecStack::legacy(key.as_deref(), algo, gz).expect("stack");
            let name = format!(
                "{}{}",
                s.describe(),
                key.as_ref()
                    .map_or(String::new(), |k| format!("/{}", k.len()))
            );
            v.push((name, s));
        }
    }
    v
}

/// Deterministic test data.
pub fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // half compressible, half not
            if (i / 4096) % 2 == 0 {
                (i % 7) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

/// Writes `data` in chunks of the given sizes (cycled), then finishes.
pub fn write_chunked(w: &mut DataWriter, data: &[u8], chunks: &[usize]) -> io::Result<()> {
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let c = if chunks.is_empty() {
            rest.len()
        } else {
            chunks[i % chunks.len()].max(1)
        };
        i += 1;
        let (a, b) = rest.split_at(c.min(rest.len()));
        w.write_all(a)?;
        rest = b;
    }
    Ok(())
}

/// Reads to the end with reads of `read_size`.
pub fn read_all(r: &mut dyn Read, read_size: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size.max(1)];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Round trip over in-memory pipes of `cap` bytes.
pub fn roundtrip_pipes(
    n: usize,
    stack: &CodecStack,
    data: &[u8],
    chunks: &[usize],
    read_size: usize,
    cap: usize,
) -> io::Result<Vec<u8>> {
    let (ws, rs): (Vec<_>, Vec<_>) = (0..n).map(|_| pipe(cap)).unzip();
    let opts = ChannelOptions::default();
    let (st, o, d, c) = (stack.clone(), opts.clone(), data.to_vec(), chunks.to_vec());
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let mut w = DataWriter::new(ws, &st, &o)?;
        write_chunked(&mut w, &d, &c)?;
        w.finish()
    });
    let mut r = DataReader::new(rs, stack, &opts)?;
    let got = read_all(&mut r, read_size);
    drop(r);
    let sent = sender.join().expect("writer thread");
    let got = got?;
    sent?;
    Ok(got)
}

/// A sink that keeps what is written (for capturing encoded streams).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SinkStream for Capture {}

/// Encodes `data` into `n` captured streams.
pub fn encode_streams(n: usize, stack: &CodecStack, data: &[u8]) -> Vec<Vec<u8>> {
    let caps: Vec<Capture> = (0..n).map(|_| Capture::default()).collect();
    let mut w = DataWriter::new(caps.clone(), stack, &ChannelOptions::default()).expect("writer");
    w.write_all(data).expect("write");
    w.finish().expect("finish");
    caps.iter()
        .map(|c| c.0.lock().expect("lock").clone())
        .collect()
}

/// Decodes captured streams.
pub fn decode_streams(
    streams: &[Vec<u8>],
    stack: &CodecStack,
    read_size: usize,
) -> io::Result<Vec<u8>> {
    let srcs: Vec<io::Cursor<Vec<u8>>> =
        streams.iter().map(|s| io::Cursor::new(s.clone())).collect();
    let mut r = DataReader::new(srcs, stack, &ChannelOptions::default())?;
    read_all(&mut r, read_size)
}
