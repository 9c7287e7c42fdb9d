//! `uftp-codec`: encode or decode a UFTP data channel from the command line.
//!
//! ```text
//! uftp-codec --encode|--decode [--algo BLOWFISH|AES] [--key-b64 KEY]
//!            [--gzip [--level N] [--threads N] [--engine auto|zlib|isal]]
//!            [--streams N] [--prefix PREFIX]
//! uftp-codec --loopback-bench MIB [--bench-side encode|decode|both] [--algo ..] [--key-b64 ..]
//!            [--gzip] [--streams N]
//! ```
//!
//! Encoding reads plain data from stdin; decoding writes it to stdout. The
//! encoded side is stdout/stdin for one stream without `--prefix`, else the
//! files `PREFIX.0` .. `PREFIX.<N-1>` (one per TCP stream).
//! `--loopback-bench` sends MIB mebibytes through the stack over loopback
//! TCP inside this process and prints the throughput.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use codec_api::CodecParams;
use uftp_datachannel::{
    ChannelOptions, CodecStack, DataReader, DataWriter, SinkStream, SourceStream,
};

const USAGE: &str = "usage: uftp-codec --encode|--decode [--algo BLOWFISH|AES] [--key-b64 KEY] \
[--gzip [--level N] [--threads N] [--engine auto|zlib|isal]] [--streams N] [--prefix PREFIX]\n       uftp-codec --loopback-bench MIB \
[--bench-side encode|decode|both] [--algo ..] [--key-b64 ..] [--gzip] [--streams N]";

#[derive(Debug, PartialEq)]
enum Mode {
    Encode,
    Decode,
    Bench(u64),
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    algo: Option<String>,
    key: Option<Vec<u8>>,
    gzip: bool,
    level: Option<String>,
    threads: Option<String>,
    engine: Option<String>,
    streams: usize,
    prefix: Option<String>,
    side: String,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut mode = None;
    let mut a = Args {
        mode: Mode::Encode,
        algo: None,
        key: None,
        gzip: false,
        level: None,
        threads: None,
        engine: None,
        streams: 1,
        prefix: None,
        side: "both".into(),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--encode" => mode = Some(Mode::Encode),
            "--decode" => mode = Some(Mode::Decode),
            "--loopback-bench" => {
                let v = value("--loopback-bench")?;
                mode = Some(Mode::Bench(
                    v.parse().map_err(|_| format!("bad MIB '{v}'"))?,
                ));
            }
            "--algo" => a.algo = Some(value("--algo")?),
            "--key-b64" => {
                let v = value("--key-b64")?;
                let k = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|e| format!("--key-b64: {e}"))?;
                a.key = Some(k);
            }
            "--gzip" => a.gzip = true,
            "--level" => a.level = Some(value("--level")?),
            "--threads" => a.threads = Some(value("--threads")?),
            "--engine" => a.engine = Some(value("--engine")?),
            "--streams" => {
                let v = value("--streams")?;
                a.streams = v.parse().map_err(|_| format!("bad stream count '{v}'"))?;
                if a.streams == 0 {
                    return Err("--streams must be at least 1".into());
                }
            }
            "--prefix" => a.prefix = Some(value("--prefix")?),
            "--bench-side" => a.side = value("--bench-side")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    a.mode = mode.ok_or("one of --encode, --decode, --loopback-bench is required")?;
    if a.streams > 1 && a.prefix.is_none() && !matches!(a.mode, Mode::Bench(_)) {
        return Err("more than one stream needs --prefix".into());
    }
    Ok(a)
}

fn stack(a: &Args) -> Result<CodecStack, String> {
    let mut s = CodecStack::legacy(a.key.as_deref(), a.algo.as_deref(), false)
        .map_err(|e| e.to_string())?;
    if a.gzip {
        let mut p = CodecParams::new();
        if let Some(l) = &a.level {
            p = p.with_option("level", l.clone());
        }
        if let Some(t) = &a.threads {
            p = p.with_option("threads", t.clone());
        }
        if let Some(e) = &a.engine {
            p = p.with_option(uftpd_gzip::ENGINE_OPTION, e.clone());
        }
        s = s
            .with_codec(Arc::from(uftpd_gzip::DESCRIPTOR.instantiate()), p)
            .map_err(|e| e.to_string())?;
    }
    Ok(s)
}

#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SinkStream for Capture {}

struct Stdout(io::Stdout);

