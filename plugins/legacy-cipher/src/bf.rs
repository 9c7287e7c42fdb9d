//! Blowfish (big-endian halves, as javax.crypto, pycryptodome and the
//! RustCrypto `blowfish` crate), ECB over whole buffers.
//!
//! One block's 16 rounds are a chain of dependent S-box lookups, so a
//! block at a time leaves the core mostly waiting for loads. ECB blocks
//! are independent: this encrypts and decrypts eight of them interleaved,
//! which runs several times faster than one at a time (the key schedule
//! is the standard one; tests compare every result with the `blowfish`
//! crate).

use crate::bf_consts;

/// Expanded Blowfish key.
#[derive(Clone)]
pub(crate) struct Bf {
    s: [[u32; 256]; 4],
    p: [u32; 18],
}

/// Lanes processed together.
const LANES: usize = 8;

impl Bf {
    /// Expands `key` (4..=56 bytes; checked by the caller, any length
    /// works here).
    pub(crate) fn new(key: &[u8]) -> Bf {
        let mut bf = Bf {
            s: bf_consts::S,
            p: bf_consts::P,
        };
        let mut pos = 0;
        let mut next = || {
            let mut v = 0u32;
            for _ in 0..4 {
                if pos >= key.len() {
                    pos = 0;
                }
                v = (v << 8) | u32::from(key.get(pos).copied().unwrap_or(0));
                pos += 1;
            }
            v
        };
        for i in 0..18 {
            bf.p[i] ^= next();
        }
        let (mut l, mut r) = (0u32, 0u32);
        for i in 0..9 {
            (l, r) = bf.encrypt_pair(l, r);
            bf.p[2 * i] = l;
            bf.p[2 * i + 1] = r;
        }
        for i in 0..4 {
            for j in 0..128 {
                (l, r) = bf.encrypt_pair(l, r);
                bf.s[i][2 * j] = l;
                bf.s[i][2 * j + 1] = r;
            }
        }
        bf
    }

    #[inline(always)]
    fn f(&self, x: u32) -> u32 {
        let a = self.s[0][(x >> 24) as usize];
        let b = self.s[1][((x >> 16) & 0xff) as usize];
        let c = self.s[2][((x >> 8) & 0xff) as usize];
        let d = self.s[3][(x & 0xff) as usize];
        (a.wrapping_add(b) ^ c).wrapping_add(d)
    }

    fn encrypt_pair(&self, mut l: u32, mut r: u32) -> (u32, u32) {
        for i in 0..8 {
            l ^= self.p[2 * i];
            r ^= self.f(l);
            r ^= self.p[2 * i + 1];
            l ^= self.f(r);
        }
        (r ^ self.p[17], l ^ self.p[16])
    }

    fn decrypt_pair(&self, mut l: u32, mut r: u32) -> (u32, u32) {
        for i in (1..9).rev() {
            l ^= self.p[2 * i + 1];
            r ^= self.f(l);
            r ^= self.p[2 * i];
            l ^= self.f(r);
        }
        (r ^ self.p[0], l ^ self.p[1])
    }

    #[inline(always)]
    fn encrypt_lanes(&self, l: &mut [u32; LANES], r: &mut [u32; LANES]) {
        for i in 0..8 {
            for k in 0..LANES {
                l[k] ^= self.p[2 * i];
                r[k] ^= self.f(l[k]);
            }
            for k in 0..LANES {
                r[k] ^= self.p[2 * i + 1];
                l[k] ^= self.f(r[k]);
            }
        }
        for k in 0..LANES {
            let (a, b) = (r[k] ^ self.p[17], l[k] ^ self.p[16]);
            l[k] = a;
            r[k] = b;
        }
    }

    #[inline(always)]
    fn decrypt_lanes(&self, l: &mut [u32; LANES], r: &mut [u32; LANES]) {
        for i in (1..9).rev() {
            for k in 0..LANES {
                l[k] ^= self.p[2 * i + 1];
                r[k] ^= self.f(l[k]);
            }
            for k in 0..LANES {
                r[k] ^= self.p[2 * i];
                l[k] ^= self.f(r[k]);
            }
        }
        for k in 0..LANES {
            let (a, b) = (r[k] ^ self.p[0], l[k] ^ self.p[1]);
            l[k] = a;
            r[k] = b;
        }
    }

    /// ECB over whole 8-byte blocks of `input` into `out` (same length).
    pub(crate) fn encrypt(&self, input: &[u8], out: &mut [u8]) {
        self.process(input, out, true);
    }

    /// ECB decryption over whole 8-byte blocks of `input` into `out`.
    pub(crate) fn decrypt(&self, input: &[u8], out: &mut [u8]) {
        self.process(input, out, false);
    }

    fn process(&self, input: &[u8], out: &mut [u8], enc: bool) {
        let n = input.len().min(out.len()) / 8 * 8;
        let (input, out) = (&input[..n], &mut out[..n]);
        let mut ins = input.chunks_exact(8 * LANES);
        let mut outs = out.chunks_exact_mut(8 * LANES);
        for (i, o) in (&mut ins).zip(&mut outs) {
            let mut l = [0u32; LANES];
            let mut r = [0u32; LANES];
            for k in 0..LANES {
                l[k] = be32(&i[8 * k..]);
                r[k] = be32(&i[8 * k + 4..]);
            }
            if enc {
                self.encrypt_lanes(&mut l, &mut r);
            } else {
                self.decrypt_lanes(&mut l, &mut r);
            }
            for k in 0..LANES {
                o[8 * k..8 * k + 4].copy_from_slice(&l[k].to_be_bytes());
                o[8 * k + 4..8 * k + 8].copy_from_slice(&r[k].to_be_bytes());
            }
        }
        for (i, o) in ins
            .remainder()
            .chunks_exact(8)
            .zip(outs.into_remainder().chunks_exact_mut(8))
        {
            let (l, r) = if enc {
                self.encrypt_pair(be32(i), be32(&i[4..]))
            } else {
                self.decrypt_pair(be32(i), be32(&i[4..]))
            };
            o[..4].copy_from_slice(&l.to_be_bytes());
            o[4..].copy_from_slice(&r.to_be_bytes());
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use blowfish::Blowfish;
    use cbc::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, InOutBuf, KeyInit};

    fn reference(key: &[u8], data: &[u8], enc: bool) -> Vec<u8> {
        let c: Blowfish = Blowfish::new_from_slice(key).expect("key");
        let mut out = vec![0u8; data.len()];
        let buf = InOutBuf::new(data, &mut out).expect("lengths");
        let (blocks, _) = buf.into_chunks();
        if enc {
            c.encrypt_blocks_inout(blocks);
        } else {
            c.decrypt_blocks_inout(blocks);
        }
        out
    }

    #[test]
    fn matches_the_blowfish_crate() {
        let mut x = 0x1234_5678u32;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        for key_len in [4usize, 5, 8, 16, 17, 31, 56] {
            let key: Vec<u8> = (0..key_len).map(|_| rnd()).collect();
            let bf = Bf::new(&key);
            for blocks in [0usize, 1, 3, 4, 5, 8, 9, 33] {
                let data: Vec<u8> = (0..8 * blocks).map(|_| rnd()).collect();
                let mut ours = vec![0u8; data.len()];
                bf.encrypt(&data, &mut ours);
                assert_eq!(
                    ours,
                    reference(&key, &data, true),
                    "key {key_len} blocks {blocks}"
                );
                let mut back = vec![0u8; data.len()];
                bf.decrypt(&ours, &mut back);
                assert_eq!(back, data);
                assert_eq!(reference(&key, &ours, false), data);
            }
        }
    }
}
