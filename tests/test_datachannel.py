"""Passive data connections (PROTOCOL.md section 6): PASV/EPSV reply formats,
PORT_RANGE, ADVERTISE_HOST, and that only the control peer may connect."""

import re
import socket
import time

import pytest

from helpers.daemon import LOOPBACK, free_port_range
from helpers.ftp import PASV_RE, recv_all


def pasv_port(reply):
    m = PASV_RE.match(reply.last)
    assert m, reply
    return int(m.group(5)) * 256 + int(m.group(6))


def test_pasv_reply_format(site):
    data = site.put("f.bin", size=1000)
    c = site.control()
    r = c.cmd("PASV")
    m = re.fullmatch(r"227 Entering Passive Mode \(127,0,0,1,(\d{1,3}),(\d{1,3})\)", r.last)
    assert len(r.lines) == 1 and m, f"PASV reply: {r.raw!r}"
    port = int(m.group(1)) * 256 + int(m.group(2))
    assert r.last.split(" ")[4].startswith("(127,0,0,1,"), "Java reads the 5th token"
    with socket.create_connection((LOOPBACK, port), timeout=30) as s:
        assert c.cmd("RETR f.bin").code == 150
        assert recv_all(s) == data
    assert c.read_reply().code == 226


def test_epsv_reply_format(site):
    data = site.put("f.bin", size=1000)
    c = site.control()
    r = c.cmd("EPSV")
    m = re.fullmatch(r"229 Entering Extended Passive Mode \(\|\|\|(\d+)\|\)", r.last)
    assert len(r.lines) == 1 and m, f"EPSV reply: {r.raw!r}"
    with socket.create_connection((LOOPBACK, int(m.group(1))), timeout=30) as s:
        assert c.cmd("RETR f.bin").code == 150
        assert recv_all(s) == data
    assert c.read_reply().code == 226


def test_second_pasv_replaces_open_connection(site):
    data = site.put("f.bin", size=5000)
    c = site.control()
    _, first = c.pasv()
    _, second = c.pasv()
    with first, second:
        assert c.cmd("RETR f.bin").code == 150
        assert recv_all(second) == data
        assert recv_all(first, 10) == b"", "the replaced data connection got data"
    assert c.read_reply().code == 226


def test_ports_within_port_range(daemon_factory, site_factory):
    lower, upper = free_port_range(10)
    site = site_factory(daemon=daemon_factory(PORT_RANGE=f"{lower}:{upper}"))
    data = site.put("f.bin", size=100)
    seen = []
    for _ in range(2):
        c = site.control()
        for i in range(6):
            r, s = c.pasv() if i % 2 == 0 else c.epsv()
            with s:
                seen.append(s.getpeername()[1])
                assert c.cmd("RETR f.bin").code == 150
                assert recv_all(s) == data
            assert c.read_reply().code == 226
    outside = [p for p in seen if not lower <= p <= upper]
    assert not outside, f"data ports {outside} outside PORT_RANGE {lower}:{upper}"


def _occupy(port):
    """Listen on port on all addresses (IPv4, and IPv6 if there is one)."""
    socks = []
    s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s4.bind(("0.0.0.0", port))
    s4.listen(1)
    socks.append(s4)
    if socket.has_ipv6:
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind(("::", port))
            s6.listen(1)
            socks.append(s6)
        except OSError:
            pass
    return socks


def test_port_range_exhausted_gives_clear_error(daemon_factory, site_factory):
    lower, upper = free_port_range(2)
    site = site_factory(daemon=daemon_factory(PORT_RANGE=f"{lower}:{upper}"))
    data = site.put("f.bin", size=100)
    c = site.control()
    blockers = {p: _occupy(p) for p in (lower, upper)}
    try:
        for verb in ("PASV", "EPSV"):
            r = c.cmd(verb)
            assert 400 <= r.code < 600, f"{verb} with all PORT_RANGE ports taken: {r}"
            assert "port" in r.last.lower(), f"not a clear error: {r}"
        assert c.cmd("NOOP").lines == ["200 OK"], "session broken by the failed PASV"
        # free one port: the next PASV gets exactly that one
        for s in blockers.pop(upper):
            s.close()
        r, s = c.pasv()
        with s:
            assert pasv_port(r) == upper
            assert c.cmd("RETR f.bin").code == 150
            assert recv_all(s) == data
        assert c.read_reply().code == 226
    finally:
        for socks in blockers.values():
            for s in socks:
                s.close()


def test_data_connection_from_other_ip_refused(site):
    """Only the control connection's peer may connect to the data port."""
    secret_data = site.put("secret.bin", size=50_000)
    c = site.control()
    r = c.cmd("PASV")
    port = pasv_port(r)
    foreign = socket.create_connection((LOOPBACK, port), timeout=30,
                                       source_address=("127.0.0.2", 0))
    with foreign:
        c.send("RETR secret.bin")  # do not wait: the daemon may not answer before a real peer
        foreign.settimeout(10)
        got = b""
        closed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = foreign.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            except socket.timeout:
                break
            if not chunk:
                closed = True
                break
            got += chunk
    assert got == b"", f"a foreign peer received {len(got)} bytes of the file"
    assert closed, "the connection from a foreign address was not refused"
    # the daemon keeps serving
    assert site.control().retr("secret.bin")[1] == secret_data


@pytest.mark.beyond_reference  # the reference binds the data socket to ADVERTISE_HOST itself
def test_advertise_host_in_pasv(daemon_factory, site_factory):
    site = site_factory(daemon=daemon_factory(ADVERTISE_HOST="127.0.0.3"))
    data = site.put("f.bin", size=3000)
    c = site.control()
    r = c.cmd("PASV")
    assert re.fullmatch(r"227 Entering Passive Mode \(127,0,0,3,\d{1,3},\d{1,3}\)", r.last), r
    # behind NAT the advertised address is not local; clients such as ftplib
    # connect to the control peer with the advertised port
    with socket.create_connection((LOOPBACK, pasv_port(r)), timeout=30) as s:
        assert c.cmd("RETR f.bin").code == 150
        assert recv_all(s) == data
    assert c.read_reply().code == 226
    # and with ftplib
    ftp = site.login()
    chunks = []
    ftp.retrbinary("RETR f.bin", chunks.append)
    assert b"".join(chunks) == data
