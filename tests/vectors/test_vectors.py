"""Our encoder, checked by an independent decoder.

Runs the ``uftp-codec`` binary (env ``UFTP_CODEC_BIN``, default
``target/release/uftp-codec``) to encode each vector's plaintext with the
vector's stack, then decodes the result here with pycryptodome, zlib and a
JPARSS reader written from PROTOCOL.md, and compares. Also checks that the
binary decodes the committed vectors (made by gen_vectors.py).
"""

import base64
import os
import struct
import subprocess
import zlib

import pytest
from Crypto.Cipher import AES, Blowfish

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("UFTP_CODEC_BIN", os.path.join(ROOT, "target", "release", "uftp-codec"))
MAGIC = 0xCEBF


def load_cases():
    cases = []
    with open(os.path.join(HERE, "vectors.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, algo, key, gz, streams, block, length = line.rstrip("\n").split("\t")
            cases.append(dict(
                name=name,
                algo=None if algo == "-" else algo,
                key=None if key == "-" else key,
                gzip=gz == "gzip",
                streams=int(streams),
                block=int(block),
                length=int(length),
            ))
    return cases


CASES = load_cases()


@pytest.fixture(scope="module")
def codec_bin():
    if not os.access(BIN, os.X_OK):
        pytest.skip("uftp-codec not built at %s (cargo build --release -p uftp-datachannel)" % BIN)
    return BIN


def stack_args(c):
    args = ["--streams", str(c["streams"])]
    if c["algo"]:
        args += ["--algo", c["algo"], "--key-b64", c["key"]]
    if c["gzip"]:
        args += ["--gzip"]
    return args


def decrypt(algo, key, data):
    if algo == "BLOWFISH":
        cipher = Blowfish.new(key, Blowfish.MODE_ECB)
    else:
        cipher = AES.new(key[16:], AES.MODE_CBC, iv=key[:16])
    bs = cipher.block_size
    assert len(data) % bs == 0 and len(data) >= bs, "ciphertext length %d" % len(data)
    plain = cipher.decrypt(data)
    pad = plain[-1]
    assert 1 <= pad <= bs and plain[-pad:] == bytes([pad]) * pad, "bad padding"
    return plain[:-pad]


def gunzip_one_member(data):
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(data) + d.flush()
    assert d.eof, "gzip member has no trailer"
    assert d.unused_data == b"", "bytes after the gzip member"
    return out


def deframe(streams):
    """JPARSS reader: one frame from each stream in turn; stream 0 ends the
    data at a frame boundary and the others must end with it."""
    n = len(streams)
    pos = [0] * n
    out = bytearray()
    seq = 0
    while pos[0] < len(streams[0]):
        size0 = None
        for i in range(n):
            s = streams[i]
            assert pos[i] + 16 <= len(s), "stream %d: truncated header" % i
            magic, idx, sq, size, ln = struct.unpack(">HHIII", s[pos[i]:pos[i] + 16])
            assert magic == MAGIC and idx == i and sq == seq
            assert size <= 16384, "blocks must not exceed 16384 bytes (Java reader)"
            assert size > 0, "an empty block reads as end of data in Python"
            size0 = size if size0 is None else size0
            assert size == size0
            chunk = size // n
            assert ln == (size - (n - 1) * chunk if i == n - 1 else chunk)
            out += s[pos[i] + 16:pos[i] + 16 + ln]
            assert pos[i] + 16 + ln <= len(s), "stream %d: truncated payload" % i
            pos[i] += 16 + ln
        seq += 1
    for i in range(1, n):
        assert pos[i] == len(streams[i]), "stream %d has data after stream 0 ended" % i
    return bytes(out)


def python_decode(c, streams):
    key = base64.b64decode(c["key"]) if c["key"] else None
    layers = []
    for s in streams:
        if c["algo"]:
            s = decrypt(c["algo"], key, s)
        if c["gzip"]:
            s = gunzip_one_member(s)
        layers.append(s)
    if c["streams"] == 1:
        return layers[0]
    return deframe(layers)


def read_plain(c):
    with open(os.path.join(HERE, "data", c["name"] + ".plain"), "rb") as f:
        return f.read()


def read_streams(c):
    out = []
    for i in range(c["streams"]):
        with open(os.path.join(HERE, "data", "%s.%d" % (c["name"], i)), "rb") as f:
            out.append(f.read())
    return out


def test_vectors_exist():
    assert len(CASES) >= 90
    assert {c["streams"] for c in CASES} >= {1, 2, 3, 4}


def test_python_decoder_reads_the_committed_vectors():
    # Sanity of the checker itself.
    for c in CASES:
        assert python_decode(c, read_streams(c)) == read_plain(c), c["name"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_our_encoding_decodes_in_python(codec_bin, case, tmp_path):
    plain = read_plain(case)
    args = [codec_bin, "--encode"] + stack_args(case)
    if case["streams"] > 1:
        prefix = str(tmp_path / "enc")
        subprocess.run(args + ["--prefix", prefix], input=plain, check=True)
        streams = []
        for i in range(case["streams"]):
            with open("%s.%d" % (prefix, i), "rb") as f:
                streams.append(f.read())
    else:
        streams = [subprocess.run(args, input=plain, check=True, capture_output=True).stdout]
    assert python_decode(case, streams) == plain
    if not case["gzip"] and case["block"] == 16384:
        # Cipher and framing are deterministic: byte-identical to the vector.
        assert streams == read_streams(case)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_binary_decodes_vector(codec_bin, case, tmp_path):
    args = [codec_bin, "--decode"] + stack_args(case)
    streams = read_streams(case)
    if case["streams"] > 1:
        prefix = str(tmp_path / "vec")
        for i, s in enumerate(streams):
            with open("%s.%d" % (prefix, i), "wb") as f:
                f.write(s)
        out = subprocess.run(args + ["--prefix", prefix], check=True, capture_output=True).stdout
    else:
        out = subprocess.run(args, input=streams[0], check=True, capture_output=True).stdout
    assert out == read_plain(case)


def test_binary_rejects_truncated_input(codec_bin):
    c = next(x for x in CASES if x["name"] == "aes256-gzip-n1-3000")
    data = read_streams(c)[0][:-16]
    r = subprocess.run([codec_bin, "--decode"] + stack_args(c), input=data, capture_output=True)
    assert r.returncode != 0
    assert b"uftp-codec:" in r.stderr
