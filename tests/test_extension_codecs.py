"""The extension codecs beyond UFTPD 3.x (book: protocol/extensions.md):
zstd compression (`compress=zstd`) and ChaCha20-Poly1305 authenticated
encryption (`algo=CHACHA20-POLY1305`, 32-byte key).

- uftpc (env UFTPC_BIN, default next to UFTPD_BIN) downloads and uploads
  byte-exact with 1 and 4 streams, for zstd, ChaCha20-Poly1305 and both;
- an independent Python implementation of the ChaCha20-Poly1305 record
  format (pycryptodome; written from the format description, sharing
  nothing with the Rust codec) and the zstd command-line tool read what the
  daemon sends and write what the daemon reads, so the wire format is
  checked, not just that our client and server agree;
- FEAT: `CRYPTED-CHACHA20-POLY1305` and `COMPRESS zstd` for such sessions,
  legacy sessions unchanged;
- a wrong key length or compress value is refused when the request arrives;
- a ChaCha20-Poly1305 upload cut at a record boundary, tampered with,
  extended or replayed gets an error reply, not 226, and the session stays
  usable; so does a zstd upload whose frame is cut.
"""

import base64
import os
import pathlib
import re
import shutil
import struct
import subprocess

import pytest
from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from conftest import use_daemon
from helpers import datacodec as dc
from helpers.daemon import LOOPBACK, run_check_config, uftpd_bin

MAX_STREAMS = dc.CODEC_CONFIG["MAX_STREAMS"]
CHACHA = "CHACHA20-POLY1305"
SIZE = 300 * 1024 + 77  # several 64 KiB records and 16 KiB blocks, odd tail

# ---------------------------------------------------------------- the format, in Python
VERSION = 1
SALT_LEN = 16
HEADER_LEN = 1 + SALT_LEN
MAX_RECORD = 64 * 1024
TAG_LEN = 16
FINAL = 0x80000000


def stream_key(key, salt, index, count):
    info = f"uftp chacha20-poly1305 stream {index}/{count}".encode("ascii")
    return HKDF(key, 32, salt, SHA256, context=info)


def nonce(r):
    return b"\0\0\0\0" + struct.pack(">Q", r)


def seal_stream(key, plain, index, count, record=MAX_RECORD, salt=None):
    """One stream: header, records of `record` bytes, the last one final."""
    salt = salt or os.urandom(SALT_LEN)
    k = stream_key(key, salt, index, count)
    out = bytearray([VERSION]) + salt
    chunks = [plain[i:i + record] for i in range(0, len(plain), record)] or [b""]
    for r, chunk in enumerate(chunks):
        word = struct.pack(">I", (len(chunk) + TAG_LEN) | (FINAL if r == len(chunks) - 1 else 0))
        c = ChaCha20_Poly1305.new(key=k, nonce=nonce(r))
        c.update(word)
        ct, tag = c.encrypt_and_digest(chunk)
        out += word + ct + tag
    return bytes(out)


def record_starts(wire):
    """Offsets of the records of a stream (after its header)."""
    starts, p = [], HEADER_LEN
    while p + 4 <= len(wire):
        starts.append(p)
        p += 4 + (struct.unpack(">I", wire[p:p + 4])[0] & ~FINAL)
    return starts


