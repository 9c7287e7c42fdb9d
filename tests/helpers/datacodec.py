"""An independent Python implementation of the UFTP data-channel codecs
(PROTOCOL.md section 6), and a raw client that uses it over helpers.ftp.Control.

Layers, outermost first: socket, encryption, gzip, multi-stream framing.
- encryption: BLOWFISH-ECB (key <= 56 bytes) or AES-CBC (key = 16-byte IV +
  16/24/32-byte AES key); the whole TCP stream is one message, PKCS#5/7
  padding once at its end; one cipher instance per TCP stream;
- gzip: one member per TCP stream, inside the encryption;
- framing (only with n > 1 streams): blocks of at most 16384 bytes, stream i
  carries a 16-byte header `u16 0xCEBF, u16 i, u32 seq, u32 size, u32 len`
  and bytes [i*chunk, i*chunk+len) of the block (chunk = size // n, the last
  stream takes the rest).

Written from the protocol text with pycryptodome and zlib, sharing nothing
with the Rust codecs, so that a test decoding the daemon's output here (and
the daemon decoding ours) proves the wire format, not just a round trip.
Decoders are strict: bad padding, a gzip member without trailer, bytes after
the trailer, a short frame are errors (CodecError).
"""

import base64
import socket
import struct
import threading
import zlib

from Crypto.Cipher import AES, Blowfish

MAGIC = 0xCEBF
MAX_BLOCK = 16384


class CodecError(AssertionError):
    pass


class Stack:
    """The codec stack of one session: key (bytes), algo, compress."""

    def __init__(self, key=None, algo=None, compress=False):
        self.key = key
        self.algo = None
        if key is not None:
            # PROTOCOL.md section 3: without algo, AES for 32/40/48-byte keys
            default = "AES" if len(key) in (32, 40, 48) else "BLOWFISH"
            self.algo = (algo or default).upper()
        self.compress = compress

    @property
    def plain(self):
        return self.key is None and not self.compress

    def request_fields(self):
        """The command-port keys for this stack."""
        fields = {"compress": "true" if self.compress else "false"}
        if self.key is not None:
            fields["key"] = base64.b64encode(self.key).decode("ascii")
            fields["algo"] = self.algo
        return fields

    def __repr__(self):
        enc = f"{self.algo}-{len(self.key)}" if self.key is not None else "plain"
        return f"Stack({enc}{', gzip' if self.compress else ''})"

    # ---- cipher
    def _cipher(self):
        if self.algo == "BLOWFISH":
            return Blowfish.new(self.key, Blowfish.MODE_ECB)
        if self.algo == "AES":
            return AES.new(self.key[16:], AES.MODE_CBC, iv=self.key[:16])
        raise ValueError(self.algo)

    def encrypt(self, data):
        c = self._cipher()
        pad = c.block_size - len(data) % c.block_size
        return c.encrypt(data + bytes([pad]) * pad)

    def decrypt(self, data):
        c = self._cipher()
        bs = c.block_size
        if len(data) == 0 or len(data) % bs:
            raise CodecError(f"{self.algo}: ciphertext of {len(data)} bytes is not a "
                             f"positive multiple of {bs}")
        plain = c.decrypt(data)
        pad = plain[-1]
        if not 1 <= pad <= bs or plain[-pad:] != bytes([pad]) * pad:
            raise CodecError(f"{self.algo}: bad padding at the end of the stream")
        return plain[:-pad]

    # ---- one TCP stream
    def encode_stream(self, plain):
        data = plain
        if self.compress:
            z = zlib.compressobj(6, zlib.DEFLATED, 31)
            data = z.compress(data) + z.flush()
        if self.key is not None:
            data = self.encrypt(data)
        return data

    def decode_stream(self, wire):
        data = wire
        if self.key is not None:
            data = self.decrypt(data)
        if self.compress:
            d = zlib.decompressobj(wbits=31)
            try:
                out = d.decompress(data) + d.flush()
            except zlib.error as e:
                raise CodecError(f"gzip: {e}") from None
            if not d.eof:
                raise CodecError("gzip member without trailer (stream cut short)")
            if d.unused_data:
                raise CodecError(f"{len(d.unused_data)} bytes after the gzip member")
            data = out
        return data

    # ---- a whole data channel
    def encode_channel(self, payload, n, block=MAX_BLOCK):
        """payload -> list of n byte strings, what goes on each TCP stream."""
        streams = [payload] if n == 1 else frame(payload, n, block)
        return [self.encode_stream(s) for s in streams]

    def decode_channel(self, wires):
        plains = [self.decode_stream(w) for w in wires]
        return plains[0] if len(plains) == 1 else unframe(plains)


