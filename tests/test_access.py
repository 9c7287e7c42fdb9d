"""Restrictions carried by the transfer request or the config (PROTOCOL.md
sections 2, 3, 5): access-permissions, includes/excludes, UFTP_NOWRITE."""

import os
import shutil
import socket

import pytest

from helpers import users as u
from helpers.ftp import recv_all
from helpers.users import needs_root

LEVELS = ["NONE", "INFO", "READ", "WRITE", "FULL"]

# (command, least level that allows it, uses a data connection)
MATRIX = [
    ("LIST", "INFO", True),
    ("MLSD", "INFO", True),
    ("MLST f.txt", "INFO", False),
    ("STAT F f.txt", "INFO", False),
    ("STAT N .", "INFO", False),
    ("RETR f.txt", "READ", True),
    ("HASH f.txt", "READ", False),
    ("STOR new.txt", "WRITE", True),
    ("MKD newdir", "WRITE", False),
    ("RNFR ren.txt", "WRITE", False),
    ("MFMT 20200101000000 f.txt", "WRITE", False),
    ("DELE del.txt", "FULL", False),
    ("RMD emptydir", "FULL", False),
]


def run(c, command, data_conn):
    """Run a command; returns the final reply (after the transfer for 150)."""
    if not data_conn:
        r = c.cmd(command)
        if command.startswith("RNFR") and r.code == 350:
            r = c.cmd("RNTO renamed.txt")
        return r
    _, s = c.pasv()
    with s:
        r = c.cmd(command)
        if r.code != 150:
            return r
        if command.startswith("STOR"):
            s.sendall(b"new content")
            s.shutdown(socket.SHUT_WR)
        else:
            recv_all(s)
        return c.read_reply()


@pytest.mark.parametrize("level", LEVELS)
def test_access_permissions(site, level):
    site.put("f.txt", data=b"file content\n")
    site.put("ren.txt", data=b"rename me\n")
    site.put("del.txt", data=b"delete me\n")
    site.mkdir("emptydir")
    c = site.control(access_permissions=level)
    wrong = []
    for command, least, data_conn in MATRIX:
        allowed = LEVELS.index(level) >= LEVELS.index(least)
        r = run(c, command, data_conn)
        if allowed and r.code >= 400:
            wrong.append(f"{command!r} refused at {level}: {r}")
        if not allowed and r.code != 534:
            wrong.append(f"{command!r} not refused with 534 at {level}: {r}")
    assert not wrong, "\n".join(wrong)
    # and what was refused left no trace
    rank = LEVELS.index(level)
    assert site.path("new.txt").exists() == (rank >= 3)
    assert site.path("newdir").exists() == (rank >= 3)
    assert site.path("del.txt").exists() == (rank < 4)
    assert site.path("emptydir").exists() == (rank < 4)
    assert site.path("ren.txt").exists() == (rank < 3)
    assert site.path("f.txt").read_bytes() == b"file content\n"


def test_access_refusal_format(site):
    site.put("f.txt", size=10)
    c = site.control(access_permissions="INFO")
    _, s = c.pasv()
    with s:
        r = c.cmd("RETR f.txt")
    assert r.code == 534 and r.last.startswith("534 Error processing command 'RETR': "), r
    assert c.cmd("NOOP").lines == ["200 OK"]


def test_excludes(site):
    site.put("visible.txt", data=b"ok\n")
    site.put("hidden.secret", data=b"no\n")
    site.put("private/p.txt", data=b"private\n")
    c = site.control(excludes=f"*.secret:{site.base}/private/*")
    assert c.retr("visible.txt")[1] == b"ok\n"
    for command in ("RETR hidden.secret", "RETR private/p.txt", "DELE hidden.secret"):
        r = run(c, command, command.startswith("RETR"))
        assert r.code == 534, f"{command}: {r}"
    r = run(c, "STOR new.secret", True)
    assert r.code == 534, r
    assert not site.path("new.secret").exists()
    assert site.path("hidden.secret").read_bytes() == b"no\n"


