//! Single-thread speed of each codec encoder/decoder, without sockets or
//! threads: the ceiling the data channel is measured against.
//!
//! `cargo run --release -p uftp-datachannel --example codec_speed [MIB]`

use std::io::{self, Read, Write};
use std::time::Instant;

use codec_api::{CodecParams, PlainSink};
use uftp_datachannel::builtin_codecs;

fn main() -> io::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let mut block = vec![0u8; 1 << 20];
    let mut x: u32 = 12345;
    for (i, b) in block.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = if i % 3 == 0 { (x % 16) as u8 } else { x as u8 };
    }
    let keys: [(&str, Vec<u8>); 5] = [
        ("BLOWFISH", vec![7; 56]),
        ("AES", vec![7; 32]),
        ("AES", vec![7; 40]),
        ("AES", vec![7; 48]),
        ("gzip", vec![]),
    ];
    for (name, key) in keys {
        let Some(d) = builtin_codecs().into_iter().find(|d| d.name == name) else {
            continue;
        };
        let codec = d.instantiate();
        let mut p = CodecParams::new();
        if !key.is_empty() {
            p = p.with_key(key.clone());
        }
        let label = if key.is_empty() {
            name.to_string()
        } else {
            format!("{name}/{}", key.len())
        };
        let n = if name == "gzip" || name == "BLOWFISH" {
            mib / 8
        } else {
            mib
        };
        // encode into a sink (timed), then into memory for the decode run
        let t = Instant::now();
        {
            let mut enc = codec.encoder(&p, Box::new(PlainSink::new(io::sink())))?;
            for _ in 0..n {
                enc.write_all(&block)?;
            }
            enc.finish()?;
        }
        let enc_s = t.elapsed().as_secs_f64();
        let mut wire = Vec::with_capacity(n << 20 | 4096);
        {
            let mut enc = codec.encoder(&p, Box::new(PlainSink::new(&mut wire)))?;
            for _ in 0..n {
                enc.write_all(&block)?;
            }
            enc.finish()?;
        }
        let t = Instant::now();
        let mut dec = codec.decoder(&p, Box::new(&wire[..]))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let k = dec.read(&mut buf)?;
            if k == 0 {
                break;
            }
            total += k;
        }
        let dec_s = t.elapsed().as_secs_f64();
        assert_eq!(total, n << 20);
        let mb = (n << 20) as f64 / 1e6;
        println!(
            "{label:12} encode {:8.1} MB/s  decode {:8.1} MB/s",
            mb / enc_s,
            mb / dec_s
        );
    }
    Ok(())
}
