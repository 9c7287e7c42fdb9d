//! Property tests: any data, written and read in any chunking, round-trips
//! through every legacy cipher; any truncation is an error.

use std::io::{self, Read, Write};

use codec_api::{CodecParams, EncodeWriter, PlainSink};
use proptest::prelude::*;
use uftpd_legacy_cipher as _;

fn key_for(which: u8, seed: u8) -> (&'static str, Vec<u8>) {
    let mk = |n: usize| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    match which % 5 {
        0 => ("BLOWFISH", mk(4 + (seed as usize % 53))),
        1 => ("AES", mk(32)),
        2 => ("AES", mk(40)),
        3 => ("AES", mk(48)),
        _ => ("BLOWFISH", mk(56)),
    }
}

fn encode(algo: &str, key: &[u8], data: &[u8], cuts: &[usize]) -> Vec<u8> {
    let c = codec_api::codec(algo).expect("codec");
    let p = CodecParams::new().with_key(key.to_vec());
    let mut wire = Vec::new();
    {
        let mut enc: Box<dyn EncodeWriter + '_> = c
            .encoder(&p, Box::new(PlainSink::new(&mut wire)))
            .expect("encoder");
        let mut rest = data;
        for &cut in cuts {
            let (a, b) = rest.split_at(cut.min(rest.len()));
            enc.write_all(a).expect("write");
            rest = b;
        }
        enc.write_all(rest).expect("write");
        enc.finish().expect("finish");
    }
    wire
}

fn decode(algo: &str, key: &[u8], wire: &[u8], read_size: usize) -> io::Result<Vec<u8>> {
    let c = codec_api::codec(algo).expect("codec");
    let p = CodecParams::new().with_key(key.to_vec());
    let mut dec = c.decoder(&p, Box::new(wire)).expect("decoder");
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

proptest! {
    #[test]
    fn roundtrip_any_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..70_000),
        cuts in proptest::collection::vec(0usize..20_000, 0..8),
        read_size in 1usize..80_000,
        which in any::<u8>(),
        seed in any::<u8>(),
    ) {
        let (algo, key) = key_for(which, seed);
        let wire = encode(algo, &key, &data, &cuts);
        let bs = if algo == "AES" { 16 } else { 8 };
        prop_assert_eq!(wire.len(), (data.len() / bs + 1) * bs);
        prop_assert_eq!(decode(algo, &key, &wire, read_size).expect("decode"), data);
    }

    #[test]
    fn truncation_is_never_silent_off_block_boundary(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        which in any::<u8>(),
        cut_frac in 0.0f64..1.0,
        read_size in 1usize..5000,
    ) {
        let (algo, key) = key_for(which, 7);
        let wire = encode(algo, &key, &data, &[]);
        let bs = if algo == "AES" { 16 } else { 8 };
        let cut = ((wire.len() as f64) * cut_frac) as usize;
        prop_assume!(!cut.is_multiple_of(bs) || cut == 0);
        let e = decode(algo, &key, &wire[..cut], read_size).expect_err("truncated");
        prop_assert!(matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof));
    }
}
