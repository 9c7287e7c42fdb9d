//! Single-core throughput of the extension codecs, in memory (no sockets):
//! ChaCha20-Poly1305 seal/open (each engine: ring, and OpenSSL's libcrypto
//! where it loads) and zstd compress/decompress, each through the codec API
//! exactly as a data channel uses it.
//!
//! ```text
//! cargo run --release -p uftpd-chacha20poly1305 --example chacha_speed [FILE] [MiB]
//! ```
//!
//! FILE (default: 64 MiB of generated half-text, half-random data) is
//! what zstd compresses; compare with `zstd -b1 FILE` and
//! `openssl speed -evp chacha20-poly1305 -bytes 65536`. MB = 10^6 bytes.
//!
//! Times are the CPU time of the measuring thread (from
//! `/proc/thread-self/schedstat`, wall time where that is missing), so that
//! other work on a shared machine does not count; `openssl speed` also
//! measures CPU time unless given `-elapsed`.

use std::io::{Read, Write};
use std::time::Instant;

/// Start of a measurement: CPU time of this thread (ns) if the kernel
/// tells it, and wall time.
struct Clock(Option<u64>, Instant);

fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

impl Clock {
    fn start() -> Clock {
        Clock(thread_cpu_ns(), Instant::now())
    }

    fn secs(&self) -> f64 {
        match (self.0, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => self.1.elapsed().as_secs_f64(),
        }
    }
}

use codec_api::{CodecParams, PlainSink};
use uftpd_chacha20poly1305::{ENGINE_OPTION, Engine};
use uftpd_zstd as _;

fn mb_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// Encodes `data` in 64 KiB writes into `wire` (reused, so that its pages
/// are not faulted in during the measurement); returns MB/s of input.
fn encode(name: &str, p: &CodecParams, data: &[u8], wire: &mut Vec<u8>) -> f64 {
    let c = codec_api::codec(name).expect("codec");
    wire.clear();
    let t = Clock::start();
    {
        let mut enc = c
            .encoder(p, Box::new(PlainSink::new(&mut *wire)))
            .expect("encoder");
        for chunk in data.chunks(64 * 1024) {
            enc.write_all(chunk).expect("write");
        }
        enc.finish().expect("finish");
    }
    mb_s(data.len(), t.secs())
}

/// Decodes `wire` into 64 KiB reads; returns MB/s of output.
fn decode(name: &str, p: &CodecParams, wire: &[u8], want: &[u8]) -> f64 {
    let c = codec_api::codec(name).expect("codec");
    let mut dec = c.decoder(p, Box::new(wire)).expect("decoder");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let t = Clock::start();
    loop {
        let n = dec.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n;
    }
    let secs = t.secs();
    assert_eq!(total, want.len());
    mb_s(total, secs)
}

fn generated(mib: usize) -> Vec<u8> {
    let n = mib << 20;
    let mut v = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut line = 0u64;
    while v.len() < n {
        // half text lines, half xorshift noise, in 4 KiB pieces
        if (v.len() / 4096) % 2 == 0 {
            line += 1;
            v.extend_from_slice(format!("line {line:08} of generated benchmark text\n").as_bytes());
        } else {
            for _ in 0..512 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    v.truncate(n);
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args.next().filter(|a| a != "-");
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let data = match &file {
        Some(f) => std::fs::read(f).expect("read FILE"),
        None => generated(mib),
    };
    let rounds = 5;
    // pre-faulted output buffer, reused by every round
    let mut wire = vec![0u8; data.len() + data.len() / 100 + 4096];
    println!(
        "{} bytes of {}, best of {rounds} rounds, one core (thread CPU time), MB/s:",
        data.len(),
        file.as_deref().unwrap_or("generated data")
    );

    let chacha = uftpd_chacha20poly1305::NAME;
    for engine in [Engine::Ring, Engine::Libcrypto] {
        let label = format!("{chacha} {engine}");
        if let Err(why) = engine.describe() {
            println!("  {label:<28} skipped: {why}");
            continue;
        }
        let p = CodecParams::new()
            .with_key(vec![7u8; 32])
            .with_option(ENGINE_OPTION, engine.to_string())
            .for_stream(0, 1);
        let (mut enc, mut dec) = (0f64, 0f64);
        for _ in 0..rounds {
            enc = enc.max(encode(chacha, &p, &data, &mut wire));
            dec = dec.max(decode(chacha, &p, &wire, &data));
        }
        println!("  {label:<28} seal     {enc:4.0}   open       {dec:8.0}");
    }

    for level in [1, 3] {
        let p = CodecParams::new().with_option("level", level.to_string());
        let (mut enc, mut dec, mut ratio) = (0f64, 0f64, 0f64);
        for _ in 0..rounds {
            enc = enc.max(encode("zstd", &p, &data, &mut wire));
            ratio = data.len() as f64 / wire.len().max(1) as f64;
            dec = dec.max(decode("zstd", &p, &wire, &data));
        }
        println!(
            "  zstd -{level:<23} compress {enc:4.0}   decompress {dec:8.0}   ratio {ratio:.3}"
        );
    }
}
