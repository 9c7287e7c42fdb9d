"""Moving file data (PROTOCOL.md sections 5 and 6): RETR/STOR/APPE with REST,
RANG and ALLO, KEEP-ALIVE, multi-stream framing, rate limit. Every transfer
is checked byte for byte against files with random content."""

import io
import os
import socket
import time

import pytest

from helpers.ftp import read_frames, recv_all, recv_exact, write_frames

MB = 1 << 20


def bytes_available(reply):
    """n from `150 OK <n> bytes available for reading.` (the third token, as clients read it)."""
    assert reply.code == 150, reply
    return int(reply.last.split(" ")[2])


# ---------------------------------------------------------------- RETR
def test_retr_full(site):
    data = site.put("f.bin", size=MB + 17)
    c = site.control()
    r150, got, r226 = c.retr("f.bin")
    assert r150.lines == [f"150 OK {len(data)} bytes available for reading."]
    assert got == data
    assert r226.lines == ["226 File transfer successful"]


def test_retr_empty_file(site):
    site.put("empty", data=b"")
    r150, got, r226 = site.control().retr("empty")
    assert r150.lines == ["150 OK 0 bytes available for reading."]
    assert got == b"" and r226.code == 226


def test_retr_large_file(site):
    data = site.put("big.bin", size=24 * MB + 3)
    r150, got, r226 = site.control().retr("big.bin")
    assert bytes_available(r150) == len(data)
    assert len(got) == len(data) and got == data
    assert r226.code == 226


def test_retr_absolute_path_and_subdir(site):
    data = site.put("a/b/c.bin", size=4096)
    c = site.control()
    assert c.retr(f"{site.base}/a/b/c.bin")[1] == data
    assert c.cmd("CWD a").code == 200
    assert c.retr("b/c.bin")[1] == data


def test_retr_with_rest_sends_the_rest(site):
    data = site.put("f.bin", size=100_000)
    _, got, r226 = site.control().retr("f.bin", pre=["REST 1000"])
    assert got == data[1000:]
    assert r226.code == 226


@pytest.mark.beyond_reference  # the reference announces the whole file size
def test_retr_with_rest_announces_remaining_bytes(site):
    site.put("f.bin", size=100_000)
    r150, got, _ = site.control().retr("f.bin", pre=["REST 1000"])
    assert r150.lines == ["150 OK 99000 bytes available for reading."]
    assert len(got) == 99000


def test_retr_with_rang(site):
    data = site.put("f.bin", size=100_000)
    c = site.control()
    r150, got, r226 = c.retr("f.bin", pre=["RANG 100 1100"])
    assert r150.lines == ["150 OK 1000 bytes available for reading."]
    assert got == data[100:1100]  # exclusive end
    assert r226.code == 226
    # the range applied to that transfer only
    r150, got, _ = c.retr("f.bin")
    assert bytes_available(r150) == len(data) and got == data


def test_rang_reset(site):
    data = site.put("f.bin", size=5000)
    c = site.control()
    assert c.cmd("RANG 5 10").code == 350
    assert c.cmd("RANG 1 0").lines == ["350 Resetting range"]
    r150, got, _ = c.retr("f.bin")
    assert bytes_available(r150) == 5000 and got == data


def test_rest_clears_rang(site):
    data = site.put("f.bin", size=5000)
    _, got, _ = site.control().retr("f.bin", pre=["RANG 10 20", "REST 5"])
    assert got == data[5:]


def test_ftplib_retrbinary(site):
    data = site.put("f.bin", size=300_000)
    ftp = site.login()
    chunks = []
    ftp.retrbinary("RETR f.bin", chunks.append)
    assert b"".join(chunks) == data
    chunks = []
    ftp.retrbinary("RETR f.bin", chunks.append, rest=12345)
    assert b"".join(chunks) == data[12345:]


def test_retr_without_data_connection_is_an_error(site):
    """PROTOCOL.md is silent on the code; the reference sends 150, then a 500."""
    site.put("f.bin", size=10)
    c = site.control()
    r = c.cmd("RETR f.bin")
    if r.code == 150:
        r = c.read_reply()
    assert 400 <= r.code < 600, f"RETR without a data connection: {r}"
    assert c.cmd("NOOP").lines == ["200 OK"], "session unusable after RETR without data connection"


def test_new_data_connection_after_failed_retr(site):
    data = site.put("f.bin", size=1000)
    c = site.control()
    _, s = c.pasv()
    with s:
        assert c.cmd("RETR missing.bin").code == 550
    # a fresh PASV replaces whatever is left
    _, got, _ = c.retr("f.bin")
    assert got == data


