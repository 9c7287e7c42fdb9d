//! Property test: any data, written in any chunking, round-trips.

use std::io::{Read, Write};

use codec_api::{CodecParams, EncodeWriter, PlainSink};
use proptest::prelude::*;
use uftpd_gzip as _;

proptest! {
    #[test]
    fn roundtrip_any_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        cuts in proptest::collection::vec(1usize..5000, 0..8),
        read_size in 1usize..70_000,
        level in 0u32..=9,
        flush_between in any::<bool>(),
    ) {
        let gzip = codec_api::codec("gzip").expect("gzip");
        let p = CodecParams::new().with_option("level", level.to_string());
        let mut wire = Vec::new();
        {
            let mut enc: Box<dyn EncodeWriter + '_> =
                gzip.encoder(&p, Box::new(PlainSink::new(&mut wire))).expect("encoder");
            let mut rest = &data[..];
            for c in cuts {
                let (a, b) = rest.split_at(c.min(rest.len()));
                enc.write_all(a).expect("write");
                if flush_between { enc.flush().expect("flush"); }
                rest = b;
            }
            enc.write_all(rest).expect("write");
            enc.finish().expect("finish");
        }
        let mut dec = gzip.decoder(&p, Box::new(&wire[..])).expect("decoder");
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = dec.read(&mut buf).expect("read");
            if n == 0 { break; }
            out.extend_from_slice(&buf[..n]);
        }
        prop_assert_eq!(out, data);
    }
}
