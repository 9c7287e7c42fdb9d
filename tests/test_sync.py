"""Sync (PROTOCOL.md section 8): SYNC-TO-CLIENT / SYNC-TO-SERVER.

The server's checksums and records are checked against an independent
Python computation of the formula (a raw single-stream peer, as the Java
client is), and both directions run with our own client (uftpc) over one
and several streams, with and without codecs. The follower on the server
writes aside and renames only a complete new version.

`UFTPD_SYNC_BIG=1` adds the 1 GiB measurement (files in /dev/shm).
"""

import base64
import hashlib
import os
import pathlib
import re
import socket
import struct
import subprocess
import time

import pytest

from helpers.daemon import uftpd_bin
from helpers.ftp import read_frames, recv_exact, write_frames

END = 0xFFFFFFFF


# ---------------------------------------------------------------- the formula, written out
def weak_reference(x, k, l):
    """PROTOCOL.md: a = sum(X) mod 2^16, b = sum((l - i + 1) * X[i]) mod 2^16, a + (b << 16)."""
    a = 0
    b = 0
    for i in range(k, l + 1):
        a += x[i]
        b += (l - i + 1) * x[i]
    return (a % 65536) + ((b % 65536) << 16)


def block_sums(data, bs):
    sums = []
    for off in range(0, len(data), bs):
        block = data[off:off + bs]
        sums.append((weak_reference(data, off, off + len(block) - 1),
                     hashlib.md5(block).digest()))
    return sums


def encode_sums(bs, sums):
    out = struct.pack(">II", bs, len(sums))
    for w, s in sums:
        out += struct.pack(">Q", w) + s
    return out