def frame(payload, n, block=MAX_BLOCK):
    """JPARSS framing: payload -> n per-stream byte strings."""
    outs = [bytearray() for _ in range(n)]
    for seq, start in enumerate(range(0, len(payload), block)):
        data = payload[start:start + block]
        size = len(data)
        chunk = size // n
        for i in range(n):
            off = i * chunk
            ln = size - off if i == n - 1 else chunk
            outs[i] += struct.pack(">HHIII", MAGIC, i, seq, size, ln) + data[off:off + ln]
    return [bytes(o) for o in outs]


def unframe(streams):
    """n decoded per-stream byte strings -> payload, checking every header.

    End of data = end of stream 0 at a header boundary; the other streams
    must end there too."""
    n = len(streams)
    pos = [0] * n
    out = bytearray()
    seq = 0
    while pos[0] < len(streams[0]):
        block = None
        for i in range(n):
            s = streams[i]
            header = s[pos[i]:pos[i] + 16]
            if len(header) < 16:
                raise CodecError(f"stream {i}: truncated header at block {seq} "
                                 f"({len(header)} bytes)")
            magic, idx, hseq, size, ln = struct.unpack(">HHIII", header)
            if magic != MAGIC:
                raise CodecError(f"stream {i}: bad magic {magic:#x} at block {seq}")
            if idx != i:
                raise CodecError(f"stream {i}: header names stream {idx}")
            if hseq != seq:
                raise CodecError(f"stream {i}: header seq {hseq}, expected {seq}")
            if size > MAX_BLOCK:
                raise CodecError(f"block {seq} of {size} bytes is larger than {MAX_BLOCK}")
            chunk = size // n
            want = size - i * chunk if i == n - 1 else chunk
            if ln != want:
                raise CodecError(f"stream {i}: block {seq} carries {ln} bytes, expected {want}")
            if block is None:
                block = bytearray(size)
                first_size = size
            elif size != first_size:
                raise CodecError(f"stream {i}: block {seq} size {size} != {first_size}")
            payload = s[pos[i] + 16:pos[i] + 16 + ln]
            if len(payload) != ln:
                raise CodecError(f"stream {i}: short payload in block {seq}")
            block[i * chunk:i * chunk + ln] = payload
            pos[i] += 16 + ln
        out += block
        seq += 1
    for i in range(1, n):
        if pos[i] != len(streams[i]):
            raise CodecError(f"stream {i}: {len(streams[i]) - pos[i]} bytes after the end "
                             f"of stream 0")
    return bytes(out)


# ---------------------------------------------------------------- sockets
def _read_all(sock, timeout, results, idx):
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            try:
                d = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not d:
                break
            chunks.append(d)
        results[idx] = b"".join(chunks)
    except Exception as e:  # reported by the caller
        results[idx] = e