def open_stream(key, wire, index, count):
    """Strict decoder: every tag, the final record, nothing after it."""
    if len(wire) < HEADER_LEN:
        raise dc.CodecError(f"stream of {len(wire)} bytes has no complete header")
    if wire[0] != VERSION:
        raise dc.CodecError(f"version byte {wire[0]}")
    k = stream_key(key, wire[1:HEADER_LEN], index, count)
    pos, r, out = HEADER_LEN, 0, bytearray()
    while True:
        if pos + 4 > len(wire):
            raise dc.CodecError(f"stream ended after {r} records without the final record")
        (word,) = struct.unpack(">I", wire[pos:pos + 4])
        length = word & ~FINAL
        if not TAG_LEN <= length <= MAX_RECORD + TAG_LEN:
            raise dc.CodecError(f"record {r}: length {length}")
        body = wire[pos + 4:pos + 4 + length]
        if len(body) < length:
            raise dc.CodecError(f"record {r} cut short")
        c = ChaCha20_Poly1305.new(key=k, nonce=nonce(r))
        c.update(wire[pos:pos + 4])
        try:
            out += c.decrypt_and_verify(body[:-TAG_LEN], body[-TAG_LEN:])
        except ValueError:
            raise dc.CodecError(f"record {r}: authentication failed") from None
        pos += 4 + length
        r += 1
        if word & FINAL:
            if pos != len(wire):
                raise dc.CodecError(f"{len(wire) - pos} bytes after the final record")
            return bytes(out)