def default_block_size(size):
    return max(size // 1000, 512)


class Stream:
    """Reads exact amounts from a socket or from bytes."""

    def __init__(self, sock=None, data=None):
        self.sock = sock
        self.data = data
        self.pos = 0

    def read(self, n):
        if self.sock is not None:
            return recv_exact(self.sock, n, timeout=60)
        out = self.data[self.pos:self.pos + n]
        assert len(out) == n, f"truncated: wanted {n} at {self.pos}"
        self.pos += n
        return out


def read_sums(stream):
    bs, n = struct.unpack(">II", stream.read(8))
    sums = []
    for _ in range(n):
        w = struct.unpack(">Q", stream.read(8))[0]
        sums.append((w, stream.read(16)))
    return bs, sums


def rebuild(stream, old, bs, nblocks):
    """Follower: apply records; returns (new data, literal bytes, matched blocks)."""
    out = bytearray()
    literal = matched = 0
    while True:
        index, length = struct.unpack(">IQ", stream.read(12))
        out += stream.read(length)
        literal += length
        if index == END:
            return bytes(out), literal, matched
        assert index < nblocks, f"record names block {index} of {nblocks}"
        out += old[index * bs:(index + 1) * bs]
        matched += 1


def naive_leader(new, bs, sums):
    """Leader that only looks at aligned blocks (enough to drive the server's follower)."""
    by_strong = {s: i for i, (w, s) in enumerate(sums)}
    records = b""
    literal = bytearray()
    for off in range(0, len(new), bs):
        block = new[off:off + bs]
        i = by_strong.get(hashlib.md5(block).digest())
        if i is not None and sums[i][0] == weak_reference(new, off, off + len(block) - 1) \
                and len(block) == bs:
            records += struct.pack(">IQ", i, len(literal)) + bytes(literal)
            literal = bytearray()
        else:
            literal += block
    return records + struct.pack(">IQ", END, len(literal)) + bytes(literal)


def modified(data, positions):
    b = bytearray(data)
    for p in positions:
        b[p] ^= 0xA5
    return bytes(b)


# ---------------------------------------------------------------- raw single stream (Java's way)
def test_weak_checksum_reference_values():
    """The Python reference of the formula itself, on values worked out by hand."""
    assert weak_reference(b"abc", 0, 2) == 294 + (586 << 16)
    ff = b"\xff" * 1000
    assert weak_reference(ff, 0, 999) == (255000 % 65536) + (((255 * 1000 * 1001 // 2) % 65536) << 16)


@pytest.mark.parametrize("codecs", ["plain", "gzip"])
def test_server_checksums_match_the_formula(site, codecs):
    """SYNC-TO-SERVER: the server (follower) sends block size, count, weak sums and MD5s
    exactly as an independent computation of PROTOCOL.md section 8 gives them (raw on
    one stream, also on a session with compression, as the Java client does)."""
    old = os.urandom(300_000) + b"\xff" * 5000 + b"\x00" * 1234  # short last block
    site.put("f.bin", data=old, mode=0o640)
    new = modified(old, [10, 150_000, len(old) - 1])
    c = site.control(**({"compress": "true"} if codecs == "gzip" else {}))
    _, s = c.pasv()
    with s:
        assert c.cmd("SYNC-TO-SERVER f.bin").lines == ["200 OK"]
        bs, sums = read_sums(Stream(s))
        assert bs == default_block_size(len(old)) == 512
        assert len(sums) == (len(old) + bs - 1) // bs
        assert sums == block_sums(old, bs), "weak/strong sums differ from the formula"
        s.sendall(naive_leader(new, bs, sums))
        # the data connection stays open after a raw sync (Java reuses it)
        if codecs == "plain":
            r150 = c.cmd("RETR f.bin")
            assert r150.code == 150, r150
            assert recv_exact(s, len(new)) == new
            assert c.read_reply().code == 226
        else:
            assert c.cmd("NOOP").lines == ["200 OK"]
            time.sleep(0.5)  # the follower renames when the exchange is complete
    assert site.path("f.bin").read_bytes() == new
    assert site.path("f.bin").stat().st_mode & 0o777 == 0o640, "permissions kept"
    assert [p.name for p in site.base.iterdir()] == ["f.bin"], "no temporary file left"


SESSION_CODECS = {
    "plain": {},
    "gzip": {"compress": "true"},
    "aes": {"key": base64.b64encode(os.urandom(48)).decode(), "algo": "AES"},
}


@pytest.mark.parametrize("codecs", list(SESSION_CODECS))
def test_server_leader_records(site, codecs):
    """SYNC-TO-CLIENT: the server (leader) answers checksums computed by the formula with
    records that rebuild its file, sending only the changed blocks as literal data. With
    one stream the exchange is raw whatever codecs the session has, as the Java client
    runs it (PROTOCOL.md section 8)."""
    new = os.urandom(256 * 1024)
    site.put("f.bin", data=new)
    old = modified(new, [5000, 100_000, 200_000])
    bs = 1024
    sums = block_sums(old, bs)
    c = site.control(**SESSION_CODECS[codecs])
    _, s = c.pasv()
    with s:
        assert c.cmd("SYNC-TO-CLIENT f.bin").lines == ["200 OK"]
        s.sendall(encode_sums(bs, sums))
        got, literal, matched = rebuild(Stream(s), old, bs, len(sums))
        assert got == new
        assert literal == 3 * bs, f"{literal} literal bytes for 3 changed blocks"
        assert matched == len(sums) - 3
        # no reply follows the exchange; the session goes on
        assert c.cmd("NOOP").lines == ["200 OK"]


@pytest.mark.parametrize("follower_has", [b"", b"hello world"], ids=["empty", "same"])
def test_leader_sends_small_file_as_one_record(site, follower_has):
    """Shorter than one block: one record, even when the follower has the same bytes."""
    site.put("small", data=b"hello world")
    c = site.control()
    _, s = c.pasv()
    with s:
        assert c.cmd("SYNC-TO-CLIENT small").code == 200
        s.sendall(encode_sums(512, block_sums(follower_has, 512)))
        assert recv_exact(s, 12 + 11) == struct.pack(">IQ", END, 11) + b"hello world"
        assert c.cmd("NOOP").lines == ["200 OK"]


def keep_alive_upload(c, s, size):
    """An upload of known length on a kept data connection, as the Java client
    makes before a sync in the same session. The bytes are sent with the STOR,
    so that they are all queued when the server reads: its last read takes all
    that is left, with the bulk mark still set."""
    assert c.cmd("KEEP-ALIVE true").lines == ["200 OK"]
    assert c.cmd(f"ALLO {size}").code == 200
    c.send("STOR before.bin")
    s.sendall(os.urandom(size))
    assert c.read_reply().lines == ["150 OK"]
    assert c.read_reply().lines == ["226 File transfer successful"]


# sizes whose last read can end exactly at the upload's end: the server's
# 256 KiB receive low-water mark must not outlive that upload, or the small
# reads of the sync exchange on the same connection wait for bytes that never
# come (the sync has no read timeout)
@pytest.mark.beyond_reference  # the reference has no KEEP-ALIVE uploads of known length
@pytest.mark.parametrize("size", [262_144, 1_048_576])
def test_sync_after_a_kept_connection_upload(site, size):
    site.put("small", data=b"hello world")
    c = site.control()
    _, s = c.pasv()
    with s:
        keep_alive_upload(c, s, size)
        # the server as leader reads our 8 bytes of (no) checksums
        assert c.cmd("SYNC-TO-CLIENT small").code == 200
        s.sendall(encode_sums(512, []))
        assert recv_exact(s, 12 + 11, timeout=20) == struct.pack(">IQ", END, 11) + b"hello world"
        # the server as follower reads our one record
        data = os.urandom(3000)
        assert c.cmd("SYNC-TO-SERVER small").code == 200
        bs, sums = read_sums(Stream(s))
        s.sendall(struct.pack(">IQ", END, len(data)) + data)
        assert c.cmd("NOOP").lines == ["200 OK"]
    assert site.path("small").read_bytes() == data


# rateLimit caps the whole session (PROTOCOL.md section 3), sync included
@pytest.mark.beyond_reference  # the reference does not limit sync
def test_sync_keeps_to_the_rate_limit(site):
    rate = 512 * 1024
    data = site.put("f.bin", size=3 * rate)
    c = site.control(rateLimit=str(rate))
    _, s = c.pasv()
    with s:
        start = time.monotonic()
        assert c.cmd("SYNC-TO-CLIENT f.bin").code == 200
        s.sendall(encode_sums(512, []))
        assert recv_exact(s, 12 + len(data), timeout=30)[12:] == data
        elapsed = time.monotonic() - start
        # 3 s at the limit; the burst allowance may shorten that, never to under 1 s
        assert elapsed >= 1.0, f"3 x rateLimit bytes sent in {elapsed:.2f}s"
        new = os.urandom(3 * rate)
        start = time.monotonic()
        assert c.cmd("SYNC-TO-SERVER g.bin").code == 200
        assert read_sums(Stream(s)) == (512, [])
        s.sendall(struct.pack(">IQ", END, len(new)) + new)
        assert c.cmd("NOOP").code == 200
        elapsed = time.monotonic() - start
        assert elapsed >= 1.0, f"3 x rateLimit bytes received in {elapsed:.2f}s"
    assert site.path("g.bin").read_bytes() == new


def test_interrupted_sync_keeps_the_old_file(site):
    old = os.urandom(100_000)
    site.put("f.bin", data=old)
    c = site.control()
    _, s = c.pasv()
    with s:
        assert c.cmd("SYNC-TO-SERVER f.bin").code == 200
        bs, sums = read_sums(Stream(s))
        # half a record, then the connection goes away
        s.sendall(struct.pack(">IQ", 0, 1000) + b"x" * 300)
    assert c.cmd("NOOP").code == 200  # the server went on after the failure
    assert site.path("f.bin").read_bytes() == old
    assert [p.name for p in site.base.iterdir()] == ["f.bin"], "temporary file left behind"
    log = site.daemon.log_text()
    assert re.search(r"SYNC-TO-SERVER .*f\.bin by '\w+' failed: .*old version is unchanged", log), \
        log[-2000:]


def test_bad_block_reference_is_refused(site):
    old = os.urandom(5000)
    site.put("f.bin", data=old)
    c = site.control()
    _, s = c.pasv()
    with s:
        assert c.cmd("SYNC-TO-SERVER f.bin").code == 200
        bs, sums = read_sums(Stream(s))
        s.sendall(struct.pack(">IQ", len(sums), 0) + struct.pack(">IQ", END, 0))
    assert c.cmd("NOOP").code == 200
    assert site.path("f.bin").read_bytes() == old


def test_sync_to_server_creates_a_missing_file(site):
    c = site.control()
    _, s = c.pasv()
    data = os.urandom(3000)
    with s:
        assert c.cmd("SYNC-TO-SERVER sub/../new.bin").code == 200
        assert read_sums(Stream(s)) == (512, [])
        s.sendall(struct.pack(">IQ", END, len(data)) + data)
    assert c.cmd("NOOP").code == 200
    assert site.path("new.bin").read_bytes() == data


def test_sync_errors(site):
    site.put("f.bin", size=10)
    site.mkdir("d")
    c = site.control()
    r = c.cmd("SYNC-TO-CLIENT missing.bin")
    assert r.code == 550 and r.last.startswith("550 Error processing command 'SYNC-TO-CLIENT': "), r
    assert c.cmd("SYNC-TO-CLIENT d").code == 550
    assert c.cmd("SYNC-TO-SERVER d").code == 550
    assert c.cmd("SYNC-TO-CLIENT").code == 501
    r = c.cmd("SYNC-TO-CLIENT f.bin")  # no data connection
    assert r.code == 500, r
    assert c.cmd("SYNC-TO-SERVER ../outside.bin").code == 534
    ro = site.control(access_permissions="READ")
    assert ro.cmd("SYNC-TO-SERVER f.bin").code == 534
    assert [p.name for p in sorted(site.base.iterdir())] == ["d", "f.bin"]


# ---------------------------------------------------------------- framing without half-close
def test_plain_multistream_peer_that_never_closes(site):
    """A framing peer that keeps its streams open (as the Java PSocket does): the server
    reads exactly the message and does not wait for an end of stream."""
    new = os.urandom(200_000)
    site.put("f.bin", data=new)
    old = modified(new, [70_000])
    bs = 2048
    sums = block_sums(old, bs)
    c = site.control()
    assert c.cmd("NOOP 2").code == 222
    socks = [c.pasv()[1], c.pasv()[1]]
    try:
        assert c.cmd("SYNC-TO-CLIENT f.bin").code == 200
        write_frames(socks, encode_sums(bs, sums))  # no shutdown
        got, literal, _ = rebuild(Stream(data=read_frames(socks, 60)), old, bs, len(sums))
        assert got == new and literal == bs
    finally:
        for s in socks:
            s.close()
    # the other direction: the peer never closes after its records either
    c2 = site.control()
    assert c2.cmd("NOOP 2").code == 222
    socks = [c2.pasv()[1], c2.pasv()[1]]
    try:
        assert c2.cmd("SYNC-TO-SERVER f.bin").code == 200
        bs2, sums2 = read_sums(Stream(data=read_frames(socks, 60)))
        target = modified(new, [1, 199_999])
        write_frames(socks, naive_leader(target, bs2, sums2))
        assert c2.cmd("NOOP").code == 200  # answered after the exchange is through
        assert site.path("f.bin").read_bytes() == target
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- our own client
def uftpc_bin():
    p = pathlib.Path(os.environ.get("UFTPC_BIN", uftpd_bin().parent / "uftpc"))
    if not p.is_file():
        pytest.skip(f"uftpc not built at {p} (set UFTPC_BIN)")
    return p


def uftpc(site, secret, *args, opts=()):
    cmd = [str(uftpc_bin()), *opts, f"127.0.0.1:{site.port}", secret, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r


def sync_stats(stderr):
    m = re.search(r"sync: .*block size (\d+), (\d+) old blocks, (\d+) matched, (\d+) literal bytes",
                  stderr)
    assert m, stderr
    return dict(zip(("bs", "blocks", "matched", "literal"), map(int, m.groups())))


KEY_AES = os.urandom(48)
KEY_BF = os.urandom(56)

CHANNELS = {
    "1-plain": ({}, []),
    "3-plain": ({"streams": "3"}, ["-n", "3"]),
    "1-gzip": ({"compress": "true"}, ["-z"]),
    "1-aes": ({"key": base64.b64encode(KEY_AES).decode(), "algo": "AES"},
              ["-E", base64.b64encode(KEY_AES).decode(), "-a", "AES"]),
    "2-blowfish-gzip": ({"streams": "2", "compress": "true",
                         "key": base64.b64encode(KEY_BF).decode(), "algo": "BLOWFISH"},
                        ["-n", "2", "-z", "-E", base64.b64encode(KEY_BF).decode(),
                         "-a", "BLOWFISH"]),
}


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_own_client_both_directions(site, workdir, channel):
    fields, opts = CHANNELS[channel]
    size = 3 * 1024 * 1024 + 321
    server_old = os.urandom(size)
    site.put("f.bin", data=server_old)
    # to the server: local new version differs in a few places
    local = workdir / "local.bin"
    new = modified(server_old, [0, 1_500_000, size - 1])
    local.write_bytes(new)
    secret = site.announce_ok(**fields)
    r = uftpc(site, secret, "sync-to-server", str(local), "f.bin", opts=opts)
    st = sync_stats(r.stderr)
    assert site.path("f.bin").read_bytes() == new
    assert st["literal"] <= 3 * st["bs"], st
    # to the client: the server's version wins over a local copy with changes
    local.write_bytes(modified(new, [10, 2_000_000]) + b"tail")
    secret = site.announce_ok(**fields)
    r = uftpc(site, secret, "sync-to-client", "f.bin", str(local), opts=opts)
    st = sync_stats(r.stderr)
    assert local.read_bytes() == new
    assert st["literal"] <= 2 * st["bs"] + 49, st  # + the short last block
    assert sorted(p.name for p in workdir.iterdir()) == ["local.bin", "site0"], \
        "temporary file left on the client"


def test_own_client_sync_to_new_local_file(site, workdir):
    data = os.urandom(10_000)
    site.put("f.bin", data=data)
    secret = site.announce_ok()
    uftpc(site, secret, "sync-to-client", "f.bin", str(workdir / "fresh.bin"))
    assert (workdir / "fresh.bin").read_bytes() == data


# ---------------------------------------------------------------- efficiency, 1 GiB
@pytest.mark.skipif(not os.environ.get("UFTPD_SYNC_BIG"), reason="set UFTPD_SYNC_BIG=1 (1 GiB files)")
@pytest.mark.parametrize("direction", ["sync-to-server", "sync-to-client"])
def test_one_gib_few_changed_blocks(site, direction):
    """1 GiB, 5 scattered changed bytes: only ~5 blocks of literal data travel."""
    import shutil
    shm = pathlib.Path("/dev/shm") / f"uftpd-sync-{os.getpid()}"
    shm.mkdir(exist_ok=True)
    os.chmod(shm, 0o755)
    try:
        size = 1 << 30
        server = site.path("big.bin")
        local = shm / "local.bin"
        with open(local, "wb") as f:  # generated content, one MiB pattern repeated with noise
            chunk = bytearray(os.urandom(1 << 20))
            for i in range(size >> 20):
                chunk[i % len(chunk)] ^= 0xFF
                f.write(chunk)
        shutil.copyfile(local, server)
        os.chown(server, site.user.uid, site.user.gid)
        positions = [size // 7 * k + 12345 for k in range(1, 6)]
        with open(local if direction == "sync-to-server" else server, "r+b") as f:
            for p in positions:
                f.seek(p)
                b = f.read(1)
                f.seek(p)
                f.write(bytes([b[0] ^ 0x5A]))
        secret = site.announce_ok()
        if direction == "sync-to-server":
            r = uftpc(site, secret, direction, str(local), "big.bin")
        else:
            r = uftpc(site, secret, direction, "big.bin", str(local))
        st = sync_stats(r.stderr)
        wire = re.search(r"sent (\d+) bytes, received (\d+) bytes", r.stderr)
        print(f"\n{direction}: {r.stderr.strip()}")
        assert st["literal"] <= 5 * st["bs"], st
        assert int(wire.group(1)) + int(wire.group(2)) < 8 * st["bs"] + 40 * st["blocks"], r.stderr
        assert hashlib.md5(local.read_bytes()).digest() == hashlib.md5(server.read_bytes()).digest()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