impl Write for Stdout {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl SinkStream for Stdout {}

struct Stdin(io::Stdin);

impl Read for Stdin {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.0.read(b)
    }
}

impl SourceStream for Stdin {}

fn files(prefix: &str, n: usize, create: bool) -> io::Result<Vec<File>> {
    (0..n)
        .map(|i| {
            let p = format!("{prefix}.{i}");
            let f = if create {
                File::create(&p)
            } else {
                File::open(&p)
            };
            f.map_err(|e| io::Error::new(e.kind(), format!("{p}: {e}")))
        })
        .collect()
}

fn encode(a: &Args, s: &CodecStack) -> io::Result<()> {
    let opts = ChannelOptions::default();
    let mut w = match &a.prefix {
        Some(p) => DataWriter::new(files(p, a.streams, true)?, s, &opts)?,
        None => DataWriter::new(vec![Stdout(io::stdout())], s, &opts)?,
    };
    w.copy_from(&mut io::stdin().lock())?;
    w.finish()
}

fn decode(a: &Args, s: &CodecStack) -> io::Result<()> {
    let opts = ChannelOptions::default();
    let mut r = match &a.prefix {
        Some(p) => DataReader::new(files(p, a.streams, false)?, s, &opts)?,
        None => DataReader::new(vec![Stdin(io::stdin())], s, &opts)?,
    };
    let mut out = io::stdout().lock();
    io::copy(&mut r, &mut out)?;
    out.flush()
}

fn bench(a: &Args, s: &CodecStack, mib: u64) -> io::Result<()> {
    let n = a.streams;
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let mut ws = Vec::new();
    let mut rs = Vec::new();
    for _ in 0..n {
        ws.push(TcpStream::connect(addr)?);
        rs.push(l.accept()?.0);
    }
    // Pseudo-random, mildly compressible data, generated once.
    let mut block = vec![0u8; 1 << 20];
    let mut x: u32 = 12345;
    for (i, b) in block.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = if i % 3 == 0 { (x % 16) as u8 } else { x as u8 };
    }
    let opts = ChannelOptions::default();
    let (st, o) = (s.clone(), opts.clone());
    let total = mib << 20;
    let side = a.side.clone();
    // "encode": our writer, raw sockets drained on the other side;
    // "decode": pre-encoded bytes sent raw, our reader decodes;
    // "both": our writer and our reader.
    let pre_encoded: Vec<Vec<u8>> = if side == "decode" {
        let caps: Vec<Capture> = (0..n).map(|_| Capture::default()).collect();
        let mut w = DataWriter::new(caps.clone(), s, &opts)?;
        for _ in 0..mib {
            w.write_all(&block)?;
        }
        w.finish()?;
        caps.into_iter().map(|c| c.take()).collect()
    } else {
        Vec::new()
    };
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> io::Result<()> {
        if side == "decode" {
            let hs: Vec<_> = ws
                .into_iter()
                .zip(pre_encoded)
                .map(|(mut w, d)| std::thread::spawn(move || w.write_all(&d)))
                .collect();
            for h in hs {
                h.join().map_err(|_| io::Error::other("panic"))??;
            }
            return Ok(());
        }
        let mut w = DataWriter::new(ws, &st, &o)?;
        for _ in 0..mib {
            w.write_all(&block)?;
        }
        w.finish()
    });
    let got = if a.side == "encode" {
        let hs: Vec<_> = rs
            .into_iter()
            .map(|mut r| std::thread::spawn(move || io::copy(&mut r, &mut io::sink())))
            .collect();
        for h in hs {
            h.join().map_err(|_| io::Error::other("panic"))??;
        }
        total
    } else {
        let mut r = DataReader::new(rs, s, &opts)?;
        io::copy(&mut r, &mut io::sink())?
    };
    sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    if got != mib << 20 {
        return Err(io::Error::other(format!("received {got} bytes")));
    }
    println!(
        "{} side={} streams={n} bytes={got} seconds={secs:.3} MB/s={:.1}",
        s.describe(),
        a.side,
        got as f64 / secs / 1e6
    );
    Ok(())
}

fn main() -> ExitCode {
    let a = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("uftp-codec: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let s = match stack(&a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("uftp-codec: {e}");
            return ExitCode::from(2);
        }
    };
    let r = match a.mode {
        Mode::Encode => encode(&a, &s),
        Mode::Decode => decode(&a, &s),
        Mode::Bench(mib) => bench(&a, &s, mib),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uftp-codec: {e}");
            ExitCode::FAILURE
        }
    }
}