def zstd_cli(args, data):
    p = subprocess.run(["zstd", "-q", "-c", *args], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise dc.CodecError(f"zstd {' '.join(args)}: {p.stderr.decode().strip()}")
    return p.stdout


class ExtStack:
    """Duck-types helpers.datacodec.Stack for dc.retr / dc.stor: the
    extension codecs (key = 32 bytes for ChaCha20-Poly1305, zstd on/off)."""

    def __init__(self, chacha=False, zstd=False, key=None):
        self.key = (key or os.urandom(32)) if chacha else None
        self.algo = CHACHA if chacha else None
        self.zstd = zstd

    def request_fields(self):
        f = {"compress": "zstd" if self.zstd else "false"}
        if self.key is not None:
            f["key"] = base64.b64encode(self.key).decode("ascii")
            f["algo"] = CHACHA
        return f

    def uftpc_args(self):
        a = []
        if self.key is not None:
            a += ["-E", base64.b64encode(self.key).decode(), "-a", CHACHA]
        if self.zstd:
            a += ["-Z"]
        return a

    def __repr__(self):
        return "+".join([x for x, on in ((CHACHA, self.key), ("zstd", self.zstd)) if on]) or "plain"

    def encode_stream(self, plain, index, count):
        data = zstd_cli(["-1"], plain) if self.zstd else plain
        return seal_stream(self.key, data, index, count) if self.key is not None else data

    def decode_stream(self, wire, index, count):
        data = open_stream(self.key, wire, index, count) if self.key is not None else wire
        return zstd_cli(["-d"], data) if self.zstd else data

    def encode_channel(self, payload, n, block=dc.MAX_BLOCK):
        streams = [payload] if n == 1 else dc.frame(payload, n, block)
        return [self.encode_stream(s, i, n) for i, s in enumerate(streams)]

    def decode_channel(self, wires):
        n = len(wires)
        plains = [self.decode_stream(w, i, n) for i, w in enumerate(wires)]
        return plains[0] if n == 1 else dc.unframe(plains)


def payload(size=SIZE):
    """Half random, half text: something to compress and something not."""
    text = b"".join(b"line %06d of the extension codec test\n" % i for i in range(size // 38 + 1))
    return (os.urandom(size // 2) + text)[:size]


def b64(n):
    return base64.b64encode(os.urandom(n)).decode("ascii")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def _daemons(tmp_root):
    holder = dc.DaemonHolder(tmp_root, "ext-codecs-uftpd")
    yield holder
    holder.stop()


@pytest.fixture
def csite(_daemons, site_factory):
    """A site on a daemon with MAX_STREAMS=4."""
    d = _daemons.get()
    use_daemon(d)
    yield site_factory(daemon=d)
    d.assert_alive(" during this test")


def uftpc_bin():
    default = pathlib.Path(uftpd_bin()).parent / "uftpc"
    return pathlib.Path(os.environ.get("UFTPC_BIN", default))


@pytest.fixture(scope="module")
def uftpc():
    b = uftpc_bin()
    if not os.access(b, os.X_OK):
        pytest.skip(f"uftpc not built at {b} (cargo build --release) or set UFTPC_BIN")
    return b


def run_uftpc(uftpc, site, secret, n, extra, *cmd, ok=True):
    argv = [str(uftpc), "-n", str(n), *extra, f"{LOOPBACK}:{site.port}", secret, *cmd]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if ok:
        assert p.returncode == 0, (f"uftpc exit {p.returncode}: {' '.join(argv)}\n"
                                   f"{p.stderr.decode('utf-8', 'replace')[-3000:]}")
    return p


STACKS = {
    "zstd": dict(zstd=True),
    "chacha": dict(chacha=True),
    "chacha-zstd": dict(chacha=True, zstd=True),
}
CASES = [(name, n) for name in STACKS for n in (1, MAX_STREAMS)]


def case_id(case):
    return f"{case[0]}-n{case[1]}"


# ---------------------------------------------------------------- uftpc, both directions
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_uftpc_download_and_upload(csite, uftpc, case):
    name, n = case
    stack = ExtStack(**STACKS[name])
    data = csite.put("down.bin", payload())
    secret = csite.announce_ok(persistent="true", **stack.request_fields())
    out = csite.work / "got.bin"
    run_uftpc(uftpc, csite, secret, n, stack.uftpc_args(), "get", "down.bin", str(out))
    got = out.read_bytes()
    assert len(got) == len(data) and got == data, f"{stack} over {n} streams: download corrupted"

    up = payload(SIZE + 4321)
    src = csite.work / "src.bin"
    src.write_bytes(up)
    run_uftpc(uftpc, csite, secret, n, stack.uftpc_args(), "put", str(src), "up.bin")
    stored = csite.path("up.bin")
    assert stored.read_bytes() == up, f"{stack} over {n} streams: upload corrupted"
    assert stored.stat().st_uid == csite.user.uid


@pytest.mark.parametrize("size", [0, 1, MAX_RECORD, 2 * MAX_RECORD + 1])
def test_uftpc_edge_sizes_chacha_zstd(csite, uftpc, size):
    stack = ExtStack(chacha=True, zstd=True)
    data = csite.put("e.bin", os.urandom(size))
    secret = csite.announce_ok(persistent="true", **stack.request_fields())
    for n in (1, MAX_STREAMS):
        out = csite.work / f"e{n}.bin"
        run_uftpc(uftpc, csite, secret, n, stack.uftpc_args(), "get", "e.bin", str(out))
        assert out.read_bytes() == data, f"{size} bytes over {n} streams"
        run_uftpc(uftpc, csite, secret, n, stack.uftpc_args(), "put", str(out), f"u{n}.bin")
        assert csite.path(f"u{n}.bin").read_bytes() == data


# ---------------------------------------------------------------- the independent codec
@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_python_codec_both_directions(csite, case):
    """Python reads what the daemon sends; the daemon reads what Python sends
    (with other record sizes than ours: full final records, small records)."""
    name, n = case
    stack = ExtStack(**STACKS[name])
    data = csite.put("down.bin", payload())
    c = csite.control(**stack.request_fields())
    r150, got, r226 = dc.retr(c, "down.bin", n, stack)
    assert dc.bytes_available(r150) == len(data)
    assert got == data, f"{stack} over {n} streams: the daemon's wire format differs"
    assert r226.lines == ["226 File transfer successful"]
    up = payload(SIZE - 999)
    _, final = dc.stor(c, "up.bin", up, n, stack, pre=[f"ALLO {len(up)}"])
    assert final.lines == ["226 File transfer successful"], final
    assert csite.path("up.bin").read_bytes() == up


def test_records_of_any_size_up_to_64k_are_accepted(csite):
    key = os.urandom(32)
    stack = ExtStack(chacha=True, key=key)
    data = os.urandom(3 * MAX_RECORD)
    c = csite.control(**stack.request_fields())
    for record in (1000, MAX_RECORD):  # the last one full and final
        wire = seal_stream(key, data, 0, 1, record=record)
        final, c = raw_stor(csite, stack, [wire], c=c, path=f"r{record}.bin")
        assert final.code == 226, f"records of {record} bytes: {final}"
        assert csite.path(f"r{record}.bin").read_bytes() == data


def test_daemon_stream_layout(csite):
    """What the daemon sends: version 1, a fresh salt per stream and transfer,
    records of at most 64 KiB, the last one flagged final."""
    key = os.urandom(32)
    stack = ExtStack(chacha=True, key=key)
    csite.put("l.bin", os.urandom(5 * MAX_RECORD + 10))
    c = csite.control(**stack.request_fields())
    salts = set()
    for _ in range(2):
        for n in (1, 3):
            socks = dc.open_channel(c, n)
            try:
                assert c.cmd("RETR l.bin").code == 150
                wires = dc.read_all_concurrently(socks)
            finally:
                dc.close_all(socks)
            assert c.read_reply().code == 226
            for i, w in enumerate(wires):
                assert w[0] == VERSION
                salts.add(w[1:HEADER_LEN])
                words = [struct.unpack(">I", w[p:p + 4])[0] for p in record_starts(w)]
                assert all(word & ~FINAL <= MAX_RECORD + TAG_LEN for word in words)
                assert [bool(word & FINAL) for word in words] == [False] * (len(words) - 1) + [True]
                open_stream(key, w, i, n)
    assert len(salts) == 2 * (1 + 3), "a salt was used twice"


# ---------------------------------------------------------------- FEAT and the request
def feat(c):
    return [line.strip() for line in c.cmd("FEAT").lines[1:-1]]


@pytest.mark.parametrize("fields,want,unwanted", [
    (dict(compress="zstd"), ["COMPRESS zstd"], ["CRYPTED-"]),
    (dict(key=b64(32), algo=CHACHA), ["CRYPTED-CHACHA20-POLY1305"], ["COMPRESS"]),
    (dict(key=b64(32), algo="chacha20-poly1305", compress="ZSTD"),
     ["CRYPTED-CHACHA20-POLY1305", "COMPRESS zstd"], []),
    (dict(compress="true"), [], ["COMPRESS", "CRYPTED-"]),
    (dict(key=b64(48), algo="AES", compress="true"), ["CRYPTED-AES"], ["COMPRESS"]),
    (dict(key=b64(56), algo="BLOWFISH"), ["CRYPTED-BLOWFISH"], ["COMPRESS"]),
])
def test_feat_lines(csite, fields, want, unwanted):
    lines = feat(csite.control(**fields))
    for w in want:
        assert w in lines, lines
    for u in unwanted:
        assert not any(line.startswith(u) for line in lines if line not in want), lines
    # the extension lines come after the standard ones and before HASH
    assert lines[:3] == ["PASV", "EPSV", "RANG STREAM"] and lines[-1].startswith("HASH "), lines


def test_legacy_feat_is_unchanged(csite):
    lines = feat(csite.control(key=b64(40), algo="AES", compress="true"))
    assert lines == ["PASV", "EPSV", "RANG STREAM", "REST STREAM", "MFMT", "MLSD", "MLST",
                     "APPE", "MFF Modify;UNIX.mode;", "KEEP-ALIVE", "ARCHIVE", "UTF-8",
                     "CRYPTED-AES", "HASH MD5*;SHA-1;SHA-256;SHA-512"], lines


@pytest.mark.parametrize("keylen", [16, 31, 33, 40, 48, 56])
def test_wrong_key_length_refused_at_announce(csite, keylen):
    secret = csite.new_secret()
    reply = csite.announce(secret=secret, key=b64(keylen), algo=CHACHA)
    assert reply == (f"ERROR::{CHACHA}: invalid key length {keylen} bytes "
                     f"(expected 32 bytes)"), reply
    c = csite.connect()
    assert c.login(secret).code == 530, "the refused request must not be usable"


def test_unknown_compress_value_refused(csite):
    reply = csite.announce(compress="lz4")
    assert reply.startswith("ERROR::") and "compress" in reply, reply


def test_client_refuses_zstd_on_a_gzip_session(csite, uftpc):
    """A compress=true session offers no zstd: uftpc -Z stops at login
    instead of sending zstd frames that the server would store as they are
    (what an old server does with compress=zstd)."""
    csite.put("g.bin", b"x" * 1000)
    secret = csite.announce_ok(compress="true")
    p = run_uftpc(uftpc, csite, secret, 1, ["-Z"], "get", "g.bin", str(csite.work / "g"), ok=False)
    assert p.returncode != 0
    assert "COMPRESS zstd" in p.stderr.decode(), p.stderr.decode()


def test_announce_subcommand_compress_zstd(csite, uftpc):
    argv = [str(uftpd_bin()), "announce", "--cmd", f"{LOOPBACK}:{csite.daemon.cmd_port}",
            "--file", f"{csite.base}/", "--client-ip", LOOPBACK, "--user", csite.user.name,
            "--compress", "zstd", "--key", b64(32), "--algo", CHACHA]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    secret = re.search(r"^secret: (\S+)$", out, re.M).group(1)
    c = csite.control(secret=secret)
    lines = feat(c)
    assert "COMPRESS zstd" in lines and "CRYPTED-CHACHA20-POLY1305" in lines, lines
    # a bad key length is refused by the daemon, and announce says so
    argv[-3] = b64(16)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode != 0 and "invalid key length 16" in p.stdout.decode(), p.stdout.decode()


# ---------------------------------------------------------------- broken uploads
def raw_stor(csite, stack, wires, pre=(), path="x.bin", c=None):
    """STOR with the given bytes on each stream; returns (final reply, control)."""
    if c is None:
        c = csite.control(**stack.request_fields())
    for cmd in pre:
        r = c.cmd(cmd)
        assert r.code < 400, f"{cmd}: {r}"
    socks = dc.open_channel(c, len(wires))
    try:
        assert c.cmd(f"STOR {path}").code == 150
        dc.send_concurrently(socks, wires)
        final = c.read_reply()
    finally:
        dc.close_all(socks)
    return final, c


def assert_refused_and_usable(final, c, stack, n, what):
    assert final.code != 226 and 400 <= final.code < 600, f"{what}: expected an error, got {final}"
    assert "STOR" in final.last, f"{what}: the reply does not say which command failed: {final}"
    assert c.cmd("NOOP").lines == ["200 OK"]
    good = os.urandom(30_001)
    _, ok = dc.stor(c, "good.bin", good, n, stack)
    assert ok.code == 226, f"{what}: the next STOR failed: {ok}"
    _, got, _ = dc.retr(c, "good.bin", n, stack)
    assert got == good


DATA = os.urandom(200_000)
BIG = os.urandom(700_000)  # at least 3 records on each of 3 streams


def _chacha_cases():
    cases = []
    for n in (1, 3):
        stack = ExtStack(chacha=True)
        wires = stack.encode_channel(BIG, n)
        k = n - 1  # cut the last stream (stream 0 when n == 1)
        starts = record_starts(wires[k])
        assert starts[0] == HEADER_LEN and len(starts) >= 3
        for j, cut in enumerate(starts):
            w = list(wires)
            w[k] = w[k][:cut]
            cases.append(pytest.param(stack, w, id=f"n{n}-stream{k}-cut-at-boundary-{j}"))
        w = list(wires)
        w[k] = w[k][:-1]
        cases.append(pytest.param(stack, w, id=f"n{n}-stream{k}-last-byte-missing"))
        w = list(wires)
        w[0] = w[0] + b"\0"
        cases.append(pytest.param(stack, w, id=f"n{n}-trailing-garbage"))
        w = list(wires)
        mid = bytearray(w[k])
        mid[len(mid) // 2] ^= 0x40
        w[k] = bytes(mid)
        cases.append(pytest.param(stack, w, id=f"n{n}-flipped-bit"))
        if n > 1:
            w = list(wires)
            w[0], w[1] = w[1], w[0]
            cases.append(pytest.param(stack, w, id=f"n{n}-streams-swapped"))
        # records 0 and 1 of stream 0 exchanged
        s = record_starts(wires[0])
        w = list(wires)
        w[0] = wires[0][:s[0]] + wires[0][s[1]:s[2]] + wires[0][s[0]:s[1]] + wires[0][s[2]:]
        cases.append(pytest.param(stack, w, id=f"n{n}-records-reordered"))
        w = list(wires)
        w[0] = b""
        cases.append(pytest.param(stack, w, id=f"n{n}-empty-stream"))
    # the other key
    stack = ExtStack(chacha=True)
    cases.append(pytest.param(stack, [seal_stream(os.urandom(32), DATA, 0, 1)], id="wrong-key"))
    return cases


@pytest.mark.parametrize("stack,wires", _chacha_cases())
def test_broken_chacha_upload_is_an_error(csite, stack, wires):
    final, c = raw_stor(csite, stack, wires)
    assert_refused_and_usable(final, c, stack, len(wires), "broken upload")


def test_replayed_chacha_upload_is_an_error(csite):
    """The same (valid) streams sent twice in one session: the second time
    they are a replay and refused."""
    stack = ExtStack(chacha=True)
    wires = stack.encode_channel(DATA, 2)
    final, c = raw_stor(csite, stack, wires, path="once.bin")
    assert final.code == 226, final
    final, c = raw_stor(csite, stack, wires, path="twice.bin", c=c)
    assert_refused_and_usable(final, c, stack, 2, "replayed upload")
    # a download of the session reflected back as an upload: refused too
    csite.put("d.bin", DATA)
    socks = dc.open_channel(c, 1)
    try:
        assert c.cmd("RETR d.bin").code == 150
        sent = dc.read_all_concurrently(socks)
    finally:
        dc.close_all(socks)
    assert c.read_reply().code == 226
    final, c = raw_stor(csite, stack, sent, path="reflected.bin", c=c)
    assert_refused_and_usable(final, c, stack, 1, "reflected download")


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("where", ["missing-checksum", "half", "header-only", "empty"])
def test_truncated_zstd_upload_is_an_error(csite, n, where):
    stack = ExtStack(zstd=True)
    wires = stack.encode_channel(DATA, n)
    w = wires[-1]
    cut = {"missing-checksum": len(w) - 4, "half": len(w) // 2, "header-only": 6,
           "empty": 0}[where]
    wires[-1] = w[:cut]
    final, c = raw_stor(csite, stack, wires)
    assert_refused_and_usable(final, c, stack, n, f"zstd cut {where}")


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
def test_truncated_chacha_zstd_upload_inner_frame_cut(csite):
    """Intact records around a cut zstd frame: the inner layer notices."""
    stack = ExtStack(chacha=True, zstd=True)
    frame = zstd_cli(["-1"], DATA)
    wire = seal_stream(stack.key, frame[:-4], 0, 1)
    final, c = raw_stor(csite, stack, [wire])
    assert_refused_and_usable(final, c, stack, 1, "inner zstd frame cut")


# ---------------------------------------------------------------- server-to-server copy
@pytest.mark.parametrize("verb", ["SEND-FILE", "RECEIVE-FILE"])
def test_server_to_server_copy_carries_the_extensions(csite, daemon_factory, site_factory, verb):
    """SEND-FILE / RECEIVE-FILE from a ChaCha20-Poly1305 + zstd session use
    the same codecs towards the other server (PROTOCOL.md section 9)."""
    from test_rcp import start, wait_done
    remote = site_factory(daemon=daemon_factory(name="remote uftpd"))
    fields = ExtStack(chacha=True, zstd=True).request_fields()
    data = payload(1_500_000)
    (csite if verb == "SEND-FILE" else remote).put("a.bin", data=data)
    secret = remote.announce_ok(**fields)
    c = csite.control(**fields)
    assert c.cmd("NOOP 2").code == 222
    cid = start(c, verb, "a.bin", "a.bin", remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    assert (remote if verb == "SEND-FILE" else csite).path("a.bin").read_bytes() == data
    # the copy fails cleanly, not garbled, if the other session lacks zstd
    plain = remote.announce_ok(key=fields["key"], algo=CHACHA, compress="false")
    cid = start(c, verb, "a.bin", "b.bin", remote, plain)
    status = wait_done(c, cid)
    assert status.startswith("299 FAILED") and "COMPRESS zstd" in status, status


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
@pytest.mark.parametrize("threads", ["1", "3"])
def test_compress_threads_still_make_one_zstd_frame(daemon_factory, site_factory, threads):
    """COMPRESS_THREADS > 1 runs zstd's multi-threaded mode: several jobs of
    one stream compressed in parallel, still exactly one frame that the
    zstd tool reads (5 MB: more than one job at level 1)."""
    d = daemon_factory(name=f"uftpd COMPRESS_THREADS={threads}", COMPRESS_THREADS=threads,
                       **dc.CODEC_CONFIG)
    s = site_factory(daemon=d)
    data = s.put("big.bin", payload(5_000_000))
    for name in ("zstd", "chacha-zstd"):
        stack = ExtStack(**STACKS[name])
        c = s.control(**stack.request_fields())
        for n in (1, 2):
            _, got, r226 = dc.retr(c, "big.bin", n, stack)
            assert r226.code == 226
            assert got == data, f"{stack} over {n} streams with {threads} threads"


# ---------------------------------------------------------------- CHACHA20_ENGINE
@pytest.mark.parametrize("engine", ["ring", "libcrypto"])
def test_chacha_engine_setting_keeps_the_wire_format(daemon_factory, site_factory, uftpc,
                                                     tmp_path, engine):
    """CHACHA20_ENGINE chooses the server's implementation (ring, or the
    system's OpenSSL libcrypto, which the `openssl` package brings); the
    records are the same: the independent Python codec and uftpc (which uses
    libcrypto when it loads) read and write them, 1 and 2 streams, and
    check-config names the engine."""
    d = daemon_factory(name=f"uftpd CHACHA20_ENGINE={engine}", CHACHA20_ENGINE=engine,
                       **dc.CODEC_CONFIG)
    s = site_factory(daemon=d)
    stack = ExtStack(chacha=True)
    data = s.put("e.bin", payload())
    c = s.control(**stack.request_fields())
    for n in (1, 2):
        _, got, r226 = dc.retr(c, "e.bin", n, stack)
        assert r226.code == 226 and got == data, f"{engine}, {n} streams: download differs"
        up = payload(SIZE - 7 * n)
        _, final = dc.stor(c, f"p{n}.bin", up, n, stack)
        assert final.code == 226, final
        assert s.path(f"p{n}.bin").read_bytes() == up
    secret = s.announce_ok(persistent="true", **stack.request_fields())
    for n in (1, 2):
        out = tmp_path / f"u{n}.bin"
        run_uftpc(uftpc, s, secret, n, stack.uftpc_args(), "get", "e.bin", str(out))
        assert out.read_bytes() == data
        run_uftpc(uftpc, s, secret, n, stack.uftpc_args(), "put", str(out), f"c{n}.bin")
        assert s.path(f"c{n}.bin").read_bytes() == data
    conf = tmp_path / "check.conf"
    conf.write_text(f"export CHACHA20_ENGINE={engine}\nexport SERVER_PORT=1\n")
    r = run_check_config(conf)
    want = "runs on ring" if engine == "ring" else "runs on libcrypto (OpenSSL"
    assert want in r.stdout, r.stdout + r.stderr


def test_chacha_engine_unknown_value_stops_the_daemon(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("export CHACHA20_ENGINE=fastest\n")
    r = subprocess.run([str(uftpd_bin()), "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "CHACHA20_ENGINE" in r.stderr + r.stdout and "auto, ring or libcrypto" in r.stderr + r.stdout


# ---------------------------------------------------------------- ZSTD_LEVEL
def zstd_wire(site, data_name, streams):
    """RETR with compress=zstd: the raw wires (decoded by the zstd tool
    through the stack) and the decoded data."""
    stack = ExtStack(zstd=True)
    c = site.control(**stack.request_fields())
    _, wires = dc.retr_wires(c, data_name, streams)
    assert c.read_reply().code == 226
    return wires, stack.decode_channel(wires)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
def test_zstd_level_setting_reaches_the_wire(daemon_factory, site_factory):
    """ZSTD_LEVEL sets the level of what the daemon compresses (negative:
    zstd's fast modes): the same file makes more bytes at -7 than at the
    default 1 and fewer at 19, every one a standard frame the zstd tool
    reads, over one and two streams (COMPRESS_THREADS 1 and 2); check-config
    says the level."""
    text = b"".join(b"%06d the quick brown fox, %d lazy dogs\n" % (i, i % 89)
                    for i in range(40_000))
    sizes = {}
    for level, threads in (("-7", "2"), (None, "1"), ("19", "1")):
        extra = {"ZSTD_LEVEL": level} if level else {}
        d = daemon_factory(name=f"uftpd ZSTD_LEVEL={level}", COMPRESS_THREADS=threads,
                           **extra, **dc.CODEC_CONFIG)
        s = site_factory(daemon=d)
        data = s.put("t.txt", text)
        for n in (1, 2):
            wires, got = zstd_wire(s, "t.txt", n)
            assert got == data, f"ZSTD_LEVEL={level}, {n} streams"
            sizes[(level, n)] = sum(len(w) for w in wires)
        r = run_check_config(d.config_file)
        want = {"-7": "at level -7 (ZSTD_LEVEL, a fast mode)", None: "at level 1 (ZSTD_LEVEL)",
                "19": "at level 19 (ZSTD_LEVEL)"}[level]
        assert "zstd (extension codec) downloads are compressed " + want in r.stdout, r.stdout
    assert sizes[("-7", 1)] > sizes[(None, 1)] > sizes[("19", 1)], sizes
    assert sizes[("-7", 2)] > sizes[(None, 2)] > sizes[("19", 2)], sizes


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
@pytest.mark.parametrize("level", ["-7", "19"])
def test_uftpc_upload_at_a_zstd_level(csite, uftpc, tmp_path, level):
    """`uftpc --zstd-level N` compresses uploads at that level; the daemon
    reads every level (and plain and ChaCha20-Poly1305 alike)."""
    data = payload()
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    for name in ("zstd", "chacha-zstd"):
        stack = ExtStack(**STACKS[name])
        secret = csite.announce_ok(**stack.request_fields())
        run_uftpc(uftpc, csite, secret, 2, [*stack.uftpc_args(), "--zstd-level", level],
                  "put", str(src), f"up-{name}.bin")
        assert csite.path(f"up-{name}.bin").read_bytes() == data, f"{name} at level {level}"


@pytest.mark.parametrize("level", ["20", "-8", "fast"])
def test_uftpc_refuses_a_zstd_level_out_of_range(uftpc, level):
    p = subprocess.run([str(uftpc), "-Z", "--zstd-level", level, f"{LOOPBACK}:1", "s", "ls"],
                       capture_output=True, timeout=30)
    assert p.returncode == 2
    assert b"--zstd-level wants a zstd level -7 to 19" in p.stderr


@pytest.mark.parametrize("value", ["20", "-8", "fast"])
def test_zstd_level_out_of_range_stops_the_daemon(tmp_path, value):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"export ZSTD_LEVEL={value}\n")
    r = subprocess.run([str(uftpd_bin()), "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ZSTD_LEVEL" in r.stderr + r.stdout and "-7 to 19" in r.stderr + r.stdout
