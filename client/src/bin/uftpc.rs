//! `uftpc`: a minimal command-line UFTP client on top of `uftp-client`,
//! for benchmarks and scripting.
//!
//! ```text
//! uftpc [options] HOST:PORT SECRET get REMOTE LOCAL|-
//! uftpc [options] HOST:PORT SECRET put LOCAL REMOTE
//! uftpc [options] HOST:PORT SECRET ls [DIR]
//! uftpc [options] HOST:PORT SECRET sync-to-server LOCAL REMOTE
//! uftpc [options] HOST:PORT SECRET sync-to-client REMOTE LOCAL
//! uftpc [options] HOST:PORT SECRET put-archive LOCAL.tar REMOTE_DIR
//! options: -n STREAMS  -E KEY_BASE64  -a BLOWFISH|AES|CHACHA20-POLY1305
//!          -z (gzip)  -Z (zstd)  --compress gzip|zstd|none  --epsv
//!          --gzip-level 0-9 (what uftpc compresses with; default 1)
//! ```
//!
//! The options must match the transfer request (key, algo, compress). The
//! extensions (`-a CHACHA20-POLY1305` with a 32-byte key, `-Z`) are used only
//! if the server's FEAT offers them for the session.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use base64::Engine;
use uftp_client::{Client, ClientOptions, Compression};

fn usage() -> ExitCode {
    eprintln!(
        "usage: uftpc [-n STREAMS] [-E KEY_BASE64] [-a BLOWFISH|AES|CHACHA20-POLY1305] [-z | -Z | --compress gzip|zstd|none] [--gzip-level 0-9] [--zstd-level -7..19] [--epsv] HOST:PORT SECRET (get REMOTE LOCAL|- | put LOCAL REMOTE | ls [DIR] | sync-to-server LOCAL REMOTE | sync-to-client REMOTE LOCAL | put-archive LOCAL.tar REMOTE_DIR)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut opts = ClientOptions::default();
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => opts.streams = n,
                None => return usage(),
            },
            "-E" => match args
                .next()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            {
                Some(k) => opts.key = Some(k),
                None => return usage(),
            },
            "-a" => opts.algo = args.next(),
            "-z" => opts.compress = Compression::Gzip,
            "-Z" => opts.compress = Compression::Zstd,
            "--compress" => match args.next().map(|v| v.parse::<Compression>()) {
                Some(Ok(c)) => opts.compress = c,
                Some(Err(e)) => {
                    eprintln!("uftpc: {e}");
                    return usage();
                }
                None => return usage(),
            },
            "--gzip-level" => match args.next().and_then(|v| v.parse::<u32>().ok()) {
                Some(l) if l <= 9 => opts.gzip_level = l,
                _ => {
                    eprintln!("uftpc: --gzip-level wants a zlib level 0-9");
                    return usage();
                }
            },
            "--zstd-level" => match args.next().and_then(|v| v.parse::<i32>().ok()) {
                Some(l) if (uftpd_zstd::MIN_LEVEL..=uftpd_zstd::MAX_LEVEL).contains(&l) => {
                    opts.zstd_level = l
                }
                _ => {
                    eprintln!(
                        "uftpc: --zstd-level wants a zstd level {} to {}",
                        uftpd_zstd::MIN_LEVEL,
                        uftpd_zstd::MAX_LEVEL
                    );
                    return usage();
                }
            },
            "--epsv" => opts.epsv = true,
            "-h" | "--help" => return usage(),
            _ => rest.push(a),
        }
    }
    if rest.len() < 3 {
        return usage();
    }
    let (addr, secret, cmd) = (&rest[0], &rest[1], rest[2].as_str());
    let started = Instant::now();
    let result = (|| -> Result<u64, Box<dyn std::error::Error>> {
        let mut c = Client::connect(addr, secret, opts)?;
        let n = match (cmd, rest.get(3), rest.get(4)) {
            ("get", Some(remote), Some(local)) => {
                if local == "-" {
                    let stdout = io::stdout();
                    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
                    let n = c.get(remote, None, &mut out)?;
                    out.flush()?;
                    n
                } else {
                    let mut f = File::create(local)?;
                    c.get(remote, None, &mut f)?
                }
            }
            ("put", Some(local), Some(remote)) => {
                let f = File::open(local)?;
                c.put_file(remote, &f, None)?
            }
            ("sync-to-server", Some(local), Some(remote)) => {
                let st = c.sync_to_server(std::path::Path::new(local), remote)?;
                eprintln!("sync: {st}");
                st.bytes_sent
            }
            ("sync-to-client", Some(remote), Some(local)) => {
                let st = c.sync_to_client(remote, std::path::Path::new(local))?;
                eprintln!("sync: {st}");
                st.bytes_received
            }
            ("put-archive", Some(local), Some(remote)) => {
                let mut f = File::open(local)?;
                let len = f.metadata()?.len();
                let (n, reply) = c.put_archive(remote, &mut f, Some(len))?;
                println!("{}", reply.lines.join("\n"));
                n
            }
            ("ls", dir, None) => {
                for e in c.list(dir.map(String::as_str).unwrap_or("."))? {
                    println!(
                        "{}{} {:>12} {}",
                        if e.is_dir { 'd' } else { '-' },
                        e.perm,
                        e.size,
                        e.name
                    );
                }
                0
            }
            _ => return Err("unknown command".into()),
        };
        c.quit()?;
        Ok(n)
    })();
    match result {
        Ok(n) => {
            if n > 0 {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "{n} bytes in {secs:.3} s ({:.1} MiB/s)",
                    n as f64 / secs / 1048576.0
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uftpc: {e}");
            ExitCode::FAILURE
        }
    }
}