def test_data_connection_closed_after_transfer(site):
    data = site.put("f.bin", size=2000)
    c = site.control()
    _, s = c.pasv()
    with s:
        r150 = c.cmd("RETR f.bin")
        assert recv_exact(s, bytes_available(r150)) == data
        assert recv_all(s, 10) == b"", "data connection not closed after the transfer"
    assert c.read_reply().code == 226


# ---------------------------------------------------------------- STOR, APPE
def test_stor_creates_file(site):
    data = os.urandom(MB + 5)
    c = site.control()
    r150, r226 = c.stor("new.bin", data)
    assert r150.lines == ["150 OK"]
    assert r226.lines == ["226 File transfer successful"]
    assert site.path("new.bin").read_bytes() == data
    st = os.stat(site.path("new.bin"))
    assert (st.st_uid, st.st_gid) == (site.user.uid, site.user.gid)


def test_stor_truncates_existing(site):
    site.put("f.bin", size=10_000)
    new = os.urandom(10)
    site.control().stor("f.bin", new)
    assert site.path("f.bin").read_bytes() == new


def test_stor_empty(site):
    site.put("f.bin", size=100)
    site.control().stor("f.bin", b"")
    assert site.path("f.bin").read_bytes() == b""


def test_stor_large(site):
    data = os.urandom(24 * MB + 1)
    site.control().stor("big.bin", data)
    assert site.path("big.bin").read_bytes() == data


def test_stor_with_rang_writes_in_place(site):
    old = site.put("f.bin", size=1000)
    new = os.urandom(100)
    c = site.control()
    r150, r226 = c.stor("f.bin", new, pre=["RANG 100 200"])
    assert r226.code == 226
    assert site.path("f.bin").read_bytes() == old[:100] + new + old[200:]


def test_stor_with_rang_beyond_end(site):
    old = site.put("f.bin", size=100)
    new = os.urandom(50)
    site.control().stor("f.bin", new, pre=["RANG 100 150"])
    assert site.path("f.bin").read_bytes() == old + new


@pytest.mark.beyond_reference  # the reference truncates the file before a REST write
def test_stor_with_rest_does_not_truncate(site):
    old = site.put("f.bin", size=1000)
    new = os.urandom(200)
    site.control().stor("f.bin", new, pre=["REST 500"])
    assert site.path("f.bin").read_bytes() == old[:500] + new + old[700:]


# the larger size crosses the server's 256 KiB receive low-water mark,
# which it must lower for the last bytes of a connection we keep open
@pytest.mark.parametrize("size", [50_000, 1_000_003])
def test_stor_with_allo_reads_exactly_n(site, size):
    data = os.urandom(size)
    c = site.control()
    _, s = c.pasv()
    with s:
        assert c.cmd(f"ALLO {len(data)}").lines == [
            f"200 OK Will read up to {len(data)} bytes from data connection."]
        assert c.cmd("STOR allo.bin").lines == ["150 OK"]
        s.sendall(data)
        # no EOF from us: the server knows the length
        assert c.read_reply().lines == ["226 File transfer successful"]
    assert site.path("allo.bin").read_bytes() == data


@pytest.mark.beyond_reference  # the reference's APPE fails (and would truncate)
def test_appe_appends(site):
    old = site.put("log.txt", size=1000)
    new = os.urandom(500)
    r150, r226 = site.control().stor("log.txt", new, verb="APPE")
    assert r150.code == 150 and r226.code == 226
    assert site.path("log.txt").read_bytes() == old + new


def test_ftplib_storbinary(site):
    data = os.urandom(700_001)
    ftp = site.login()
    ftp.storbinary("STOR up.bin", io.BytesIO(data))
    assert site.path("up.bin").read_bytes() == data
    chunks = []
    ftp.retrbinary("RETR up.bin", chunks.append)
    assert b"".join(chunks) == data


