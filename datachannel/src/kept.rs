//! Plain multi-stream transfers of a known length over connections that
//! stay open afterwards (KEEP-ALIVE, PROTOCOL.md section 6).
//!
//! [`DataWriter`](crate::DataWriter) and [`DataReader`](crate::DataReader)
//! own their connections and end a transfer by closing them (the end of
//! stream 0 marks the end of the data). With KEEP-ALIVE the next transfer
//! follows on the same connections and the length is known from the 150
//! reply or ALLO, so these functions move exactly that many bytes, one
//! block at a time in stream order, and leave the connections open. They
//! run on the caller's thread: simple and exact rather than fast (no
//! deployed client uses KEEP-ALIVE with several streams).

use std::io::{self, IoSlice, Read, Write};

use crate::frame::{FrameHeader, HEADER_LEN, MAX_SEND_BLOCK, chunk_range};
use crate::reader::check_header;
use crate::shared::write_all_vectored;
use codec_api::read_full;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Sends up to `len` bytes of `src` over `conns` in JPARSS frames (blocks
/// of at most 16 KiB, sequence numbers from 0) and leaves the connections
/// open. `each_block` is called with every block's size before it is sent
/// (a rate limiter's hook). Returns the bytes sent: less than `len` only if
/// `src` ended early.
pub fn send_kept<R: Read + ?Sized, S: Write>(
    src: &mut R,
    len: u64,
    conns: &mut [S],
    each_block: &mut dyn FnMut(usize),
) -> io::Result<u64> {
    let n = conns.len();
    if n == 0 {
        return Err(invalid("no data connections".into()));
    }
    let mut block = vec![0u8; MAX_SEND_BLOCK];
    let mut sent = 0u64;
    let mut seq = 0u32;
    while sent < len {
        let want = usize::try_from(len - sent)
            .unwrap_or(MAX_SEND_BLOCK)
            .min(MAX_SEND_BLOCK);
        let size = read_full(&mut *src, &mut block[..want])?;
        if size == 0 {
            break;
        }
        each_block(size);
        for (i, conn) in conns.iter_mut().enumerate() {
            let (off, plen) = chunk_range(size, n, i);
            let header = FrameHeader {
                stream: i as u16,
                seq,
                size: size as u32,
                len: plen as u32,
            }
            .encode();
            let mut slices = [IoSlice::new(&header), IoSlice::new(&block[off..off + plen])];
            write_all_vectored(conn, &mut slices, "a frame")?;
        }
        sent += size as u64;
        seq = seq.wrapping_add(1);
        if size < want {
            break;
        }
    }
    for c in conns.iter_mut() {
        c.flush()?;
    }
    Ok(sent)
}

/// Receives exactly `len` bytes of JPARSS frames from `conns` into `dst`
/// and leaves the connections open. Frames are checked as the streaming
/// reader checks them (magic, stream index, sequence, each stream's share
/// of the block); a block that would go past `len`, or a connection that
/// ends before `len` bytes arrived, is an error. `each_block` is called
/// with every block's size after it was written.
pub fn receive_kept<R: Read, W: Write + ?Sized>(
    conns: &mut [R],
    dst: &mut W,
    len: u64,
    each_block: &mut dyn FnMut(usize),
) -> io::Result<u64> {
    let n = conns.len();
    if n == 0 {
        return Err(invalid("no data connections".into()));
    }
    let mut payload = Vec::new();
    let mut total = 0u64;
    let mut seq = 0u32;
    while total < len {
        let mut block_size = None;
        for (i, conn) in conns.iter_mut().enumerate() {
            let mut h = [0u8; HEADER_LEN];
            let got = read_full(conn, &mut h)?;
            if got < HEADER_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "data stream {i} ended after {total} of {len} bytes{}",
                        if got > 0 {
                            " (inside a frame header)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            // the streaming reader's checks: magic, stream, sequence, size
            // limit, this stream's share of the block
            let fh = check_header(&h, i, n, seq)
                .map_err(|e| invalid(format!("data stream {i}: {e}")))?;
            let size = fh.size as usize;
            if *block_size.get_or_insert(size) != size || size == 0 {
                return Err(invalid(format!(
                    "data stream {i}: block {seq} has an invalid size {size}"
                )));
            }
            let plen = fh.len as usize;
            if total + size as u64 > len {
                return Err(invalid(format!(
                    "the client sent more than the announced {len} bytes"
                )));
            }
            payload.resize(plen, 0);
            let got = read_full(conn, &mut payload)?;
            if got < plen {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("data stream {i} ended inside block {seq}"),
                ));
            }
            dst.write_all(&payload)?;
        }
        let size = block_size.unwrap_or(0);
        total += size as u64;
        each_block(size);
        seq = seq.wrapping_add(1);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataReader;
    use std::io::Cursor;

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The bytes each stream carries, as the streaming writer would send
    /// them for the same data.
    fn wire(d: &[u8], n: usize) -> Vec<Vec<u8>> {
        let mut conns: Vec<Vec<u8>> = vec![Vec::new(); n];
        let sent = send_kept(&mut &d[..], d.len() as u64, &mut conns, &mut |_| {}).expect("send");
        assert_eq!(sent, d.len() as u64);
        conns
    }

    #[test]
    fn roundtrip_any_width_and_length() {
        for n in 1..=4 {
            for len in [0usize, 1, 3, 16383, 16384, 16385, 100_000] {
                let d = data(len);
                let w = wire(&d, n);
                let mut readers: Vec<Cursor<Vec<u8>>> = w.into_iter().map(Cursor::new).collect();
                let mut out = Vec::new();
                let got =
                    receive_kept(&mut readers, &mut out, len as u64, &mut |_| {}).expect("receive");
                assert_eq!(got, len as u64);
                assert_eq!(out, d, "n={n} len={len}");
                // nothing consumed past the transfer
                for r in &readers {
                    assert_eq!(r.position() as usize, r.get_ref().len());
                }
            }
        }
    }

    #[test]
    fn frames_are_what_the_streaming_reader_reads() {
        let d = data(50_000);
        let w = wire(&d, 3);
        let streams: Vec<Cursor<Vec<u8>>> = w.into_iter().map(Cursor::new).collect();
        let mut r = DataReader::new(
            streams,
            &crate::CodecStack::plain(),
            &crate::ChannelOptions::default(),
        )
        .expect("reader");
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, d);
    }

    #[test]
    fn two_transfers_follow_on_the_same_connections() {
        let (a, b) = (data(40_000), data(7));
        let (wa, wb) = (wire(&a, 2), wire(&b, 2));
        let mut readers: Vec<Cursor<Vec<u8>>> = wa
            .into_iter()
            .zip(wb)
            .map(|(mut x, y)| {
                x.extend_from_slice(&y);
                Cursor::new(x)
            })
            .collect();
        let mut out = Vec::new();
        receive_kept(&mut readers, &mut out, a.len() as u64, &mut |_| {}).expect("first");
        assert_eq!(out, a);
        out.clear();
        receive_kept(&mut readers, &mut out, b.len() as u64, &mut |_| {}).expect("second");
        assert_eq!(out, b);
    }

    #[test]
    fn too_much_short_and_corrupt_data_are_errors() {
        let d = data(40_000);
        let w = wire(&d, 2);
        // more than announced
        let mut rs: Vec<Cursor<Vec<u8>>> = w.iter().cloned().map(Cursor::new).collect();
        let e = receive_kept(&mut rs, &mut Vec::new(), 20_000, &mut |_| {}).expect_err("more");
        assert!(e.to_string().contains("more than the announced"), "{e}");
        // fewer than announced
        let mut rs: Vec<Cursor<Vec<u8>>> = w.iter().cloned().map(Cursor::new).collect();
        let e = receive_kept(&mut rs, &mut Vec::new(), 50_000, &mut |_| {}).expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // a corrupt header
        let mut bad = w.clone();
        bad[1][0] ^= 0xff;
        let mut rs: Vec<Cursor<Vec<u8>>> = bad.into_iter().map(Cursor::new).collect();
        let e = receive_kept(&mut rs, &mut Vec::new(), 40_000, &mut |_| {}).expect_err("magic");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // streams swapped
        let mut rs: Vec<Cursor<Vec<u8>>> = w.into_iter().rev().map(Cursor::new).collect();
        let e = receive_kept(&mut rs, &mut Vec::new(), 40_000, &mut |_| {}).expect_err("swap");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_short_source_sends_what_it_has() {
        let d = data(20_000);
        let mut conns: Vec<Vec<u8>> = vec![Vec::new(); 2];
        let mut blocks = Vec::new();
        let sent =
            send_kept(&mut &d[..], 30_000, &mut conns, &mut |s| blocks.push(s)).expect("send");
        assert_eq!(sent, 20_000);
        assert_eq!(blocks, [16384, 20_000 - 16384]);
    }
}
