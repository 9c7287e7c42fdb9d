"""Data-channel codecs, every combination (issue 5 items 1 and 2, PROTOCOL.md
section 6): streams 1..MAX_STREAMS (4 here) x encryption (none, BLOWFISH,
AES-128/192/256) x gzip (off, on), both directions, byte-exact.

Each combination runs twice:
- with our client `uftpc` (env UFTPC_BIN, default target/release/uftpc);
- with the independent Python codec in helpers/datacodec.py (pycryptodome,
  zlib and a JPARSS framing written from the protocol text), which proves
  the daemon's wire format and not just that our client and server agree.

Then ranged reads/writes (RANG/REST/APPE) over streams and codecs (Python:
the uftpc CLI has no range, REST or append option), plain ranges with
ftplib, and LIST/MLSD over multi-stream / encrypted / compressed channels
decoded in Python (listings use the framing and codecs too).
"""

import base64
import io
import os
import pathlib
import struct
import subprocess

import pytest

from conftest import use_daemon
from helpers import datacodec as dc
from helpers.daemon import LOOPBACK, REPO, run_check_config

MAX_STREAMS = dc.CODEC_CONFIG["MAX_STREAMS"]
STREAMS = list(range(1, MAX_STREAMS + 1))
# name -> (algo, key length in bytes); AES keys are 16 bytes IV + the AES key
ENCRYPTIONS = {
    "plain": None,
    "BLOWFISH": ("BLOWFISH", 56),
    "AES128": ("AES", 16 + 16),
    "AES192": ("AES", 16 + 24),
    "AES256": ("AES", 16 + 32),
}
SIZE = 100 * 1024 + 77  # a few 16 KiB blocks and an odd tail


def uftpc_bin():
    return pathlib.Path(os.environ.get("UFTPC_BIN", REPO / "target" / "release" / "uftpc"))