@pytest.mark.beyond_reference  # the reference does not check excludes for HASH
def test_excludes_apply_to_hash(site):
    site.put("hidden.secret", data=b"no\n")
    c = site.control(excludes="*.secret")
    r = c.cmd("HASH hidden.secret")
    assert r.code == 534, r


@pytest.mark.beyond_reference  # the reference checks the path as written only
def test_excludes_and_includes_see_through_symlinks(site):
    """A link inside the base does not open an excluded file under an
    innocent name, nor a file outside the included set."""
    site.put("hidden.secret", data=b"no\n")
    site.put("shared.dat", data=b"yes\n")
    u.symlink(site.base / "innocent.txt", "hidden.secret", site.user)
    site.mkdir("d")
    u.symlink(site.base / "d" / "alias.dat", "../hidden.secret", site.user)
    c = site.control(excludes="*.secret")
    for cmd in ("HASH innocent.txt",):
        r = c.cmd(cmd)
        assert r.code == 534, f"{cmd}: {r}"
    assert run(c, "RETR innocent.txt", True).code == 534
    assert run(c, "STOR innocent.txt", True).code == 534
    assert site.path("hidden.secret").read_bytes() == b"no\n"
    c = site.control(includes="*.dat", access_permissions="READ")
    assert c.retr("shared.dat")[1] == b"yes\n"
    assert run(c, "RETR d/alias.dat", True).code == 534


def test_includes_data_sharing(site):
    """Data sharing: includes=<file name>, access-permissions=READ."""
    data = site.put("shared.dat", size=5000)
    site.put("other.dat", size=10)
    c = site.control(includes="shared.dat", access_permissions="READ")
    assert c.retr("shared.dat")[1] == data
    assert run(c, "RETR other.dat", True).code == 534
    assert run(c, "STOR shared.dat", True).code == 534
    assert site.path("shared.dat").read_bytes() == data


def test_includes_several_patterns(site):
    site.put("a.txt", data=b"a")
    site.put("b.dat", data=b"b")
    site.put("c.bin", data=b"c")
    c = site.control(includes="a.txt:*.dat")
    assert c.retr("a.txt")[1] == b"a"
    assert c.retr("b.dat")[1] == b"b"
    assert run(c, "RETR c.bin", True).code == 534
    r = run(c, "STOR new.dat", True)
    assert r.code == 226, r
    assert site.path("new.dat").read_bytes() == b"new content"


