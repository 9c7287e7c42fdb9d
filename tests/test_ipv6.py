"""Dual-stack listening and client-ip comparison (PROTOCOL.md sections 2, 3, 6):
client-ip is compared as addresses (Java's uncompressed IPv6 form, an optional
%scope; an IPv4-mapped peer equals its IPv4)."""

import ftplib
import re
import socket

import pytest

from helpers.ftp import Control, recv_all


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.fixture(params=[pytest.param("", id="empty"),
                        pytest.param("*", id="star", marks=pytest.mark.beyond_reference)])
def dual(request, daemon_factory, site_factory):
    """A site whose daemon listens on all interfaces (dual stack)."""
    return site_factory(daemon=daemon_factory(SERVER_HOST=request.param))


def control6(site, secret):
    c = Control("::1", site.port)
    site._closers.append(c.close)
    r = c.login(secret)
    return c, r


@pytest.mark.beyond_reference  # the reference compares "::ffff:127.0.0.1" with "127.0.0.1"
def test_ipv4_mapped_peer_matches_ipv4(dual):
    data = dual.put("f.bin", size=1000)
    c = dual.control(client_ip="127.0.0.1")
    r = c.cmd("PASV")
    assert re.fullmatch(r"227 Entering Passive Mode \(127,0,0,1,\d{1,3},\d{1,3}\)", r.last), r
    m = re.search(r"(\d+),(\d+)\)$", r.last)
    with socket.create_connection(("127.0.0.1", int(m.group(1)) * 256 + int(m.group(2))), 30) as s:
        assert c.cmd("RETR f.bin").code == 150
        assert recv_all(s) == data
    assert c.read_reply().code == 226


@pytest.mark.beyond_reference  # the reference compares strings ("::1" != "0:0:0:0:0:0:0:1")
@pytest.mark.parametrize("client_ip", [
    "0:0:0:0:0:0:0:1",                                # Java getHostAddress()
    "0:0:0:0:0:0:0:1%0",                              # with a scope
    "::1",                                            # compressed
    pytest.param("10.9.9.9,0:0:0:0:0:0:0:1", id="list"),
])
def test_ipv6_client(dual, client_ip):
    data = dual.put("f.bin", size=5000)
    secret = dual.announce_ok(client_ip=client_ip)
    c, r = control6(dual, secret)
    assert r.lines == ["230 Login successful"], r
    r = c.cmd("EPSV")
    m = re.fullmatch(r"229 Entering Extended Passive Mode \(\|\|\|(\d+)\|\)", r.last)
    assert m, r
    with socket.create_connection(("::1", int(m.group(1))), 30) as s:
        assert c.cmd("RETR f.bin").code == 150
        assert recv_all(s) == data
    assert c.read_reply().code == 226


def test_ipv6_peer_does_not_match_ipv4(dual):
    secret = dual.announce_ok(client_ip="127.0.0.1")
    c, r = control6(dual, secret)
    assert r.code == 500, f"::1 logged in with client-ip 127.0.0.1: {r}"
    assert c.closed()


@pytest.mark.beyond_reference  # the reference compares strings
def test_ftplib_over_ipv6(dual):
    data = dual.put("f.bin", size=70_000)
    secret = dual.announce_ok(client_ip="0:0:0:0:0:0:0:1")
    ftp = ftplib.FTP(timeout=30)
    dual._closers.append(ftp.close)
    ftp.connect("::1", dual.port)
    ftp.login("anonymous", secret)
    chunks = []
    ftp.retrbinary("RETR f.bin", chunks.append)  # ftplib uses EPSV on IPv6
    assert b"".join(chunks) == data


def test_disable_ipv6(daemon_factory, site_factory):
    site = site_factory(daemon=daemon_factory(SERVER_HOST="", DISABLE_IPv6="true"))
    with pytest.raises(OSError):
        socket.create_connection(("::1", site.port), timeout=5).close()
    assert site.control().cmd("NOOP").code == 200