# ---------------------------------------------------------------- KEEP-ALIVE
def test_keep_alive_several_transfers_on_one_connection(site):
    a = site.put("a.bin", size=300_000)
    b = site.put("b.bin", size=1)
    e = site.put("e.bin", data=b"")
    up = os.urandom(123_457)
    c = site.control()
    assert c.cmd("KEEP-ALIVE true").lines == ["200 OK"]
    _, s = c.pasv()
    with s:
        for name, content in (("a.bin", a), ("b.bin", b), ("e.bin", e), ("a.bin", a)):
            r150 = c.cmd(f"RETR {name}")
            n = bytes_available(r150)
            assert n == len(content), r150
            assert recv_exact(s, n) == content
            assert c.read_reply().lines == ["226 File transfer successful"]
        # a ranged read on the same connection
        assert c.cmd("RANG 10 20").code == 350
        r150 = c.cmd("RETR a.bin")
        assert bytes_available(r150) == 10
        assert recv_exact(s, 10) == a[10:20]
        assert c.read_reply().code == 226
        # an upload of known length
        assert c.cmd(f"ALLO {len(up)}").code == 200
        assert c.cmd("STOR up.bin").lines == ["150 OK"]
        s.sendall(up)
        assert c.read_reply().lines == ["226 File transfer successful"]
        # and read it back on the same connection
        r150 = c.cmd("RETR up.bin")
        assert recv_exact(s, bytes_available(r150)) == up
        assert c.read_reply().code == 226
    assert site.path("up.bin").read_bytes() == up


# a rate-limited upload reads without a receive low-water mark; the mark of
# an earlier upload on the same kept connection must not hold it back
@pytest.mark.beyond_reference  # the reference has no KEEP-ALIVE uploads of known length
def test_keep_alive_rate_limited_upload_after_a_bulk_one(site):
    c = site.control()
    assert c.cmd("KEEP-ALIVE true").lines == ["200 OK"]
    _, s = c.pasv()
    with s:
        # sent with the STOR: all queued when the server reads, so one read
        # can take the whole 256 KiB with the mark at 256 KiB
        big = os.urandom(262_144)
        assert c.cmd(f"ALLO {len(big)}").code == 200
        c.send("STOR big.bin")
        s.sendall(big)
        assert c.read_reply().lines == ["150 OK"]
        assert c.read_reply().lines == ["226 File transfer successful"]
        assert c.cmd("OPTS RATE_LIMIT 50000000").lines == ["200 RATE_LIMIT=50000000"]
        small = os.urandom(100)
        assert c.cmd("ALLO 100").code == 200
        assert c.cmd("STOR small.bin").lines == ["150 OK"]
        time.sleep(0.5)  # the server waits in its read before the bytes come
        s.sendall(small)
        assert c.read_reply().lines == ["226 File transfer successful"]
    assert site.path("big.bin").read_bytes() == big
    assert site.path("small.bin").read_bytes() == small


# ---------------------------------------------------------------- multi-stream
def open_streams(c, n):
    r = c.cmd(f"NOOP {n}")
    assert r.lines == [f"222 Opening {n} data connections"], r
    socks = []
    for i in range(n):
        _, s = c.pasv() if i % 2 == 0 else c.epsv()
        socks.append(s)
    return socks


@pytest.mark.parametrize("streams,size", [(2, 1_000_003), (3, 16384 * 5), (4, 7)])
def test_multistream_retr(site, streams, size):
    data = site.put("m.bin", size=size)
    c = site.control()
    socks = open_streams(c, streams)
    try:
        r150 = c.cmd("RETR m.bin")
        assert bytes_available(r150) == size
        got = read_frames(socks)
    finally:
        for s in socks:
            s.close()
    assert got == data
    assert c.read_reply().lines == ["226 File transfer successful"]
    # back to one stream afterwards
    _, got, _ = c.retr("m.bin")
    assert got == data


@pytest.mark.parametrize("streams", [2, 4])
def test_multistream_stor(site, streams):
    data = os.urandom(500_001)
    c = site.control()
    socks = open_streams(c, streams)
    try:
        assert c.cmd("STOR ms.bin").lines == ["150 OK"]
        write_frames(socks, data)
    finally:
        for s in socks:
            s.shutdown(socket.SHUT_WR)
    assert c.read_reply().lines == ["226 File transfer successful"]
    for s in socks:
        s.close()
    assert site.path("ms.bin").read_bytes() == data


