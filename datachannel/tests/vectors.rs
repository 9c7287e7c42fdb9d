//! Cross-implementation vectors (tests/vectors, made by gen_vectors.py with
//! pycryptodome and Python's zlib): every vector decodes byte-exactly, and
//! for the vectors without gzip (whose output depends on the deflate
//! implementation) our encoder reproduces the vector byte for byte.

mod common;

use std::io::{self, Write};
use std::path::PathBuf;

use base64::Engine;
use common::*;
use uftp_datachannel::{ChannelOptions, CodecStack, DataReader, DataWriter};

struct Case {
    name: String,
    algo: Option<String>,
    key: Option<Vec<u8>>,
    gzip: bool,
    streams: usize,
    block_size: usize,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("vectors.tsv")).expect("vectors.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "bad line {l}");
            let opt = |s: &str| (s != "-").then(|| s.to_string());
            Case {
                name: f[0].into(),
                algo: opt(f[1]),
                key: opt(f[2]).map(|k| {
                    base64::engine::general_purpose::STANDARD
                        .decode(k)
                        .expect("base64")
                }),
                gzip: f[3] == "gzip",
                streams: f[4].parse().expect("streams"),
                block_size: f[5].parse().expect("block"),
            }
        })
        .collect()
}

fn load(c: &Case) -> (Vec<u8>, Vec<Vec<u8>>) {
    let d = dir().join("data");
    let plain = std::fs::read(d.join(format!("{}.plain", c.name))).expect("plain");
    let streams = (0..c.streams)
        .map(|i| std::fs::read(d.join(format!("{}.{i}", c.name))).expect("stream"))
        .collect();
    (plain, streams)
}

fn stack(c: &Case) -> CodecStack {
    CodecStack::legacy(c.key.as_deref(), c.algo.as_deref(), c.gzip).expect("stack")
}

#[test]
fn there_are_vectors() {
    let cs = cases();
    assert!(cs.len() >= 90, "{} cases", cs.len());
    assert!(
        cs.iter()
            .any(|c| c.streams == 4 && c.gzip && c.algo.is_some())
    );
}

#[test]
fn every_vector_decodes_exactly() {
    for c in cases() {
        let (plain, streams) = load(&c);
        for read_size in [1usize, 4096, 100_000] {
            let got = decode_streams(&streams, &stack(&c), read_size)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert!(got == plain, "{}: decoded data differs", c.name);
        }
    }
}

#[test]
fn our_encoding_matches_every_vector_without_gzip() {
    let mut checked = 0;
    for c in cases().into_iter().filter(|c| !c.gzip) {
        let (plain, streams) = load(&c);
        let caps: Vec<Capture> = (0..c.streams).map(|_| Capture::default()).collect();
        let opts = ChannelOptions {
            block_size: c.block_size,
            ..ChannelOptions::default()
        };
        let mut w = DataWriter::new(caps.clone(), &stack(&c), &opts).expect("writer");
        w.write_all(&plain).expect("write");
        w.finish().expect("finish");
        for (i, cap) in caps.iter().enumerate() {
            let ours = cap.0.lock().expect("lock").clone();
            assert!(
                ours == streams[i],
                "{} stream {i}: encoding differs",
                c.name
            );
        }
        checked += 1;
    }
    assert!(checked > 50);
}

#[test]
fn truncated_vectors_are_errors() {
    for c in cases().into_iter().filter(|c| c.gzip || c.streams > 1) {
        let (_, streams) = load(&c);
        for j in 0..c.streams {
            if streams[j].is_empty() {
                continue;
            }
            let mut t = streams.clone();
            t[j].pop();
            let r: io::Result<Vec<u8>> = {
                let srcs: Vec<io::Cursor<Vec<u8>>> = t.into_iter().map(io::Cursor::new).collect();
                DataReader::new(srcs, &stack(&c), &ChannelOptions::default())
                    .map_err(io::Error::from)
                    .and_then(|mut r| read_all(&mut r, 4096))
            };
            assert!(
                r.is_err(),
                "{} stream {j} minus one byte was accepted",
                c.name
            );
        }
    }
}
