"""Edge cases of the FTP dialect: missing or malformed arguments, client
variants (lower-case login, `LIST -a`), empty files, request expiry against
running sessions."""

import hashlib
import time

import pytest


@pytest.mark.parametrize("command", [
    "RETR", "STOR", "APPE", "CWD", "MKD", "DELE", "RMD", "RNFR", "SIZE", "MLST x y z/..//",
    "HASH", "RANG", "RANG 1", "REST", "ALLO", "ALLO abc", "REST -1", "MFMT", "MFMT 2020 f.txt",
    "MFMT notatime f.txt", "MFF", "MFF UNIX.mode=99z; f.txt", "MFF Bogus=1; f.txt", "OPTS HASH ",
])
def test_bad_arguments_get_an_error_and_keep_the_session(site, command):
    site.put("f.txt", data=b"unchanged")
    c = site.control()
    _, s = c.pasv() if command.split()[0] in ("RETR", "STOR", "APPE") else (None, None)
    try:
        r = c.cmd(command)
        verb = command.split()[0]
        if r.code < 400:
            # some of these are acceptable requests (e.g. RANG 1 = to the end, MLST of a
            # normalised path); then nothing may have been harmed
            assert verb in ("RANG", "MLST", "OPTS", "REST", "ALLO"), f"{command!r}: {r}"
        else:
            assert 500 <= r.code < 600, r
            assert r.last.startswith(f"{r.code} Error processing command '{verb}': "), r
    finally:
        if s:
            s.close()
    assert c.cmd("NOOP").lines == ["200 OK"], f"session broken after {command!r}"
    assert site.path("f.txt").read_bytes() == b"unchanged"


def test_hash_of_empty_file(site):
    site.put("empty", data=b"")
    r = site.control().cmd("HASH empty")
    assert r.lines == [f"213 MD5 0-0 {hashlib.md5(b'').hexdigest()} {site.base}/empty"], r


def test_list_dash_a(site):
    """Many clients send `LIST -a` (or -la); the reference lists the cwd."""
    site.put("x.txt", size=3)
    c = site.control()
    r150, data, r226 = c.listing("LIST", "-a")
    assert r150.code == 150 and r226.code == 226, (r150, r226)
    assert data.decode().rstrip("\r\n").endswith(" x.txt"), data


def test_trailing_slash_and_double_slash(site):
    data = site.put("sub/inner.bin", size=100)
    c = site.control()
    assert c.cmd("CWD sub/").lines == ["200 OK"]
    assert c.cmd("PWD").lines == [f'257 "{site.base}/sub"']
    assert c.cmd("CDUP").code == 200
    assert c.retr("sub//inner.bin")[1] == data
    assert c.retr(f"{site.base}//sub/./inner.bin")[1] == data


@pytest.mark.beyond_reference  # the reference compares "USER anonymous" case-sensitively
def test_login_verbs_are_case_insensitive(site):
    secret = site.announce_ok()
    c = site.connect()
    assert c.cmd("user anonymous").lines == ["331 Please specify the password"]
    assert c.cmd(f"pass {secret}").lines == ["230 Login successful"]


def test_running_session_outlives_request_expiry(daemon_factory, site_factory):
    site = site_factory(daemon=daemon_factory(REQUEST_LIFETIME=1))
    data = site.put("f.bin", size=10_000)
    c = site.control()
    time.sleep(3)  # well past the lifetime: the request may be gone, the session not
    assert c.cmd("NOOP").lines == ["200 OK"]
    assert c.retr("f.bin")[1] == data


@pytest.mark.beyond_reference  # REQUEST_LIFETIME is ours (the reference has 300 s)
def test_unused_persistent_secret_expires(daemon_factory, site_factory):
    """A request not used within the lifetime expires, persistent or not. (A used
    persistent request lives on with its sessions, as in the reference.)"""
    site = site_factory(daemon=daemon_factory(MAX_CONNECTIONS=1, REQUEST_LIFETIME=2))
    stale = site.announce_ok(persistent="true")
    fresh = site.new_secret()
    deadline = time.monotonic() + 20
    reply = None
    while time.monotonic() < deadline:  # its slot comes free once it has expired
        reply = site.announce(secret=fresh, persistent="true")
        if reply == site.ok:
            break
        time.sleep(0.25)
    assert reply == site.ok, f"persistent request did not expire: {reply}"
    r = site.connect().login(stale)
    assert r.lines == ["530 Not logged in: no matching transfer request found"], r
