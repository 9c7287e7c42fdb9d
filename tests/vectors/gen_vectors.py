#!/usr/bin/env python3
"""Generate cross-implementation vectors for the UFTP data channel codecs.

An implementation independent of ours: pycryptodome for BLOWFISH-ECB and
AES-CBC (as UFTPD 3.x and pyuftp use it), Python's zlib/gzip for gzip, and
the JPARSS multi-stream framing written here from PROTOCOL.md section 6.

Writes ``vectors.tsv`` (the manifest) and ``data/<case>.plain`` plus
``data/<case>.<i>`` (the encoded bytes of TCP stream i) next to this file.
The output is deterministic: rerunning it reproduces the committed files.

    tests/.venv/bin/python tests/vectors/gen_vectors.py
"""

import base64
import gzip
import os
import random
import struct
import zlib

from Crypto.Cipher import AES, Blowfish

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
MAGIC = 0xCEBF


def plaintext(length, seed):
    """Deterministic bytes: runs of text and noise (compressible in part)."""
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < length:
        if rnd.random() < 0.5:
            out += b"UFTP vector %d; " % rnd.randrange(1000)
        else:
            out += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
    return bytes(out[:length])


def key_bytes(n, seed):
    rnd = random.Random(1000 + seed)
    return bytes(rnd.randrange(256) for _ in range(n))


def new_cipher(algo, key):
    if algo == "BLOWFISH":
        return Blowfish.new(key, Blowfish.MODE_ECB)
    if algo == "AES":
        return AES.new(key[16:], AES.MODE_CBC, iv=key[:16])
    raise ValueError(algo)


def encrypt_stream(algo, key, data):
    """The whole stream is one ECB/CBC message, PKCS#5/7 padding at its end."""
    c = new_cipher(algo, key)
    bs = c.block_size
    pad = bs - len(data) % bs
    return c.encrypt(data + bytes([pad]) * pad)


def gzip_stream(data, style, blocks=None):
    """One gzip member. style: 'zlib' (one compressobj, as UFTPD/pyuftp),
    'zlib-sync' (sync flush after each block, as pyuftp's writer does),
    'named' (gzip module with file name and mtime in the header)."""
    if style == "named":
        import io

        buf = io.BytesIO()
        with gzip.GzipFile(filename="vector.bin", mode="wb", fileobj=buf, mtime=1700000000) as f:
            f.write(data)
        return buf.getvalue()
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = bytearray()
    if style == "zlib-sync" and blocks:
        for b in blocks:
            out += z.compress(b)
            out += z.flush(zlib.Z_SYNC_FLUSH)
    else:
        out += z.compress(data)
    out += z.flush()
    return bytes(out)


def frame_streams(data, n, block_size):
    """JPARSS: per stream, the list of frames (header + payload) and the
    chunks of payload per block (for sync-flush gzip)."""
    streams = [[] for _ in range(n)]
    seq = 0
    for start in range(0, len(data), block_size):
        block = data[start:start + block_size]
        size = len(block)
        chunk = size // n
        for i in range(n):
            off = i * chunk
            ln = size - off if i == n - 1 else chunk
            hdr = struct.pack(">HHIII", MAGIC, i, seq, size, ln)
            streams[i].append(hdr + block[off:off + ln])
        seq += 1
    return streams


def encode(data, algo, key, gz, n, block_size, gz_style):
    if n == 1:
        pieces = [[data]]
    else:
        pieces = frame_streams(data, n, block_size)
    out = []
    for frames in pieces:
        s = b"".join(frames)
        if gz:
            s = gzip_stream(s, gz_style, frames)
        if algo:
            s = encrypt_stream(algo, key, s)
        out.append(s)
    return out


KEYS = {
    "bf16": ("BLOWFISH", 16),
    "bf56": ("BLOWFISH", 56),
    "aes128": ("AES", 32),
    "aes192": ("AES", 40),
    "aes256": ("AES", 48),
}


def cases():
    seed = 0
    # single stream, cipher only: padding edge cases
    for kname in KEYS:
        for length in [0, 1, 7, 8, 15, 16, 17, 1000, 4096]:
            seed += 1
            yield dict(name="%s-n1-%d" % (kname, length), key=kname, gzip=None,
                       streams=1, length=length, seed=seed)
    # single stream, gzip only and gzip inside encryption
    for style in ["zlib", "named"]:
        for length in [0, 1000, 4096]:
            seed += 1
            yield dict(name="gzip-%s-n1-%d" % (style, length), key=None, gzip=style,
                       streams=1, length=length, seed=seed)
    for kname in ["bf56", "aes256"]:
        seed += 1
        yield dict(name="%s-gzip-n1-3000" % kname, key=kname, gzip="zlib",
                   streams=1, length=3000, seed=seed)
    # multi-stream: plain, cipher, cipher+gzip; one block and many small blocks
    for n in [2, 3, 4]:
        for kname, gz in [(None, None), ("aes256", None), ("bf16", None),
                          (None, "zlib"), ("aes128", "zlib-sync"), ("bf56", "zlib"),
                          ("aes192", "zlib-sync")]:
            for length, block in [(5000, 16384), (5001, 1000)]:
                seed += 1
                label = "-".join(x for x in [kname or "plain", gz and "gzip"] if x)
                yield dict(name="%s-n%d-%d-b%d" % (label, n, length, block), key=kname,
                           gzip=gz, streams=n, length=length, seed=seed, block=block)
    # empty transfers over several streams: no frames at all
    for kname, gz in [(None, None), ("aes256", "zlib"), ("bf16", None)]:
        seed += 1
        label = "-".join(x for x in [kname or "plain", gz and "gzip"] if x)
        yield dict(name="%s-n3-0" % label, key=kname, gzip=gz, streams=3, length=0, seed=seed)


def main():
    os.makedirs(DATA, exist_ok=True)
    for f in os.listdir(DATA):
        os.remove(os.path.join(DATA, f))
    manifest = []
    for c in cases():
        data = plaintext(c["length"], c["seed"])
        algo, key = None, None
        if c["key"]:
            algo, klen = KEYS[c["key"]]
            key = key_bytes(klen, c["seed"])
        block = c.get("block", 16384)
        streams = encode(data, algo, key, c["gzip"] is not None, c["streams"], block,
                         c["gzip"])
        with open(os.path.join(DATA, c["name"] + ".plain"), "wb") as f:
            f.write(data)
        for i, s in enumerate(streams):
            with open(os.path.join(DATA, "%s.%d" % (c["name"], i)), "wb") as f:
                f.write(s)
        manifest.append({
            "name": c["name"],
            "algo": algo,
            "key_b64": base64.b64encode(key).decode() if key else None,
            "gzip": c["gzip"] is not None,
            "gzip_style": c["gzip"],
            "streams": c["streams"],
            "block_size": block,
            "length": c["length"],
        })
    with open(os.path.join(HERE, "vectors.tsv"), "w") as f:
        f.write("# generated by gen_vectors.py (pycryptodome + zlib); columns:\n")
        f.write("# name algo key_b64 gzip streams block_size length ('-' = none)\n")
        for m in manifest:
            f.write("\t".join(str(x) for x in [
                m["name"], m["algo"] or "-", m["key_b64"] or "-",
                "gzip" if m["gzip"] else "-", m["streams"], m["block_size"],
                m["length"]]) + "\n")
    print("%d cases written to %s" % (len(manifest), DATA))


if __name__ == "__main__":
    main()
