"""A raw FTP control client that keeps every reply byte for byte.

ftplib hides line ends and reads multi-line replies its own way; the tests
that check the wire format use this instead (tests that want "a real
client" use ftplib and curl).
"""

import re
import socket
import struct
import time

CRLF = b"\r\n"

PASV_RE = re.compile(r"^227 Entering Passive Mode \((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
EPSV_RE = re.compile(r"^229 Entering Extended Passive Mode \(\|\|\|(\d+)\|\)")


class Reply:
    def __init__(self, lines_raw):
        self.raw_lines = lines_raw               # bytes, each with its line end
        self.raw = b"".join(lines_raw)
        self.lines = [l.rstrip(b"\r\n").decode("utf-8", "replace") for l in lines_raw]
        first = self.lines[0]
        if len(first) < 3 or not first[:3].isdigit():
            raise AssertionError(f"not an FTP reply: {self.raw!r}")
        self.code = int(first[:3])

    @property
    def last(self):
        return self.lines[-1]

    @property
    def text(self):
        """The last line after `<code> `."""
        return self.lines[-1][4:]

    def __str__(self):
        return " | ".join(self.lines)

    __repr__ = __str__


class ControlClosed(AssertionError):
    pass


def recv_all(sock, timeout=30):
    """Read until EOF (a reset counts as EOF)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"data connection not closed by the server within {timeout}s "
                                 f"({sum(map(len, chunks))} bytes received)") from None
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def recv_exact(sock, n, timeout=30):
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        try:
            data = sock.recv(min(1 << 20, n - len(buf)))
        except socket.timeout:
            raise AssertionError(f"only {len(buf)} of {n} bytes within {timeout}s") from None
        if not data:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def is_closed(sock, timeout=10):
    """True if the peer closes (EOF or reset) within timeout; data read meanwhile is ignored."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        if not data:
            return True
    return False


class Control:
    """One FTP control connection."""

    def __init__(self, host, port, timeout=30, source_address=None, read_greeting=True):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source_address)
        self.sock.settimeout(timeout)
        self._buf = b""
        self.greeting = self.read_reply() if read_greeting else None

    # ---- low level
    def read_raw_line(self):
        while b"\n" not in self._buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            except socket.timeout:
                raise AssertionError(f"no reply line within {self.timeout}s "
                                     f"(pending: {self._buf!r})") from None
            if not data:
                raise ControlClosed(f"control connection closed by the server (pending: {self._buf!r})")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def read_reply(self):
        first = self.read_raw_line()
        lines = [first]
        if len(first) >= 4 and first[3:4] == b"-":
            code = first[:3]
            while True:
                line = self.read_raw_line()
                lines.append(line)
                if line[:3] == code and (line[3:4] in (b" ", b"\r", b"\n")):
                    break
        return Reply(lines)

    def send(self, line, eol=CRLF):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.sock.sendall(line + eol)

    def cmd(self, line):
        self.send(line)
        return self.read_reply()

    def expect(self, line, code):
        reply = self.cmd(line)
        assert reply.code == code, f"{line!r}: expected {code}, got {reply}"
        return reply

    def closed(self, timeout=10):
        """True if the server closes the control connection within timeout."""
        if self._buf:
            return False
        return is_closed(self.sock, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- login
    def login(self, secret):
        r = self.cmd("USER anonymous")
        assert r.code == 331, f"USER anonymous: expected 331, got {r}"
        return self.cmd(f"PASS {secret}")

    # ---- data connections
    def pasv(self, connect_host=None):
        """PASV; connect (to the control peer, as ftplib does). Returns (reply, socket)."""
        r = self.cmd("PASV")
        m = PASV_RE.match(r.last)
        assert r.code == 227 and m, f"PASV: unexpected reply {r}"
        nums = [int(x) for x in m.groups()]
        port = nums[4] * 256 + nums[5]
        s = socket.create_connection((connect_host or self.host, port), timeout=self.timeout)
        return r, s

    def epsv(self, connect_host=None):
        r = self.cmd("EPSV")
        m = EPSV_RE.match(r.last)
        assert r.code == 229 and m, f"EPSV: unexpected reply {r}"
        s = socket.create_connection((connect_host or self.host, int(m.group(1))), timeout=self.timeout)
        return r, s

    def retr(self, path, pre=()):
        """Open a data connection, send pre commands (e.g. RANG), RETR; return (150, data, 226)."""
        _, data_sock = self.pasv()
        with data_sock:
            for c in pre:
                r = self.cmd(c)
                assert r.code < 400, f"{c}: {r}"
            r150 = self.cmd(f"RETR {path}")
            assert r150.code == 150, f"RETR {path}: expected 150, got {r150}"
            data = recv_all(data_sock, self.timeout)
        r226 = self.read_reply()
        return r150, data, r226

    def stor(self, path, payload, pre=(), verb="STOR"):
        _, data_sock = self.pasv()
        with data_sock:
            for c in pre:
                r = self.cmd(c)
                assert r.code < 400, f"{c}: {r}"
            r150 = self.cmd(f"{verb} {path}")
            assert r150.code == 150, f"{verb} {path}: expected 150, got {r150}"
            data_sock.sendall(payload)
            data_sock.shutdown(socket.SHUT_WR)
            r226 = self.read_reply()
        return r150, r226

    def listing(self, verb, path=None):
        """LIST/MLSD: returns (150, data lines, 226)."""
        _, data_sock = self.pasv()
        with data_sock:
            r150 = self.cmd(f"{verb} {path}" if path else verb)
            if r150.code != 150:
                return r150, None, None
            data = recv_all(data_sock, self.timeout)
        r226 = self.read_reply()
        return r150, data, r226


# ---- multi-stream framing (PROTOCOL.md section 6)
MAGIC = 0xCEBF


def write_frames(socks, payload, block=16384):
    n = len(socks)
    seq = 0
    for start in range(0, len(payload), block):
        data = payload[start:start + block]
        size = len(data)
        chunk = size // n
        for i, s in enumerate(socks):
            off = i * chunk
            ln = size - off if i == n - 1 else chunk
            s.sendall(struct.pack(">HHIII", MAGIC, i, seq, size, ln) + data[off:off + ln])
        seq += 1


def _read_n(sock, n):
    buf = bytearray()
    while len(buf) < n:
        d = sock.recv(n - len(buf))
        if not d:
            break
        buf += d
    return bytes(buf)


def read_frames(socks, timeout=30):
    """Reassemble a multi-stream transfer; ends at EOF of stream 0 on a header boundary."""
    for s in socks:
        s.settimeout(timeout)
    n = len(socks)
    out = bytearray()
    seq = 0
    while True:
        block = None
        for i, s in enumerate(socks):
            header = _read_n(s, 16)
            if i == 0 and len(header) == 0:
                return bytes(out)
            assert len(header) == 16, f"stream {i}: truncated header {header!r} at block {seq}"
            magic, idx, hseq, size, ln = struct.unpack(">HHIII", header)
            assert magic == MAGIC, f"stream {i}: bad magic {magic:#x}"
            assert idx == i, f"stream {i}: header says stream {idx}"
            assert hseq == seq, f"stream {i}: header seq {hseq}, expected {seq}"
            assert size <= 16384, f"block of {size} bytes is larger than 16384"
            if block is None:
                block = bytearray(size)
            chunk = size // n
            payload = _read_n(s, ln)
            assert len(payload) == ln, f"stream {i}: short payload"
            block[i * chunk:i * chunk + ln] = payload
        out += block
        seq += 1