def read_frames_exact(socks, n_bytes, timeout=30):
    """Exactly n_bytes of frames (KEEP-ALIVE: the streams stay open)."""
    from helpers.ftp import _read_n
    import struct
    for s in socks:
        s.settimeout(timeout)
    n, out, seq = len(socks), bytearray(), 0
    while len(out) < n_bytes:
        block = None
        for i, s in enumerate(socks):
            magic, idx, hseq, size, ln = struct.unpack(">HHIII", _read_n(s, 16))
            assert (magic, idx, hseq) == (0xCEBF, i, seq)
            if block is None:
                block = bytearray(size)
            block[i * (size // n):i * (size // n) + ln] = _read_n(s, ln)
        out += block
        seq += 1
    assert len(out) == n_bytes
    return bytes(out)


@pytest.mark.parametrize("streams", [2, 3])
def test_keep_alive_multistream_reuses_the_streams(site, streams):
    """PROTOCOL section 6: with KEEP-ALIVE, transfers of known length follow
    each other on the same connections, also with several plain streams."""
    a = site.put("a.bin", size=200_003)
    b = site.put("b.bin", size=5)
    up = os.urandom(70_001)
    c = site.control()
    assert c.cmd("KEEP-ALIVE true").code == 200
    socks = open_streams(c, streams)
    try:
        for name, content in (("a.bin", a), ("b.bin", b), ("a.bin", a)):
            n = bytes_available(c.cmd(f"RETR {name}"))
            assert read_frames_exact(socks, n) == content
            assert c.read_reply().lines == ["226 File transfer successful"]
        assert c.cmd("RANG 100 40100").code == 350
        n = bytes_available(c.cmd("RETR a.bin"))
        assert read_frames_exact(socks, n) == a[100:40100]
        assert c.read_reply().code == 226
        for _ in range(2):
            assert c.cmd(f"ALLO {len(up)}").code == 200
            assert c.cmd("STOR up.bin").lines == ["150 OK"]
            write_frames(socks, up)
            assert c.read_reply().lines == ["226 File transfer successful"]
            assert site.path("up.bin").read_bytes() == up
        n = bytes_available(c.cmd("RETR up.bin"))
        assert read_frames_exact(socks, n) == up
        assert c.read_reply().code == 226
    finally:
        for s in socks:
            s.close()


def test_noop_n_starts_a_new_channel_over_a_kept_one(site):
    """A 1-stream KEEP-ALIVE channel is open; NOOP 2 + 2 PASV set up a new
    2-stream channel instead of counting the old connection."""
    data = site.put("m.bin", size=100_000)
    c = site.control()
    assert c.cmd("KEEP-ALIVE true").code == 200
    _, one = c.pasv()
    with one:
        n = bytes_available(c.cmd("RETR m.bin"))
        assert recv_exact(one, n) == data
        assert c.read_reply().code == 226
        socks = open_streams(c, 2)
        try:
            n = bytes_available(c.cmd("RETR m.bin"))
            assert read_frames_exact(socks, n) == data
            assert c.read_reply().code == 226
        finally:
            for s in socks:
                s.close()


def test_data_connection_must_come_within_30_seconds(site):
    """PROTOCOL section 6: uftpd accepts the connection within 30 s of the
    PASV reply. One that comes later is refused, even when no command was
    sent meanwhile; one that came in time may wait for its transfer."""
    data = site.put("f.bin", size=1000)
    early, late = site.control(), site.control()
    _, s_early = early.pasv()
    r = late.cmd("PASV")
    assert r.code == 227
    nums = [int(x) for x in r.last.split("(")[1].rstrip(")").split(",")]
    time.sleep(31.5)
    try:
        s_late = socket.create_connection(("127.0.0.1", nums[4] * 256 + nums[5]), timeout=5)
    except OSError:
        s_late = None  # refused: the listener is gone
    if s_late is not None:  # accepted by nobody: reset or closed without data
        s_late.settimeout(5)
        try:
            assert s_late.recv(1) == b""
        except OSError:
            pass
        s_late.close()
    r = late.cmd("RETR f.bin")
    assert r.code == 500 and "30 seconds" in r.last, r
    with s_early:
        n = bytes_available(early.cmd("RETR f.bin"))
        assert recv_exact(s_early, n) == data
    assert early.read_reply().code == 226


# ---------------------------------------------------------------- rate limit
@pytest.mark.beyond_reference  # the reference's limiter barely slows a 1 MB-buffered copy
def test_rate_limit_is_honoured(site):
    rate = 512 * 1024
    data = site.put("slow.bin", size=3 * rate)
    c = site.control(rateLimit=str(rate))
    start = time.monotonic()
    _, got, r226 = c.retr("slow.bin")
    elapsed = time.monotonic() - start
    assert got == data and r226.code == 226
    # 3 s at the limit; a burst allowance may shorten that, but never to under 1 s
    assert elapsed >= 1.0, f"3 x rateLimit bytes arrived in {elapsed:.2f}s"


# the rate-limited paths read and write in pieces of their own: same bytes
@pytest.mark.parametrize("size", [4097, 1_000_003])
def test_rate_limited_transfers_are_byte_exact(site, size):
    data = site.put("r.bin", size=size)
    c = site.control(rateLimit=str(50 * 1024 * 1024))
    _, got, r226 = c.retr("r.bin")
    assert got == data and r226.code == 226
    assert c.cmd(f"RANG 3 {size - 5}").code == 350
    _, got, r226 = c.retr("r.bin")
    assert got == data[3:size - 5] and r226.code == 226
    up = os.urandom(size)
    r150, r226 = c.stor("up.bin", up)
    assert r150.code == 150 and r226.code == 226
    assert site.path("up.bin").read_bytes() == up


def test_streams_from_request_until_first_noop(site):
    """`streams` in the request is the initial stream count (pyuftp sends no NOOP then)."""
    data = site.put("m.bin", size=300_000)
    c = site.control(streams="2")
    socks = [c.pasv()[1], c.epsv()[1]]
    try:
        r150 = c.cmd("RETR m.bin")
        assert bytes_available(r150) == len(data)
        got = read_frames(socks)
    finally:
        for s in socks:
            s.close()
    assert got == data
    assert c.read_reply().code == 226


@pytest.mark.beyond_reference  # the reference answers 501 to a one-argument RANG
def test_rang_with_one_argument_means_to_end(site):
    """The Python server's copy client sends `RANG <a>` (PROTOCOL.md section 9)."""
    data = site.put("f.bin", size=5000)
    c = site.control()
    r = c.cmd("RANG 1000")
    assert r.code == 350, r
    _, got, _ = c.retr("f.bin")
    assert got == data[1000:]


def test_keep_alive_listing_and_unknown_length_stor_close_the_channel(site):
    """With KEEP-ALIVE, LIST/MLSD and STOR without a length still end with a close."""
    site.put("a.bin", size=10)
    up = os.urandom(10_000)
    c = site.control()
    assert c.cmd("OPTS KEEP_ALIVE true").lines == ["200 KEEP_ALIVE=true"]
    _, s = c.pasv()
    with s:
        assert c.cmd("MLSD").lines == ["150 OK"]
        listing = recv_all(s, 10)  # the server ends the listing by closing
        assert b" a.bin" in listing
    assert c.read_reply().lines == ["226 File transfer successful"]
    _, s = c.pasv()
    with s:
        assert c.cmd("STOR up.bin").lines == ["150 OK"]
        s.sendall(up)
        s.shutdown(socket.SHUT_WR)  # unknown length: the client's close ends it
        assert c.read_reply().lines == ["226 File transfer successful"]
    assert site.path("up.bin").read_bytes() == up
    _, s = c.pasv()  # the channel is usable again, and kept open for a known length
    with s:
        r150 = c.cmd("RETR up.bin")
        assert recv_exact(s, bytes_available(r150)) == up
        assert c.read_reply().code == 226


def test_multistream_ranged_retr(site):
    data = site.put("m.bin", size=200_000)
    c = site.control()
    socks = open_streams(c, 2)
    try:
        assert c.cmd("RANG 1000 151000").code == 350
        r150 = c.cmd("RETR m.bin")
        assert bytes_available(r150) == 150_000
        got = read_frames(socks)
    finally:
        for s in socks:
            s.close()
    assert got == data[1000:151000]
    assert c.read_reply().code == 226


def test_parallel_ranged_parts_one_persistent_secret(site):
    """How a client splits a file over sessions: RANG + ALLO + STOR per part, then
    RANG + RETR per part; writes must not truncate each other."""
    import threading
    from helpers.ftp import Control
    data = os.urandom(4 * 1_000_000 + 3)
    parts = [(0, 1_000_000), (1_000_000, 2_000_000), (2_000_000, 3_000_000),
             (3_000_000, len(data))]
    secret = site.announce_ok(persistent="true")
    errors = []
    got = {}

    def upload(a, b):
        try:
            c = Control("127.0.0.1", site.port)
            assert c.login(secret).code == 230
            _, s = c.pasv()
            with s:
                assert c.cmd(f"RANG {a} {b}").code == 350
                assert c.cmd(f"ALLO {b - a}").code == 200
                assert c.cmd("STOR parts.bin").code == 150
                s.sendall(data[a:b])
                assert c.read_reply().code == 226
            c.close()
        except BaseException as e:
            errors.append(f"upload {a}-{b}: {e!r}")

    def download(a, b):
        try:
            c = Control("127.0.0.1", site.port)
            assert c.login(secret).code == 230
            got[a] = c.retr("parts.bin", pre=[f"RANG {a} {b}"])[1]
            c.close()
        except BaseException as e:
            errors.append(f"download {a}-{b}: {e!r}")

    for work in (upload, download):
        threads = [threading.Thread(target=work, args=p) for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
    assert site.path("parts.bin").read_bytes() == data
    assert b"".join(got[a] for a, _ in parts) == data