def payload(size=SIZE):
    """Half random, half text: gzip has something to compress and something not."""
    text = b"".join(b"line %06d of the UFTP codec matrix\n" % i for i in range(size // 36 + 1))
    half = size // 2
    return (os.urandom(half) + text)[:size]


def make_stack(enc, compress):
    if ENCRYPTIONS[enc] is None:
        return dc.Stack(None, None, compress)
    algo, n = ENCRYPTIONS[enc]
    return dc.Stack(os.urandom(n), algo, compress)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def _daemons(tmp_root):
    holder = dc.DaemonHolder(tmp_root, "codec-matrix-uftpd")
    yield holder
    holder.stop()


@pytest.fixture
def csite(_daemons, site_factory):
    """A site on a daemon with MAX_STREAMS=4."""
    d = _daemons.get()
    use_daemon(d)
    yield site_factory(daemon=d)
    d.assert_alive(" during this test")


@pytest.fixture(scope="module")
def uftpc():
    b = uftpc_bin()
    if not os.access(b, os.X_OK):
        pytest.skip(f"uftpc not built at {b} (cargo build --release) or set UFTPC_BIN")
    return b


def run_uftpc(uftpc, site, secret, n, stack, *cmd):
    argv = [str(uftpc), "-n", str(n)]
    if stack.key is not None:
        argv += ["-E", base64.b64encode(stack.key).decode(), "-a", stack.algo]
    if stack.compress:
        argv += ["-z"]
    argv += [f"{LOOPBACK}:{site.port}", secret, *cmd]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, (f"uftpc exit {p.returncode}: {' '.join(argv[:1] + argv[3:])}\n"
                               f"{p.stderr.decode('utf-8', 'replace')[-3000:]}")
    return p


MATRIX = [(n, enc, gz) for n in STREAMS for enc in ENCRYPTIONS for gz in (False, True)]
# the reference UFTPD garbles codecs over several streams (no gzip trailer / final
# cipher block per stream, PROTOCOL.md section 12) and sends listings without them
beyond = pytest.mark.beyond_reference


def marked(cases):
    """beyond_reference on the cases that use codecs over several streams."""
    return [pytest.param(c, marks=beyond) if c[0] > 1 and (c[1] != "plain" or c[2]) else c
            for c in cases]


def matrix_id(case):
    n, enc, gz = case
    return f"n{n}-{enc}{'-gzip' if gz else ''}"


# ---------------------------------------------------------------- uftpc
# (uftpc requires `221` to QUIT: the reference closes without a reply)
@beyond
@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_uftpc_download(csite, uftpc, case):
    n, enc, gz = case
    stack = make_stack(enc, gz)
    data = csite.put("down.bin", payload())
    secret = csite.announce_ok(**stack.request_fields())
    out = csite.work / "got.bin"
    run_uftpc(uftpc, csite, secret, n, stack, "get", "down.bin", str(out))
    got = out.read_bytes()
    assert len(got) == len(data) and got == data, f"{stack} over {n} streams: corrupted"


@beyond
@pytest.mark.parametrize("case", MATRIX, ids=matrix_id)
def test_uftpc_upload(csite, uftpc, case):
    n, enc, gz = case
    stack = make_stack(enc, gz)
    data = payload()
    src = csite.work / "src.bin"
    src.write_bytes(data)
    secret = csite.announce_ok(**stack.request_fields())
    run_uftpc(uftpc, csite, secret, n, stack, "put", str(src), "up.bin")
    stored = csite.path("up.bin")
    assert stored.read_bytes() == data, f"{stack} over {n} streams: corrupted"
    assert stored.stat().st_uid == csite.user.uid


@beyond
@pytest.mark.parametrize("level", ["0", "9"])
@pytest.mark.parametrize("enc", ["plain", "AES128"])
def test_uftpc_upload_at_a_gzip_level(csite, uftpc, enc, level):
    """`uftpc --gzip-level N` compresses at that level (0 stores, 9 is
    zlib's best); the daemon inflates any level."""
    stack = make_stack(enc, True)
    data = payload()
    src = csite.work / "src.bin"
    src.write_bytes(data)
    secret = csite.announce_ok(**stack.request_fields())
    run_uftpc(uftpc, csite, secret, 2, stack, "--gzip-level", level, "put", str(src), "up.bin")
    assert csite.path("up.bin").read_bytes() == data


def test_uftpc_refuses_a_gzip_level_beyond_9(uftpc):
    p = subprocess.run([str(uftpc), "-z", "--gzip-level", "10", f"{LOOPBACK}:1", "s", "ls"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode != 0
    assert b"--gzip-level wants a zlib level 0-9" in p.stderr


# ---------------------------------------------------------------- the independent codec
@pytest.mark.parametrize("case", marked(MATRIX), ids=matrix_id)
def test_python_codec_both_directions(csite, case):
    """Our decoder reads what the daemon sends; the daemon reads what our encoder sends."""
    n, enc, gz = case
    stack = make_stack(enc, gz)
    data = csite.put("down.bin", payload())
    up = payload()
    c = csite.control(**stack.request_fields())
    r150, got, r226 = dc.retr(c, "down.bin", n, stack)
    assert dc.bytes_available(r150) == len(data)
    assert got == data, f"{stack} over {n} streams: the daemon's wire format differs"
    assert r226.lines == ["226 File transfer successful"]
    _, final = dc.stor(c, "up.bin", up, n, stack, pre=[f"ALLO {len(up)}"])
    assert final.lines == ["226 File transfer successful"], final
    assert csite.path("up.bin").read_bytes() == up
    # and the stack stays in force for the next transfer of the session
    _, again, _ = dc.retr(c, "up.bin", n, stack)
    assert again == up


@pytest.mark.parametrize("size", [0, 1, 16383, 16384, 16385, 3 * 16384])
@pytest.mark.parametrize("enc,gz", [("plain", False),
                                    pytest.param("AES256", True, marks=beyond),
                                    pytest.param("BLOWFISH", False, marks=beyond),
                                    pytest.param("AES128", False, marks=beyond)])
def test_block_boundaries(csite, size, enc, gz):
    """Sizes around the 16 KiB block (and the empty file) with 1 and 4 streams."""
    stack = make_stack(enc, gz)
    data = csite.put("b.bin", os.urandom(size))
    c = csite.control(**stack.request_fields())
    for n in (1, MAX_STREAMS):
        _, got, r226 = dc.retr(c, "b.bin", n, stack)
        assert got == data and r226.code == 226, f"{size} bytes over {n} streams"
        _, final = dc.stor(c, f"u{n}.bin", data, n, stack)
        assert final.code == 226, final
        assert csite.path(f"u{n}.bin").read_bytes() == data


@beyond
@pytest.mark.parametrize("keylen", [4, 8, 16, 33, 55])
def test_blowfish_key_lengths(csite, keylen):
    """Blowfish takes any key of 4..56 bytes (Java sends 56; others exist)."""
    stack = dc.Stack(os.urandom(keylen), "BLOWFISH", False)
    data = csite.put("k.bin", payload(20_001))
    c = csite.control(**stack.request_fields())
    _, got, _ = dc.retr(c, "k.bin", 2, stack)
    assert got == data
    _, final = dc.stor(c, "k2.bin", data, 1, stack)
    assert final.code == 226 and csite.path("k2.bin").read_bytes() == data


@beyond
def test_aes_without_algo_by_key_length(csite):
    """No `algo` with a 32/40/48-byte key means AES (PROTOCOL.md section 3)."""
    stack = dc.Stack(os.urandom(40), None, False)
    assert stack.algo == "AES"
    fields = stack.request_fields()
    fields["algo"] = None
    data = csite.put("a.bin", payload(30_000))
    c = csite.control(**fields)
    assert "CRYPTED-AES" in [l.strip() for l in c.cmd("FEAT").lines]
    _, got, _ = dc.retr(c, "a.bin", 3, stack)
    assert got == data


@beyond
def test_streams_above_max_are_capped(csite):
    """NOOP 8 with MAX_STREAMS=4: `223 Opening 4 data connections`, then 4 framed streams."""
    stack = make_stack("AES256", True)
    data = csite.put("c.bin", payload())
    c = csite.control(**stack.request_fields())
    r = c.cmd("NOOP 8")
    assert r.lines == [f"223 Opening {MAX_STREAMS} data connections"], r
    socks = [c.pasv()[1] for _ in range(MAX_STREAMS)]
    try:
        assert c.cmd("RETR c.bin").code == 150
        wires = dc.read_all_concurrently(socks)
    finally:
        dc.close_all(socks)
    assert stack.decode_channel(wires) == data
    assert c.read_reply().code == 226


# ---------------------------------------------------------------- ranges
RANGE_CASES = [(n, enc, gz) for n in (1, 2, MAX_STREAMS)
               for enc in ("plain", "BLOWFISH", "AES192") for gz in (False, True)]


@beyond  # the reference's 150 reply after REST counts the whole file
@pytest.mark.parametrize("case", RANGE_CASES, ids=matrix_id)
def test_ranged_reads(csite, case):
    """RANG a b (exclusive end) and REST a, over streams and codecs: exactly those bytes."""
    n, enc, gz = case
    stack = make_stack(enc, gz)
    data = csite.put("r.bin", payload())
    c = csite.control(**stack.request_fields())
    for a, b in [(0, 1), (1000, 1000 + 16385), (16384, 3 * 16384 + 7), (len(data) - 5, len(data))]:
        r150, got, r226 = dc.retr(c, "r.bin", n, stack, pre=[f"RANG {a} {b}"])
        assert dc.bytes_available(r150) == b - a, r150
        assert got == data[a:b], f"RANG {a} {b}: wrong bytes"
        assert r226.code == 226
    r150, got, _ = dc.retr(c, "r.bin", n, stack, pre=["REST 4321"])
    assert dc.bytes_available(r150) == len(data) - 4321
    assert got == data[4321:]
    _, got, _ = dc.retr(c, "r.bin", n, stack)  # REST and RANG are used up
    assert got == data


@beyond  # the reference fails APPE ("tuple indices must be integers")
@pytest.mark.parametrize("case", RANGE_CASES, ids=matrix_id)
def test_ranged_writes_and_append(csite, case):
    """RANG a b + STOR writes in place (no truncation); APPE appends; with codecs."""
    n, enc, gz = case
    stack = make_stack(enc, gz)
    old = csite.put("w.bin", os.urandom(60_000))
    c = csite.control(**stack.request_fields())
    a, piece = 10_000, os.urandom(20_001)
    _, final = dc.stor(c, "w.bin", piece, n, stack, pre=[f"RANG {a} {a + len(piece)}"])
    assert final.code == 226, final
    expect = old[:a] + piece + old[a + len(piece):]
    assert csite.path("w.bin").read_bytes() == expect
    # past the end: the file grows
    tail = os.urandom(5000)
    _, final = dc.stor(c, "w.bin", tail, n, stack, pre=[f"RANG 58000 {58000 + len(tail)}"])
    assert final.code == 226, final
    expect = expect[:58000] + tail
    assert csite.path("w.bin").read_bytes() == expect
    more = os.urandom(17_000)
    _, final = dc.stor(c, "w.bin", more, n, stack, verb="APPE")
    assert final.code == 226, final
    assert csite.path("w.bin").read_bytes() == expect + more


@beyond  # the reference's 150 reply after REST counts the whole file
def test_plain_ranges_with_ftplib(csite):
    """Plain (no codec, 1 stream) ranged reads and writes with an unmodified ftplib."""
    data = csite.put("p.bin", payload())
    ftp = csite.login()
    got = []
    assert ftp.sendcmd("RANG 100 20100").startswith("350")
    ftp.retrbinary("RETR p.bin", got.append)
    assert b"".join(got) == data[100:20100]
    got = []
    ftp.retrbinary("RETR p.bin", got.append, rest=50_000)
    assert b"".join(got) == data[50_000:]
    piece = os.urandom(3000)
    assert ftp.sendcmd(f"RANG 7000 {7000 + len(piece)}").startswith("350")
    ftp.storbinary("STOR p.bin", io.BytesIO(piece))
    assert csite.path("p.bin").read_bytes() == data[:7000] + piece + data[10_000:]
    ftp.quit()


# ---------------------------------------------------------------- listings
LIST_CASES = [(n, enc, gz) for n, enc, gz in
              [(2, "plain", False), (MAX_STREAMS, "plain", False), (1, "BLOWFISH", False),
               (1, "plain", True), (1, "AES256", True), (3, "AES128", False),
               (MAX_STREAMS, "BLOWFISH", True), (2, "AES192", True)]]


def listing_site(csite):
    csite.put("a.bin", size=10)
    csite.put("with space.txt", size=20_000)
    csite.put("ümlaut.dat", size=0)
    csite.mkdir("sub")
    for i in range(300):  # a listing longer than one 16 KiB block
        csite.put(f"many/file-{i:04d}-{'x' * 40}.bin", size=i)


@beyond  # the reference sends listings over one plain stream whatever was negotiated
@pytest.mark.parametrize("verb", ["MLSD", "LIST"])
@pytest.mark.parametrize("case", LIST_CASES, ids=matrix_id)
def test_listing_over_codecs(csite, verb, case):
    n, enc, gz = case
    listing_site(csite)
    stack = make_stack(enc, gz)
    expected = {}
    for d in (None, "many"):
        r150, raw, r226 = csite.control().listing(verb, d)  # plain channel, for reference
        assert r150.code == 150 and r226.code == 226
        expected[d] = raw.decode("utf-8")
    c = csite.control(**stack.request_fields())
    for d in (None, "many"):
        r150, text, r226 = dc.listing(c, verb, n, stack, d)
        assert r226.lines == ["226 File transfer successful"], r226
        assert text == expected[d], f"{verb} {d} over {n} streams with {stack} differs"
    names = expected[None]
    assert "with space.txt" in names and "ümlaut.dat" in names and "sub" in names
    assert len(expected["many"].splitlines()) == 300


@beyond
def test_multistream_listing_is_framed(csite):
    """Proof that a listing over n > 1 plain streams uses the JPARSS framing."""
    listing_site(csite)
    c = csite.control()
    socks = dc.open_channel(c, 3)
    try:
        assert c.cmd("MLSD many").code == 150
        wires = dc.read_all_concurrently(socks)
    finally:
        dc.close_all(socks)
    assert c.read_reply().code == 226
    for i, w in enumerate(wires):
        magic, idx, seq = struct.unpack(">HHI", w[:8])
        assert (magic, idx, seq) == (dc.MAGIC, i, 0), f"stream {i} does not start with a frame"
    text = dc.unframe(wires).decode("utf-8")
    assert len(text) > 16384 and len(text.splitlines()) == 300


@beyond
def test_encrypted_listing_is_not_plain_text(csite):
    listing_site(csite)
    stack = make_stack("BLOWFISH", False)
    c = csite.control(**stack.request_fields())
    socks = dc.open_channel(c, 1)
    try:
        assert c.cmd("MLSD").code == 150
        (wire,) = dc.read_all_concurrently(socks)
    finally:
        dc.close_all(socks)
    assert c.read_reply().code == 226
    assert b"a.bin" not in wire and b"type=" not in wire, "listing sent in clear text"
    assert b"a.bin" in stack.decode_stream(wire)


def test_data_connections_close_with_socket_level_eof(csite):
    """Encrypted/compressed transfers end by closing every data stream."""
    stack = make_stack("AES256", True)
    csite.put("e.bin", payload(5000))
    c = csite.control(**stack.request_fields())
    socks = dc.open_channel(c, 2)
    try:
        assert c.cmd("RETR e.bin").code == 150
        dc.read_all_concurrently(socks)  # returns only at EOF on every stream
        for s in socks:
            s.settimeout(5)
            assert s.recv(1) == b""
    finally:
        for s in socks:
            s.close()
    assert c.read_reply().code == 226


# ---------------------------------------------------------------- COMPRESS_THREADS
@pytest.mark.parametrize("threads", ["1", "3"])
def test_compress_threads_still_make_one_gzip_member(daemon_factory, site_factory, threads):
    """With COMPRESS_THREADS > 1 the daemon compresses 256 KiB pieces of one
    stream in parallel; Python's zlib (wbits=31, strict: trailer required,
    nothing after the member) must still read ONE member with every byte,
    plain and inside AES, over one and two streams."""
    d = daemon_factory(name=f"uftpd COMPRESS_THREADS={threads}", COMPRESS_THREADS=threads,
                       **dc.CODEC_CONFIG)
    gzip_both_ways(site_factory(daemon=d), 1_300_000, f"{threads} threads")


def gzip_both_ways(s, size, what, upload=False):
    """gzip downloads (and uploads) of `size` bytes, plain and inside AES,
    over one and two streams, byte for byte against Python's strict zlib."""
    data = s.put("big.bin", payload(size))
    for enc in ("plain", "AES128"):
        stack = make_stack(enc, True)
        c = s.control(**stack.request_fields())
        for n in (1, 2):
            _, got, r226 = dc.retr(c, "big.bin", n, stack)
            assert r226.code == 226
            assert got == data, f"{stack} over {n} streams, {what}"
            if upload:
                _, final = dc.stor(c, f"up{n}.bin", data, n, stack)
                assert final.code == 226, final
                assert s.path(f"up{n}.bin").read_bytes() == data


# ---------------------------------------------------------------- GZIP_ENGINE
@pytest.mark.parametrize("engine,level", [("zlib", "1"), ("isal", "1"), ("isal", "3"),
                                          ("auto", "6")])
def test_gzip_engine_makes_the_same_format(daemon_factory, site_factory, engine, level):
    """GZIP_ENGINE picks the server's deflate (zlib-rs, or ISA-L from the
    `libisal2` package, for levels 1-3); whichever compresses, Python's
    zlib (wbits=31, strict) reads one member with every byte, plain and
    inside AES, over one and two streams, also with COMPRESS_THREADS=1
    (ISA-L then compresses in the stream's own thread); uploads compressed
    by Python land byte for byte, decompressed by the same engine (ISA-L
    at any level); check-config names the engines."""
    d = daemon_factory(name=f"uftpd GZIP_ENGINE={engine} GZIP_LEVEL={level}",
                       GZIP_ENGINE=engine, GZIP_LEVEL=level, COMPRESS_THREADS="1",
                       **dc.CODEC_CONFIG)
    gzip_both_ways(site_factory(daemon=d), 700_000, f"{engine} level {level}", upload=True)
    r = run_check_config(d.config_file)
    want = {"zlib": f"compressed by zlib-rs level {level}",
            "isal": f"compressed by ISA-L (libisal.so.2) level {level}",
            "auto": f"compressed by zlib-rs level {level}"}[engine]
    assert want in r.stdout, r.stdout + r.stderr
    inflate = "zlib-rs" if engine == "zlib" else "ISA-L (libisal.so.2)"
    assert f"gzip uploads are decompressed by {inflate} (GZIP_ENGINE={engine})" in r.stdout, \
        r.stdout + r.stderr


# ---------------------------------------------------------------- a file that shrinks
@pytest.mark.beyond_reference  # the reference sends what read() returns and ends normally
@pytest.mark.parametrize("n", [1, 2])
def test_file_truncated_during_encrypted_download(csite, n):
    """Codecs read the file through a mapping; a file cut to nothing while
    it is being sent (the client reads slowly) must fail the transfer with
    an error reply, give the client no complete-looking stream, and leave
    the session (and the daemon) serving."""
    import time
    size = 48 << 20
    data = csite.put("shrinking.bin", os.urandom(size))
    stack = make_stack("AES128", False)
    c = csite.control(**stack.request_fields())
    socks = dc.open_channel(c, n)
    try:
        r150 = c.cmd("RETR shrinking.bin")
        assert r150.code == 150, r150
        first = [s.recv(65536) for s in socks]  # sending has started
        assert all(first)
        time.sleep(0.3)  # the server's socket buffers are full now
        with open(csite.path("shrinking.bin"), "r+b") as f:
            f.truncate(0)
        wires = [a + b for a, b in zip(first, dc.read_all_concurrently(socks))]
    finally:
        dc.close_all(socks)
    final = c.read_reply()
    assert final.code >= 400, f"a file cut during the transfer answered {final}"
    with pytest.raises(dc.CodecError):
        got = stack.decode_channel(wires)
        # decoding "succeeded": it must at least not be the whole file
        assert got != data
        raise dc.CodecError("decoded a short or altered stream")
    assert sum(map(len, wires)) < size
    r = c.cmd("NOOP")
    assert r.code == 200, r
    # the next transfer of the session works
    csite.put("ok.bin", b"still serving\n")
    _, again, r226 = dc.retr(c, "ok.bin", n, stack)
    assert again == b"still serving\n" and r226.code == 226
