"""Errors a user can act on (issue 5 item 7, PROTOCOL.md sections 3, 5, 6).

- A key of the wrong length for its algorithm (or not base64, or an unknown
  algorithm) is refused when the transfer request arrives: `ERROR::...` at
  once, and the secret is not usable.
- A STOR whose encrypted or compressed stream ends early, whose framing is
  cut, or that delivers fewer bytes than ALLO/RANG announced gets an error
  reply on the control channel, not 226, and the session stays usable.
  (Without integrity protection, a ciphertext cut at a block boundary whose
  last block happens to look like padding cannot be detected without a
  length; with ALLO or RANG it must be.)

The broken streams are made with the independent Python codec of
helpers/datacodec.py and sent with raw sockets.
"""

import base64
import os
import socket
import time
import zlib

import pytest

from conftest import use_daemon
from helpers import datacodec as dc
from helpers.ftp import recv_all

MAX_STREAMS = dc.CODEC_CONFIG["MAX_STREAMS"]
# the reference UFTPD checks keys only at transfer time and takes most truncated
# uploads for complete ones
beyond = pytest.mark.beyond_reference


@pytest.fixture(scope="module")
def _daemons(tmp_root):
    holder = dc.DaemonHolder(tmp_root, "codec-errors-uftpd")
    yield holder
    holder.stop()


@pytest.fixture
def csite(_daemons, site_factory):
    d = _daemons.get()
    use_daemon(d)
    yield site_factory(daemon=d)
    d.assert_alive(" during this test")


def b64(n):
    return base64.b64encode(os.urandom(n)).decode("ascii")


# ---------------------------------------------------------------- keys
@beyond
@pytest.mark.parametrize("algo,keylen", [
    ("BLOWFISH", 57), ("BLOWFISH", 64), ("BLOWFISH", 3), ("BLOWFISH", 1),
    ("AES", 16),   # an IV without a key
    ("AES", 24), ("AES", 31), ("AES", 33), ("AES", 41), ("AES", 49), ("AES", 56), ("AES", 64),
    ("aes", 20),   # any case
    (None, 60),    # no algo and not 32/40/48 bytes: BLOWFISH, too long
    (None, 2),
])
def test_wrong_key_length_refused_at_once(csite, algo, keylen):
    secret = csite.new_secret()
    start = time.monotonic()
    reply = csite.announce(secret=secret, key=b64(keylen), algo=algo)
    elapsed = time.monotonic() - start
    assert reply.startswith("ERROR::"), f"{algo} key of {keylen} bytes: {reply!r}"
    assert "key" in reply.lower(), f"not a clear reason: {reply!r}"
    assert elapsed < 5, f"ERROR:: took {elapsed:.1f}s"
    # nothing was stored: the secret does not log in
    c = csite.connect()
    r = c.login(secret)
    assert r.code == 530, f"login with the secret of a refused request: {r}"


@beyond
@pytest.mark.parametrize("fields,what", [
    ({"key": "!!!not base64!!!", "algo": "AES"}, "base64"),
    ({"key": b64(16), "algo": "DES"}, "DES"),
    ({"key": b64(32), "algo": "AES-GCM"}, "AES-GCM"),
])
def test_unusable_key_or_algorithm_refused(csite, fields, what):
    reply = csite.announce(**fields)
    assert reply.startswith("ERROR::") and what.lower() in reply.lower(), reply


@pytest.mark.parametrize("algo,keylen,feature", [
    ("BLOWFISH", 4, "CRYPTED-BLOWFISH"), ("BLOWFISH", 56, "CRYPTED-BLOWFISH"),
    ("AES", 32, "CRYPTED-AES"), ("AES", 40, "CRYPTED-AES"), ("AES", 48, "CRYPTED-AES"),
    (None, 48, "CRYPTED-AES"), (None, 16, "CRYPTED-BLOWFISH"),
])
def test_valid_key_lengths_accepted(csite, algo, keylen, feature):
    c = csite.control(key=b64(keylen), algo=algo)
    feats = [l.strip() for l in c.cmd("FEAT").lines]
    assert feature in feats, feats


# ---------------------------------------------------------------- truncated uploads
def raw_stor(csite, stack, wires, pre=(), path="x.bin"):
    """STOR with the given bytes on each stream (as they are, already encoded);
    returns (final reply, control) after half-closing every stream."""
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
    # the session goes on: a good upload and download work afterwards
    assert c.cmd("NOOP").lines == ["200 OK"]
    good = os.urandom(30_001)
    _, ok = dc.stor(c, "good.bin", good, n, stack)
    assert ok.code == 226, f"{what}: the next STOR failed: {ok}"
    _, got, _ = dc.retr(c, "good.bin", n, stack)
    assert got == good


