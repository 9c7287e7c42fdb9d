"""Command port (PROTOCOL.md section 3): ping, transfer requests, limits,
expiry and get-user-info, as the Auth server and UNICORE/X send them."""

import os
import re
import time

import pytest

from helpers import cmdport
from helpers.daemon import LOOPBACK
from helpers import users as u
from helpers.users import needs_root


def poll(fn, timeout=20, interval=0.25):
    """Call fn until it returns a truthy value or timeout; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# ---------------------------------------------------------------- ping
def test_ping_reply_lines(daemon_factory):
    d = daemon_factory(MAX_CONNECTIONS=7)
    raw = cmdport.ping(LOOPBACK, d.cmd_port)
    info = cmdport.parse_info(raw)
    keys = [k for k, _ in info]
    assert keys == ["Version", "ListenPort", "ListenAddress", "MaxSessionsPerClient"], raw
    values = dict(info)
    assert values["Version"], raw
    assert values["ListenPort"] == str(d.server_port), raw
    assert values["ListenAddress"] == "127.0.0.1", raw
    assert values["MaxSessionsPerClient"] == "7", raw


def test_ping_advertise_address(daemon_factory):
    d = daemon_factory(ADVERTISE_HOST="127.0.0.3")
    values = dict(cmdport.parse_info(cmdport.ping(LOOPBACK, d.cmd_port)))
    assert values.get("AdvertiseAddress") == "127.0.0.3", values
    assert values["ListenPort"] == str(d.server_port)


@pytest.mark.beyond_reference  # the reference reports "DEV"
def test_version_is_major_minor_patch_and_same_everywhere(uftpd, site):
    version = dict(cmdport.parse_info(cmdport.ping(LOOPBACK, uftpd.cmd_port)))["Version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"ping Version {version!r} is not x.y.z"
    greeting = site.connect().greeting.last
    assert greeting.startswith(f"220 UFTPD {version}, "), (greeting, version)


# ---------------------------------------------------------------- transfer requests
def test_transfer_request_reply_is_exactly_ok_port(uftpd, site):
    raw = cmdport.send_request(LOOPBACK, uftpd.cmd_port, cmdport.request_lines(
        request_type="uftp-transfer-request", client_ip="127.0.0.1", user=site.user.name,
        secret=site.new_secret(), persistent="false", file=f"{site.base}/", append="false",
        streams="1", compress="false"))
    assert raw in (f"OK::{uftpd.server_port}".encode(), f"OK::{uftpd.server_port}\n".encode(),
                   f"OK::{uftpd.server_port}\r\n".encode()), raw


def test_transfer_request_with_all_optional_fields(site):
    secret = site.announce_ok(group="NONE", rateLimit="100000000", offset="5",
                              includes="*", excludes="*.nothing",
                              access_permissions="FULL")
    c = site.control(secret)
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']


def test_lines_without_equals_sign_are_ignored(uftpd, site):
    lines = cmdport.request_lines(request_type="uftp-transfer-request", client_ip="127.0.0.1",
                                  user=site.user.name, secret=(s := site.new_secret()),
                                  persistent="false", file=f"{site.base}/")
    lines.insert(2, "this line has no equals sign")
    lines.insert(4, "")
    raw = cmdport.send_request(LOOPBACK, uftpd.cmd_port, lines)
    assert cmdport.decode_reply(raw) == site.ok
    assert site.control(s).cmd("NOOP").lines == ["200 OK"]


def test_missing_request_type(site):
    assert site.announce(request_type=None) == "ERROR::Unsupported request type 'n/a'"


def test_unknown_request_type(site):
    assert site.announce(request_type="uftp-frobnicate-request") == \
        "ERROR::Unsupported request type 'uftp-frobnicate-request'"


def test_root_is_refused(site):
    """Never a session as root: refused on the command port, or at the latest at login."""
    secret = site.new_secret()
    reply = site.announce(user="root", secret=secret, file="/tmp/")
    if reply.startswith("ERROR::"):
        return
    assert reply == site.ok, reply
    c = site.connect()
    r = c.login(secret)
    assert r.code != 230 and 500 <= r.code < 600, f"login as root was not refused: {r}"


@pytest.mark.beyond_reference  # the reference accepts the request and fails at login
def test_unknown_user_is_refused(site):
    reply = site.announce(user="no-such-user-uftpdtest")
    assert reply.startswith("ERROR::") and len(reply) > len("ERROR::"), reply


def test_duplicate_secret(site):
    secret = site.announce_ok()
    reply = site.announce(secret=secret)
    assert reply.startswith("ERROR::") and len(reply) > len("ERROR::"), reply
    # the first request is still there and usable
    c = site.control(secret)
    assert c.cmd("NOOP").lines == ["200 OK"]


# ---------------------------------------------------------------- per-user limit
def test_max_connections_counts_pending_requests(daemon_factory, site_factory):
    d = daemon_factory(MAX_CONNECTIONS=2)
    site = site_factory(daemon=d)
    site.announce_ok()
    site.announce_ok()
    reply = site.announce()
    assert reply.startswith("ERROR::") and len(reply) > len("ERROR::"), \
        f"third pending request with MAX_CONNECTIONS=2 was not refused: {reply!r}"


def test_max_connections_is_per_user(daemon_factory, site_factory, users):
    needs_root("a second user")
    d = daemon_factory(MAX_CONNECTIONS=1)
    s1 = site_factory(daemon=d, user=users["uftptest1"])
    s2 = site_factory(daemon=d, user=users["uftptest2"])
    s1.announce_ok()
    assert s1.announce().startswith("ERROR::")
    s2.announce_ok()


def test_max_connections_slot_freed_after_session_ends(daemon_factory, site_factory):
    d = daemon_factory(MAX_CONNECTIONS=1)
    site = site_factory(daemon=d)
    secret = site.announce_ok()
    assert site.announce().startswith("ERROR::")
    c = site.control(secret)
    c.send("QUIT")
    assert c.closed(10)
    # the slot comes back once the session is over
    reply = poll(lambda: (r := site.announce()) == site.ok and r, timeout=30)
    assert reply == site.ok, "the slot of a finished session was never freed"


def test_persistent_secret_sessions_limited_by_max_connections(daemon_factory, site_factory):
    d = daemon_factory(MAX_CONNECTIONS=2)
    site = site_factory(daemon=d)
    secret = site.announce_ok(persistent="true")
    c1 = site.control(secret)
    c2 = site.control(secret)
    c3 = site.connect()
    r = c3.login(secret)
    assert 500 <= r.code < 600, f"third session with MAX_CONNECTIONS=2: {r}"
    for c in (c1, c2):
        assert c.cmd("NOOP").lines == ["200 OK"]


# ---------------------------------------------------------------- expiry
@pytest.mark.beyond_reference  # the reference has a fixed 300 s lifetime (REQUEST_LIFETIME is ours)
def test_request_expires_after_request_lifetime(daemon_factory, site_factory):
    d = daemon_factory(MAX_CONNECTIONS=1, REQUEST_LIFETIME=2)
    site = site_factory(daemon=d)
    stale = site.announce_ok()
    assert site.announce().startswith("ERROR::"), "MAX_CONNECTIONS=1 did not hold"
    # once the first request has expired its slot is free again
    fresh = site.new_secret()
    reply = poll(lambda: (r := site.announce(secret=fresh)) == site.ok and r, timeout=20)
    assert reply == site.ok, "request did not expire within 20 s with REQUEST_LIFETIME=2"
    c = site.connect()
    r = c.login(stale)
    assert r.lines == ["530 Not logged in: no matching transfer request found"], r
    # the new one works
    assert site.control(fresh).cmd("NOOP").code == 200


# ---------------------------------------------------------------- get-user-info
KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0ZXN0a2V5b25lMDEyMzQ1Njc4OTAxMjM0NTY3ODkw one@test"
KEY2 = ('from="127.0.0.1" ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDtestkeytwo two@test')
KEY3 = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBthree three@test"


@pytest.fixture
def user_with_keys(users):
    needs_root("reads another user's key files")
    user = users["uftptest1"]
    home = u.User(user.name).home
    backups = {}
    for rel, content in ((".ssh/authorized_keys", f"# a comment line\n{KEY1}\n{KEY2}\n"),
                         (".uftp/authorized_keys", f"{KEY3}\n# trailing comment\n")):
        path = os.path.join(home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.chown(os.path.dirname(path), user.uid, user.gid)
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.exists(path):
            backups[path] = open(path, "rb").read()
        u.write_file(path, content.encode(), user, 0o600)
    yield user
    for rel in (".ssh/authorized_keys", ".uftp/authorized_keys"):
        path = os.path.join(home, rel)
        if path in backups:
            u.write_file(path, backups[path], user, 0o600)
        else:
            os.unlink(path)


def test_get_user_info(uftpd, user_with_keys):
    user = user_with_keys
    raw = cmdport.get_user_info(LOOPBACK, uftpd.cmd_port, user.name)
    lines = cmdport.reply_lines(raw)
    assert lines[0].startswith("Version: "), raw
    assert lines[1] == f"User: {user.name}", raw
    assert lines[2] == f"Home: {user.home}", raw
    assert lines[3:6] == [f"Accepted key 0: {KEY1}", f"Accepted key 1: {KEY2}",
                          f"Accepted key 2: {KEY3}"], raw
    assert lines[6].startswith("Status:"), raw
    assert len(lines) == 7, raw
    # what the Auth server does with it: the text after the first ':' is a key line
    keys = [l.split(":", 1)[1].strip() for l in lines if l.startswith("Accepted key")]
    assert keys == [KEY1, KEY2, KEY3]


def test_get_user_info_root_not_allowed(uftpd):
    raw = cmdport.get_user_info(LOOPBACK, uftpd.cmd_port, "root")
    assert cmdport.decode_reply(raw) == "500 Not allowed", raw


def test_get_user_info_unknown_user(uftpd):
    raw = cmdport.get_user_info(LOOPBACK, uftpd.cmd_port, "no-such-user-uftpdtest")
    assert cmdport.decode_reply(raw) == "500 No such user or no home directory found", raw


def test_get_user_info_reads_as_the_user(uftpd, users, workdir):
    """Key files are read with the user's rights: a link to a root-only file reveals nothing."""
    needs_root("a root-only file and a test user's home")
    user = users["uftptest2"]
    secret_file = workdir / "root-only-keys"
    secret_file.write_text("ssh-ed25519 AAAAROOTONLYKEYMATERIAL root@secret\n")
    os.chmod(secret_file, 0o600)
    keydir = os.path.join(user.home, ".uftp")
    os.makedirs(keydir, exist_ok=True)
    os.chown(keydir, user.uid, user.gid)
    link = os.path.join(keydir, "authorized_keys")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(secret_file, link)
    try:
        raw = cmdport.get_user_info(LOOPBACK, uftpd.cmd_port, user.name)
    finally:
        os.unlink(link)
    assert b"ROOTONLY" not in raw, f"root-only file leaked through get-user-info: {raw!r}"
    lines = cmdport.reply_lines(raw)
    assert lines[1] == f"User: {user.name}" and lines[-1].startswith("Status:"), raw