@pytest.fixture
def home_site(site_factory, users):
    """A session of uftptest1 in its home (no base), with a scratch dir there."""
    needs_root("writes into a test user's home")
    user = users["uftptest1"]
    scratch = os.path.join(user.home, "uftpd-test-nowrite")
    u.make_dir(scratch, user)
    keys = os.path.join(user.home, ".ssh", "authorized_keys")
    u.make_dir(os.path.dirname(keys), user, 0o700)
    saved = open(keys, "rb").read() if os.path.exists(keys) else None
    u.write_file(keys, b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEEP keep@test\n", user, 0o600)
    yield site_factory(user=user), user, scratch
    shutil.rmtree(scratch, ignore_errors=True)
    if saved is None:
        os.unlink(keys)
    else:
        u.write_file(keys, saved, user, 0o600)


def test_nowrite_default_protects_authorized_keys(home_site):
    site, user, _ = home_site
    keys = os.path.join(user.home, ".ssh", "authorized_keys")
    before = open(keys, "rb").read()
    c = site.control(file="")
    for command in ("STOR .ssh/authorized_keys", f"STOR {keys}"):
        r = run(c, command, True)
        assert r.code == 534, f"{command}: {r}"
    site_file = os.path.join(user.home, "uftpd-test-nowrite", "x.txt")
    assert run(c, f"STOR {site_file}", True).code == 226
    assert c.cmd(f"RNFR {site_file}").code == 350
    r = c.cmd("RNTO .ssh/authorized_keys")
    assert r.code == 534, r
    assert open(keys, "rb").read() == before


def test_nowrite_cannot_be_bypassed_by_renaming_a_parent(home_site):
    """Moving .ssh away, writing authorized_keys under the new name and moving it
    back must fail: a directory that may hold write-protected paths is not renamed,
    and nothing is renamed onto such a directory."""
    site, user, scratch = home_site
    keys = os.path.join(user.home, ".ssh", "authorized_keys")
    before = open(keys, "rb").read()
    c = site.control(file="")
    r = c.cmd("RNFR .ssh")
    assert r.code == 534, r
    assert "write-protected" in r.lines[-1], r
    # a directory of the user's own, renamed onto .ssh's name after writing a key file
    site_dir = "uftpd-test-nowrite/sshmoved"
    assert c.cmd(f"MKD {site_dir}").code == 257
    assert run(c, f"STOR {site_dir}/authorized_keys", True).code == 226
    assert c.cmd("RMD .ssh").code != 200  # not empty: stays
    assert c.cmd(f"RNFR {site_dir}").code == 350
    r = c.cmd("RNTO .ssh")
    assert r.code == 534, r
    assert open(keys, "rb").read() == before
    # renaming ordinary directories still works
    assert c.cmd(f"RNFR {site_dir}").code == 350
    assert c.cmd("RNTO uftpd-test-nowrite/other").code == 200
    assert c.cmd("NOOP").code == 200


@pytest.mark.beyond_reference  # the reference checks the path as written only
def test_excludes_cannot_be_bypassed_by_renaming_a_parent(site):
    site.put("priv/data.txt", data=b"private\n")
    site.put("free/f.txt", data=b"free\n")
    c = site.control(excludes="priv/*")
    assert run(c, "RETR priv/data.txt", True).code == 534
    r = c.cmd("RNFR priv")
    assert r.code == 534, r
    assert "excluded" in r.lines[-1], r
    # nor can another directory take the protected name and its files
    assert c.cmd("RNFR free").code == 350
    assert c.cmd("RNTO priv2").code == 200
    site.mkdir("x")
    assert c.cmd("RNFR x").code == 350
    r = c.cmd("RNTO priv")
    assert r.code in (534, 550), r
    assert site.path("priv/data.txt").read_bytes() == b"private\n"
    assert site.path("priv2/f.txt").read_bytes() == b"free\n"


def test_nowrite_sees_through_symlinks(home_site):
    """A link to .ssh/authorized_keys (or to .ssh) made beforehand does not
    make the protected file writable under another name."""
    site, user, scratch = home_site
    keys = os.path.join(user.home, ".ssh", "authorized_keys")
    before = open(keys, "rb").read()
    u.symlink(os.path.join(scratch, "aklink"), keys, user)
    u.symlink(os.path.join(scratch, "sshlink"), os.path.join(user.home, ".ssh"), user)
    c = site.control(file="")
    for target in ("uftpd-test-nowrite/aklink", "uftpd-test-nowrite/sshlink/authorized_keys"):
        r = run(c, f"STOR {target}", True)
        assert r.code == 534, f"STOR {target}: {r}"
    assert open(keys, "rb").read() == before
    assert run(c, "STOR uftpd-test-nowrite/free.txt", True).code == 226


@pytest.mark.parametrize("name", [
    "UFTP_NOWRITE",
    pytest.param("UFTP_NO_WRITE", marks=pytest.mark.beyond_reference),  # not read by the reference
])
def test_nowrite_custom_patterns(home_site, daemon_factory, name):
    site, user, scratch = home_site
    d = daemon_factory(**{name: "uftpd-test-nowrite/locked/*:uftpd-test-nowrite/*.lock"})
    site.daemon = d
    u.make_dir(os.path.join(scratch, "locked"), user)
    c = site.control(file="")
    for target in ("uftpd-test-nowrite/locked/a.txt", "uftpd-test-nowrite/b.lock"):
        r = run(c, f"STOR {target}", True)
        assert r.code == 534, f"STOR {target} with {name}: {r}"
        assert not os.path.exists(os.path.join(user.home, target))
    assert run(c, "STOR uftpd-test-nowrite/free.txt", True).code == 226
    assert open(os.path.join(scratch, "free.txt"), "rb").read() == b"new content"