# No byte below 0x20: a cipher stream cut at a block boundary then never
# ends in what looks like valid PKCS#5 padding (01, 02 02, ...), which would
# make a truncation undetectable without ALLO/RANG (1 time in 256 with
# random data; test_encrypted_cut_that_looks_padded_is_caught_by_the_length
# covers that case on purpose).
DATA = bytes(b | 0x20 for b in os.urandom(50_000))


def _cipher_cases():
    cases = []
    for algo, keylen in (("BLOWFISH", 56), ("AES", 32), ("AES", 48)):
        stack = dc.Stack(os.urandom(keylen), algo)
        bs = 8 if algo == "BLOWFISH" else 16
        w = stack.encode_stream(DATA)
        name = f"{algo}{keylen}"
        cases += [
            pytest.param(stack, [w[:-3]], (), id=f"{name}-cut-mid-block"),
            pytest.param(stack, [w[:-bs]], (), id=f"{name}-missing-final-block"),
            pytest.param(stack, [w[:len(w) // 2 - len(w) // 2 % bs]], (), id=f"{name}-half"),
            pytest.param(stack, [b""], (), id=f"{name}-empty-stream"),
            pytest.param(stack, [w[:-bs]], (f"ALLO {len(DATA)}",), id=f"{name}-missing-block-ALLO"),
        ]
    return cases


def _gzip_cases():
    stack = dc.Stack(None, None, True)
    w = stack.encode_stream(DATA)
    cases = [pytest.param(stack, [w[:cut]], (), id=f"gzip-cut-{label}")
             for label, cut in (("in-header", 5), ("middle", len(w) // 2),
                                ("missing-trailer", len(w) - 8), ("last-byte", len(w) - 1))]
    cases.append(pytest.param(stack, [b""], (), id="gzip-empty-stream"))
    # a properly encrypted stream around a truncated gzip member
    for algo, keylen in (("BLOWFISH", 56), ("AES", 40)):
        st = dc.Stack(os.urandom(keylen), algo, True)
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        member = z.compress(DATA) + z.flush()
        cases.append(pytest.param(st, [st.encrypt(member[:-8])], (),
                                  id=f"{algo}-gzip-inner-gzip-cut"))
        cases.append(pytest.param(st, [st.encrypt(member[:len(member) // 3])], (),
                                  id=f"{algo}-gzip-inner-gzip-cut-early"))
    return cases


def _multistream_cases():
    cases = []
    plain = dc.Stack()
    fr = dc.frame(DATA, 3)
    cases += [
        pytest.param(plain, [fr[0], fr[1][:-100], fr[2]], (), id="framed-stream1-cut-mid-frame"),
        pytest.param(plain, [fr[0], fr[1], fr[2][:10]], (), id="framed-stream2-cut-in-header"),
        pytest.param(plain, [fr[0][:16 + 16384 // 3 + 100], fr[1], fr[2]], (),
                     id="framed-stream0-cut-mid-frame"),
        pytest.param(plain, [fr[0][:16 + 16384 // 3], fr[1], fr[2]], (),
                     id="framed-stream0-ends-early-at-header-boundary"),
    ]
    gz = dc.Stack(None, None, True)
    w = gz.encode_channel(DATA, 2)
    cases.append(pytest.param(gz, [w[0], w[1][:-8]], (), id="framed-gzip-stream1-no-trailer"))
    cases.append(pytest.param(gz, [w[0][:-8], w[1]], (), id="framed-gzip-stream0-no-trailer"))
    aes = dc.Stack(os.urandom(48), "AES", True)
    w = aes.encode_channel(DATA, MAX_STREAMS)
    cases.append(pytest.param(aes, w[:-1] + [w[-1][:-16]], (),
                              id="framed-aes-gzip-last-stream-missing-final-block"))
    return cases


@beyond
@pytest.mark.parametrize("stack,wires,pre", _cipher_cases() + _gzip_cases() + _multistream_cases())
def test_stor_cut_short_is_an_error(csite, stack, wires, pre):
    final, c = raw_stor(csite, stack, wires, pre)
    assert_refused_and_usable(final, c, stack, len(wires), "truncated upload")


@beyond
@pytest.mark.parametrize("algo,keylen", [("BLOWFISH", 56), ("AES", 32)])
@pytest.mark.parametrize("announce", ["ALLO", "RANG"])
def test_encrypted_cut_that_looks_padded_is_caught_by_the_length(csite, algo, keylen, announce):
    """Cut at a block boundary whose last byte is 0x01 (valid padding): only the
    length announced by ALLO/RANG can tell, and it must."""
    stack = dc.Stack(os.urandom(keylen), algo)
    bs = 8 if algo == "BLOWFISH" else 16
    data = bytearray(os.urandom(40_000))
    cut = (len(data) // bs - 3) * bs
    data[cut - 1] = 1
    data = bytes(data)
    wire = stack.encode_stream(data)[:cut]
    assert stack.decrypt(wire) == data[:cut - 1], "test set-up: the cut must look padded"
    pre = [f"ALLO {len(data)}"] if announce == "ALLO" else [f"RANG 0 {len(data)}"]
    final, c = raw_stor(csite, stack, [wire], pre)
    assert_refused_and_usable(final, c, stack, 1, f"{algo} cut with {announce}")


@beyond
@pytest.mark.parametrize("n", [1, 2, MAX_STREAMS])
@pytest.mark.parametrize("codec", ["plain", "gzip", "AES-gzip", "BLOWFISH"])
def test_complete_stream_shorter_than_allo_is_an_error(csite, n, codec):
    """A well-formed stream (valid trailer/padding/framing) carrying fewer bytes than ALLO."""
    key = {"plain": None, "gzip": None, "AES-gzip": os.urandom(40),
           "BLOWFISH": os.urandom(56)}[codec]
    stack = dc.Stack(key, None, "gzip" in codec)
    short = DATA[:-1000]
    final, c = raw_stor(csite, stack, stack.encode_channel(short, n), [f"ALLO {len(DATA)}"])
    assert_refused_and_usable(final, c, stack, n, f"{codec} over {n} streams, ALLO too big")


@beyond
def test_plain_stor_with_allo_and_fewer_bytes(csite):
    """The plain single-stream case, as an ordinary FTP client would cause it."""
    c = csite.control()
    assert c.cmd(f"ALLO {len(DATA)}").code == 200
    _, s = c.pasv()
    with s:
        assert c.cmd("STOR short.bin").lines == ["150 OK"]
        s.sendall(DATA[:12_345])
        s.shutdown(socket.SHUT_WR)
        final = c.read_reply()
    assert final.code != 226 and 400 <= final.code < 600, final
    assert c.cmd("NOOP").lines == ["200 OK"]
    # and a plain STOR of exactly ALLO bytes is fine
    assert c.cmd("ALLO 1000").code == 200
    r150, r226 = c.stor("ok.bin", DATA[:1000])
    assert r226.code == 226 and csite.path("ok.bin").read_bytes() == DATA[:1000]


@beyond
def test_ranged_stor_with_fewer_bytes(csite):
    csite.put("r.bin", os.urandom(10_000))
    c = csite.control()
    assert c.cmd("RANG 1000 9000").code == 350
    _, s = c.pasv()
    with s:
        assert c.cmd("STOR r.bin").code == 150
        s.sendall(os.urandom(5000))
        s.shutdown(socket.SHUT_WR)
        final = c.read_reply()
    assert final.code != 226 and 400 <= final.code < 600, final


# ---------------------------------------------------------------- downloads
def test_reader_closing_after_stream0_eof_is_not_an_error(csite):
    # An empty file: no frames at all, so stream 0 ends at once and a
    # JPARSS reader (pyuftp, Java) closes the other streams while their codec
    # trailers may still be on the way. (With data, a faithful reader reads
    # one frame of every stream before it can see stream 0 end, so only the
    # trailer-only case exercises this race.)
    csite.put("empty.bin", b"")
    cases = [("empty.bin", dc.Stack(None, None, True)),
             ("empty.bin", dc.Stack(os.urandom(32), "AES")),
             ("empty.bin", dc.Stack(os.urandom(48), "AES", True)),
             ("empty.bin", dc.Stack(os.urandom(56), "BLOWFISH", True))]
    for name, stack in cases:
        c = csite.control(**stack.request_fields())
        for i in range(60):
            socks = dc.open_channel(c, MAX_STREAMS)
            try:
                assert c.cmd(f"RETR {name}").code == 150
                recv_all(socks[0])  # end of data: stream 0 ends at a header boundary
            finally:
                dc.close_all(socks)  # a plain close, with the trailers maybe unread
            r = c.read_reply()
            assert r.code == 226, f"{name} with {stack}, attempt {i + 1}: {r}"
