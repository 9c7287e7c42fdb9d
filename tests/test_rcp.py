"""Server-to-server copy (PROTOCOL.md section 9): SEND-FILE / RECEIVE-FILE,
RCP-STATUS / RCP-ABORT, between two of our daemons and, with UFTPD_REF set,
between ours and the reference Python UFTPD.

The remote's transfer request names 127.0.0.1 as client-ip: that is where
the copying session connects from."""

import base64
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

from helpers import users as u
from helpers.daemon import Daemon, children_of, descendants_of

ID_RE = re.compile(r"^299 OK transfer-process-ID=(\d+)$")


@pytest.fixture
def remote(daemon_factory, site_factory):
    """A second daemon (its own ports) with a site of the same user."""
    return site_factory(daemon=daemon_factory(name="remote uftpd"))


def start(c, verb, local, remote_path, remote_site, secret):
    r = c.cmd(f"{verb} '{local}' '{remote_path}' '127.0.0.1:{remote_site.port}' '{secret}'")
    m = ID_RE.match(r.last)
    assert r.code == 299 and m, r
    return int(m.group(1))


def wait_done(c, copy_id, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.cmd(f"RCP-STATUS {copy_id}")
        assert r.code == 299, r
        if r.last != "299 RUNNING":
            return r.last
        time.sleep(0.1)
    raise AssertionError(f"copy {copy_id} still running after {timeout}s")


def hidden_files(d):
    return [p.name for p in pathlib.Path(d).iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- happy paths
def test_receive_file(site, remote):
    data = remote.put("src.bin", size=3 * 1024 * 1024 + 5)
    secret = remote.announce_ok()
    c = site.control()
    cid = start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
    assert cid == 1
    assert wait_done(c, cid) == "299 FINISHED"
    assert site.path("dst.bin").read_bytes() == data
    if u.is_root():
        assert site.path("dst.bin").stat().st_uid == site.user.uid
    assert hidden_files(site.base) == []
    # ids count per session
    secret = remote.announce_ok()
    assert start(c, "RECEIVE-FILE", "dst2.bin", "src.bin", remote, secret) == 2
    log = site.daemon.log_text()
    assert secret not in log, "the secret reached the log"


def test_send_file(site, remote):
    data = site.put("src.bin", size=2 * 1024 * 1024 + 1)
    remote.put("dst.bin", data=b"old content that is longer than nothing" * 100)
    secret = remote.announce_ok()
    c = site.control()
    cid = start(c, "SEND-FILE", "src.bin", "dst.bin", remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    assert remote.path("dst.bin").read_bytes() == data
    assert "USAGE [Sent 1 file(s)] [2097153 bytes]" in site.daemon.log_text()


KEY_AES = base64.b64encode(os.urandom(48)).decode()
KEY_BF = base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize("streams,fields", [
    (3, {}),
    (1, {"compress": "true"}),
    (2, {"key": KEY_AES, "algo": "AES"}),
    (2, {"key": KEY_BF, "algo": "BLOWFISH", "compress": "true"}),
], ids=["3-streams", "gzip", "2-streams-aes", "2-streams-blowfish-gzip"])
@pytest.mark.parametrize("verb", ["SEND-FILE", "RECEIVE-FILE"])
def test_streams_and_codecs_carried_over(site, remote, verb, streams, fields):
    data = os.urandom(1_500_000)
    if verb == "SEND-FILE":
        site.put("a.bin", data=data)
    else:
        remote.put("a.bin", data=data)
    secret = remote.announce_ok(**fields)
    c = site.control(**fields)
    if streams > 1:
        assert c.cmd(f"NOOP {streams}").code == 222
    cid = start(c, verb, "a.bin", "a.bin", remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    got = (remote if verb == "SEND-FILE" else site).path("a.bin").read_bytes()
    assert got == data
    # the remote session really used the streams and codecs
    rlog = remote.daemon.log_text()
    assert "encrypted=%s" % ("true" if "key" in fields else "false") in rlog
    if streams > 1:
        assert f"<-- 222 Opening {streams} data connections" in rlog


def test_ranges_carried_over(site, remote):
    data = site.put("src.bin", size=100_000)
    remote.put("dst.bin", data=b"\0" * 100_000)
    c = site.control()
    assert c.cmd("RANG 1000 21000").code == 350
    secret = remote.announce_ok()
    cid = start(c, "SEND-FILE", "src.bin", "dst.bin", remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    got = remote.path("dst.bin").read_bytes()
    assert got[1000:21000] == data[1000:21000]
    assert got[:1000] == b"\0" * 1000 and got[21000:] == b"\0" * 79_000, "written in place"
    # the range was used up: the next copy is a whole file
    secret = remote.announce_ok()
    cid = start(c, "SEND-FILE", "src.bin", "whole.bin", remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    assert remote.path("whole.bin").read_bytes() == data
    # receive a range (REST: to the end) into an existing local file, in place
    site.put("part.bin", data=b"x" * 10)
    assert c.cmd("REST 99990").code == 350
    secret = remote.announce_ok()
    cid = start(c, "RECEIVE-FILE", "part.bin", "whole.bin", remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    got = site.path("part.bin").read_bytes()
    assert len(got) == 100_000 and got[:10] == b"x" * 10 and got[99_990:] == data[99_990:]


def test_copy_outlives_the_session(site, remote):
    """Clients quit right after the 299 (the Java client does)."""
    data = remote.put("src.bin", size=4 * 1024 * 1024)
    secret = remote.announce_ok(rate_limit=str(4 * 1024 * 1024))
    c = site.control()
    start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
    assert c.cmd("QUIT").code == 221
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p = site.path("dst.bin")
        if p.exists() and p.stat().st_size == len(data):
            break
        time.sleep(0.2)
    assert site.path("dst.bin").read_bytes() == data
    assert hidden_files(site.base) == []


def test_only_the_starting_session_sees_a_copy(site, remote):
    remote.put("src.bin", size=1000)
    secret = remote.announce_ok()
    persistent = site.announce_ok(persistent="true")
    c1 = site.control(secret=persistent)
    c2 = site.control(secret=persistent)
    cid = start(c1, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
    assert c2.cmd(f"RCP-STATUS {cid}").lines == ["299 UNKNOWN"]
    assert c2.cmd(f"RCP-ABORT {cid}").lines == ["299 UNKNOWN"]
    assert wait_done(c1, cid) == "299 FINISHED"
    assert c1.cmd("RCP-STATUS 99").lines == ["299 UNKNOWN"]
    assert c1.cmd("RCP-STATUS nonsense").lines == ["299 UNKNOWN"]


def test_syntax(site, remote):
    site.put("f.bin", size=10)
    site.mkdir("d")
    c = site.control()
    for args in ["'f.bin' 'x' '127.0.0.1:1'", "'f.bin' 'x' '127.0.0.1:1' 's' 'extra'", "",
                 "'unterminated 'x' 'h:1' 's'"]:
        r = c.cmd(f"SEND-FILE {args}")
        assert r.code == 501 and r.last.startswith("501 Error processing command 'SEND-FILE': "), r
    for server in ["nohost", "host:", "host:port", "host:70000"]:
        assert c.cmd(f"RECEIVE-FILE 'x' 'y' '{server}' 's'").code == 501
    assert c.cmd("SEND-FILE 'missing' 'y' '127.0.0.1:1' 's'").code == 550
    assert c.cmd("SEND-FILE 'd' 'y' '127.0.0.1:1' 's'").code == 550
    assert c.cmd("RECEIVE-FILE 'd' 'y' '127.0.0.1:1' 's'").code == 550
    assert c.cmd("RECEIVE-FILE 'nodir/x' 'y' '127.0.0.1:1' 's'").code == 550
    assert c.cmd("RECEIVE-FILE '../x' 'y' '127.0.0.1:1' 's'").code == 534
    ro = site.control(access_permissions="READ")
    assert ro.cmd("RECEIVE-FILE 'x' 'y' '127.0.0.1:1' 's'").code == 534


def test_names_with_spaces_and_ipv6_style_server(site, remote):
    data = remote.put("a file.bin", size=5000)
    secret = remote.announce_ok()
    c = site.control()
    r = c.cmd(f"RECEIVE-FILE 'my copy.bin' 'a file.bin' '[127.0.0.1]:{remote.port}' '{secret}'")
    cid = int(ID_RE.match(r.last).group(1))
    assert wait_done(c, cid) == "299 FINISHED"
    assert site.path("my copy.bin").read_bytes() == data


def test_secret_not_on_any_command_line(site, remote):
    remote.put("src.bin", size=2 * 1024 * 1024)
    secret = remote.announce_ok(rate_limit=str(1024 * 1024))
    c = site.control()
    cid = start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
    time.sleep(0.5)
    seen = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if b"__rcp" in cmdline:
            seen += 1
        assert secret.encode() not in cmdline and secret.encode() not in environ, \
            f"secret visible in /proc/{pid}"
    assert seen >= 1, "no __rcp process found while copying"
    assert wait_done(c, cid) == "299 FINISHED"


# ---------------------------------------------------------------- failures
def test_login_refused(site, remote):
    site.put("dst.bin", data=b"keep me")
    remote.put("src.bin", size=1000)
    c = site.control()
    cid = start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, "not-a-valid-secret")
    status = wait_done(c, cid)
    assert status.startswith("299 FAILED: login to 127.0.0.1:") and "530" in status, status
    assert site.path("dst.bin").read_bytes() == b"keep me"
    assert hidden_files(site.base) == []
    assert re.search(r"Server-server copy 1 FAILED: RECEIVE-FILE .*530", site.daemon.log_text())
    # nobody listening
    r = c.cmd("SEND-FILE 'dst.bin' 'x' '127.0.0.1:1' 's'")
    status = wait_done(c, int(ID_RE.match(r.last).group(1)))
    assert status == "299 FAILED: cannot connect to 127.0.0.1:1: Connection refused", status


def kill_remote_sessions(remote):
    killed = 0
    for pid in children_of(remote.daemon.pid):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def test_network_cut_mid_copy(site, remote):
    """The remote session dies mid-transfer (its connections reset): FAILED, the old
    local file stays, no temporary file is left."""
    site.put("dst.bin", data=b"previous version")
    remote.put("src.bin", size=8 * 1024 * 1024)
    secret = remote.announce_ok(rate_limit=str(1024 * 1024))
    c = site.control()
    cid = start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
    deadline = time.monotonic() + 20
    while not [n for n in hidden_files(site.base)] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert kill_remote_sessions(remote) >= 1
    status = wait_done(c, cid)
    assert status.startswith("299 FAILED: "), status
    assert site.path("dst.bin").read_bytes() == b"previous version"
    assert hidden_files(site.base) == []
    assert "Server-server copy 1 FAILED" in site.daemon.log_text()


def test_send_network_cut(site, remote):
    site.put("src.bin", size=8 * 1024 * 1024)
    secret = remote.announce_ok()
    c = site.control(rate_limit=str(1024 * 1024))
    cid = start(c, "SEND-FILE", "src.bin", "dst.bin", remote, secret)
    time.sleep(1.5)
    assert kill_remote_sessions(remote) >= 1
    status = wait_done(c, cid)
    assert status.startswith("299 FAILED: "), status


def test_abort(site, remote):
    remote.put("src.bin", size=8 * 1024 * 1024)
    secret = remote.announce_ok(rate_limit=str(1024 * 1024))
    c = site.control()
    cid = start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
    time.sleep(1.0)
    assert c.cmd(f"RCP-STATUS {cid}").lines == ["299 RUNNING"]
    assert c.cmd(f"RCP-ABORT {cid}").lines == ["299 ABORTED"]
    assert c.cmd(f"RCP-STATUS {cid}").lines == ["299 ABORTED"]
    assert not site.path("dst.bin").exists()
    assert hidden_files(site.base) == []


def test_disk_full(site, remote, workdir):
    """The local file system fills up (a 1 MiB tmpfs): FAILED with the reason, the
    temporary file is removed, an existing file is untouched."""
    u.needs_root("mounts a small tmpfs")
    small = workdir / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(small)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        os.chown(small, site.user.uid, site.user.gid)
        u.write_file(small / "dst.bin", b"old", site.user)
        remote.put("src.bin", size=3 * 1024 * 1024)
        secret = remote.announce_ok()
        c = site.control(file=f"{small}/")
        cid = start(c, "RECEIVE-FILE", "dst.bin", "src.bin", remote, secret)
        status = wait_done(c, cid)
        assert status.startswith("299 FAILED: writing ") and status.endswith("dst.bin: No space left on device"), status
        assert (small / "dst.bin").read_bytes() == b"old"
        assert hidden_files(small) == []
        log = site.daemon.log_text()
        assert re.search(r"Server-server copy \d+ FAILED: .*No space left on device", log)
    finally:
        subprocess.run(["umount", "-l", str(small)])


# ---------------------------------------------------------------- the reference UFTPD
@pytest.fixture
def reference_remote(workdir, site_factory):
    ref = os.environ.get("UFTPD_REF")
    if not ref:
        pytest.skip("set UFTPD_REF=<checkout of the reference UFTPD> for the cross-checks")
    d = Daemon(workdir / "refdaemon", name="reference uftpd")
    d.impl = "ref"
    from conftest import use_daemon
    use_daemon(d)
    d.start()
    try:
        yield site_factory(daemon=d)
    finally:
        d.stop()


@pytest.mark.parametrize("verb", ["SEND-FILE", "RECEIVE-FILE"])
@pytest.mark.parametrize("streams", [1, 2])
def test_against_the_reference_server(site, reference_remote, verb, streams):
    data = os.urandom(1_200_000)
    if verb == "SEND-FILE":
        site.put("a.bin", data=data)
    else:
        reference_remote.put("a.bin", data=data)
    secret = reference_remote.announce_ok()
    c = site.control()
    if streams > 1:
        assert c.cmd(f"NOOP {streams}").code == 222
    cid = start(c, verb, "a.bin", "a.bin", reference_remote, secret)
    assert wait_done(c, cid) == "299 FINISHED"
    got = (reference_remote if verb == "SEND-FILE" else site).path("a.bin").read_bytes()
    assert got == data


@pytest.mark.parametrize("verb", ["SEND-FILE", "RECEIVE-FILE"])
def test_reference_server_copies_from_and_to_ours(site, reference_remote, verb):
    """The reference's own copy client (ftplib, inclusive one- or two-argument RANG, no
    wait for 226) against our daemon."""
    data = os.urandom(700_000)
    if verb == "SEND-FILE":
        reference_remote.put("a.bin", data=data)
    else:
        site.put("a.bin", data=data)
    secret = site.announce_ok()
    c = reference_remote.control()
    r = c.cmd(f"{verb} 'a.bin' 'a.bin' '127.0.0.1:{site.port}' '{secret}'")
    assert r.code == 299, r
    target = site.path("a.bin") if verb == "SEND-FILE" else reference_remote.path("a.bin")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if target.exists() and target.read_bytes() == data:
            break
        time.sleep(0.2)
    assert target.read_bytes() == data