def read_all_concurrently(socks, timeout=30):
    """Each socket to EOF, all at once (the sender may write round-robin)."""
    results = [None] * len(socks)
    threads = [threading.Thread(target=_read_all, args=(s, timeout, results, i), daemon=True)
               for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    for i, r in enumerate(results):
        if isinstance(r, Exception) or r is None:
            raise AssertionError(f"data stream {i}: {r!r}")
    return results


def _send_all(sock, data, shut, errors, idx):
    try:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
    except Exception as e:
        errors[idx] = e


def send_concurrently(socks, wires, shut=True):
    """Send wires[i] on socks[i] at once; then half-close each (end of data)."""
    errors = [None] * len(socks)
    threads = [threading.Thread(target=_send_all, args=(s, w, shut, errors, i), daemon=True)
               for i, (s, w) in enumerate(zip(socks, wires))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


# ---------------------------------------------------------------- a raw client
def open_channel(c, n):
    """NOOP n (if n > 1) and n PASV connections on Control c."""
    if n > 1:
        r = c.cmd(f"NOOP {n}")
        assert r.lines == [f"222 Opening {n} data connections"], f"NOOP {n}: {r}"
    return [c.pasv()[1] for _ in range(n)]


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def bytes_available(r150):
    return int(r150.last.split(" ")[2])


def retr_wires(c, path, n, pre=()):
    """RETR over n streams: returns (150 reply, the raw bytes of each stream);
    the final reply is still to be read."""
    for cmd in pre:
        r = c.cmd(cmd)
        assert r.code < 400, f"{cmd}: {r}"
    socks = open_channel(c, n)
    try:
        r150 = c.cmd(f"RETR {path}")
        assert r150.code == 150, f"RETR {path}: {r150}"
        return r150, read_all_concurrently(socks)
    finally:
        close_all(socks)


def retr(c, path, n, stack, pre=()):
    """RETR over n streams with the stack: returns (150 reply, decoded data, 226 reply)."""
    r150, wires = retr_wires(c, path, n, pre)
    data = stack.decode_channel(wires)
    return r150, data, c.read_reply()


def stor(c, path, data, n, stack, pre=(), verb="STOR"):
    """STOR/APPE data over n streams with the stack: returns (150 reply, final reply)."""
    for cmd in pre:
        r = c.cmd(cmd)
        assert r.code < 400, f"{cmd}: {r}"
    socks = open_channel(c, n)
    try:
        r150 = c.cmd(f"{verb} {path}")
        assert r150.code == 150, f"{verb} {path}: {r150}"
        errors = send_concurrently(socks, stack.encode_channel(data, n))
        assert not any(errors), f"sending: {errors}"
        final = c.read_reply()
    finally:
        close_all(socks)
    return r150, final


def listing(c, verb, n, stack, path=None):
    """LIST/MLSD over n streams with the stack: returns (150, decoded text, 226)."""
    socks = open_channel(c, n)
    try:
        r150 = c.cmd(f"{verb} {path}" if path else verb)
        assert r150.code == 150, f"{verb}: {r150}"
        wires = read_all_concurrently(socks)
    finally:
        close_all(socks)
    data = stack.decode_channel(wires)
    return r150, data.decode("utf-8"), c.read_reply()


# ---------------------------------------------------------------- a daemon for codec tests
CODEC_CONFIG = {"MAX_STREAMS": 4, "MAX_CONNECTIONS": 1000}


class DaemonHolder:
    """A daemon with MAX_STREAMS=4 shared by one test module, restarted if a
    test killed it (that test fails with the log via the `uftpd`-style fixture)."""

    def __init__(self, root, name, config=None):
        self.root = root
        self.name = name
        self.config = dict(CODEC_CONFIG, **(config or {}))
        self.daemon = None
        self.generation = 0

    def get(self):
        from .daemon import Daemon, DaemonError
        if self.daemon is None or not self.daemon.alive():
            if self.daemon is not None:
                try:
                    self.daemon.stop()
                except DaemonError:
                    pass  # reported by the test during which it died
            self.generation += 1
            self.daemon = Daemon(self.root / f"{self.name}-{self.generation}",
                                 name=f"{self.name} #{self.generation}",
                                 config=self.config).start()
        return self.daemon

    def stop(self):
        if self.daemon is not None:
            self.daemon.stop()
