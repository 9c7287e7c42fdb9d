"""The command port, spoken as the Auth server and UNICORE/X speak it.

PROTOCOL.md section 3: `\\n`-terminated `key=value` lines, a line `END`, then
the reply is read until the server closes the connection.
"""

import socket
import time

# the order in which the Auth server / UNICORE/X send the keys
TRANSFER_KEYS = ["request-type", "client-ip", "user", "secret", "persistent",
                 "file", "append", "streams", "compress"]
OPTIONAL_KEYS = ["group", "rateLimit", "offset", "key", "algo", "includes",
                 "excludes", "access-permissions"]

# python keyword names -> wire names
_ALIASES = {
    "request_type": "request-type",
    "client_ip": "client-ip",
    "access_permissions": "access-permissions",
    "rate_limit": "rateLimit",
}


class CommandPortTimeout(AssertionError):
    pass


def recv_to_eof(sock, timeout, what="reply"):
    """Everything the peer sends until it closes; fails if it does not close."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        if time.monotonic() > deadline:
            raise CommandPortTimeout(f"no EOF after {timeout}s reading {what}; got so far: "
                                     f"{b''.join(chunks)[:500]!r}")
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise CommandPortTimeout(f"peer did not close within {timeout}s after its {what}; "
                                     f"got so far: {b''.join(chunks)[:500]!r}") from None
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def send_request(host, port, lines, timeout=30, end=True):
    """Send lines (str or bytes, without line ends) then END; return the raw reply."""
    payload = b""
    for line in lines:
        if isinstance(line, str):
            line = line.encode("utf-8")
        payload += line + b"\n"
    if end:
        payload += b"END\n"
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        return recv_to_eof(s, timeout)


def request_lines(**fields):
    """Key=value lines in the order of PROTOCOL.md section 3; None omits a key."""
    wire = {}
    for k, v in fields.items():
        wire[_ALIASES.get(k, k)] = v
    lines = []
    for key in TRANSFER_KEYS + OPTIONAL_KEYS:
        if key in wire and wire[key] is not None:
            lines.append(f"{key}={wire[key]}")
    for key, v in wire.items():  # anything else, in the caller's order
        if key not in TRANSFER_KEYS + OPTIONAL_KEYS and v is not None:
            lines.append(f"{key}={v}")
    return lines


def decode_reply(raw):
    """One-line reply as text, without its (single) line end."""
    text = raw.decode("utf-8", "replace")
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


def reply_lines(raw):
    """Non-empty lines of a multi-line reply."""
    return [l.rstrip("\r") for l in raw.decode("utf-8", "replace").split("\n") if l.strip()]


def parse_info(raw):
    """`Key: value` lines (ping, get-user-info) -> ordered list of (key, value)."""
    out = []
    for line in reply_lines(raw):
        key, sep, value = line.partition(":")
        assert sep, f"reply line without ':': {line!r} in {raw!r}"
        out.append((key, value.strip()))
    return out


def ping(host, port, timeout=30):
    return send_request(host, port, ["request-type=uftp-ping-request"], timeout)


def get_user_info(host, port, user, timeout=30):
    # as the Java code sends it: empty client-ip, secret=null, persistent=false
    return send_request(host, port, [
        "request-type=uftp-get-user-info-request", "client-ip=", f"user={user}",
        "secret=null", "persistent=false"], timeout)
