"""Sessions run as the requested user (PROTOCOL.md section 1.4, section 3
`group`; ARCHITECTURE.md process model). Needs root: the daemon must switch
to nobody, uftptest1 and uftptest2."""

import grp
import os
import stat
import subprocess
import time

import pytest

from helpers.daemon import descendants_of, proc_status
from helpers.users import needs_root

USERS = ["nobody", "uftptest1", "uftptest2"]


@pytest.fixture(autouse=True)
def _root():
    needs_root("sessions as other users")


def session_pids(daemon, uid, timeout=10):
    """Descendants of the daemon whose real uid is uid (waits a little for the hand-over)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for pid, state in descendants_of(daemon.pid).items():
            try:
                st = proc_status(pid)
            except FileNotFoundError:
                continue
            if state != "Z" and int(st["Uid"].split()[0]) == uid:
                found.append(pid)
        if found or time.monotonic() > deadline:
            return found


def ids(line):
    return [int(x) for x in line.split()]


def gid_of(name):
    return grp.getgrnam(name).gr_gid


@pytest.fixture
def own_daemon(daemon_factory):
    return daemon_factory(name="identity uftpd")


@pytest.mark.parametrize("name", USERS)
def test_session_process_runs_as_user(own_daemon, site_factory, users, name):
    user = users[name]
    site = site_factory(daemon=own_daemon, user=user)
    c = site.control()
    pids = session_pids(own_daemon, user.uid)
    assert len(pids) == 1, f"expected one session process of {name} under the daemon, got {pids}"
    st = proc_status(pids[0])
    uid_real, uid_eff = ids(st["Uid"])[:2]
    gid_real, gid_eff = ids(st["Gid"])[:2]
    assert (uid_real, uid_eff) == (user.uid, user.uid), st["Uid"]
    assert (gid_real, gid_eff) == (user.gid, user.gid), st["Gid"]
    assert set(ids(st["Groups"])) == user.groups, f"Groups {st['Groups']} != {user.groups}"
    assert c.cmd("NOOP").code == 200


@pytest.mark.beyond_reference  # the reference keeps root as saved uid (setresuid(u, u, 0))
@pytest.mark.parametrize("name", ["nobody", "uftptest1"])
def test_session_process_has_no_way_back(own_daemon, site_factory, users, name):
    user = users[name]
    site = site_factory(daemon=own_daemon, user=user)
    site.control()
    pids = session_pids(own_daemon, user.uid)
    assert len(pids) == 1, pids
    st = proc_status(pids[0])
    assert ids(st["Uid"]) == [user.uid] * 4, f"Uid line {st['Uid']}: real, effective, saved, fs"
    assert ids(st["Gid"]) == [user.gid] * 4, f"Gid line {st['Gid']}"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[cap], 16) == 0, f"{cap} = {st[cap]}"
    assert st.get("NoNewPrivs") == "1", f"NoNewPrivs = {st.get('NoNewPrivs')}"


@pytest.mark.parametrize("name", USERS)
def test_created_files_owned_by_user(site_factory, users, name):
    user = users[name]
    site = site_factory(user=user)
    data = os.urandom(1000)
    c = site.control()
    c.stor("up.bin", data)
    assert c.cmd("MKD made").code == 257
    for rel in ("up.bin", "made"):
        st = os.stat(site.path(rel))
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid), \
            f"{rel} owned by {st.st_uid}:{st.st_gid}, expected {user.uid}:{user.gid}"
    assert site.path("up.bin").read_bytes() == data


def test_other_users_private_file_in_shared_dir(site_factory, users):
    one = site_factory(user=users["uftptest1"])
    two = site_factory(user=users["uftptest2"])
    shared = one.base
    os.chown(shared, 0, 0)
    os.chmod(shared, 0o1777)  # like /tmp: both may create, neither may delete the other's
    secret = os.urandom(5000)
    c1 = one.control()
    c1.stor("private.bin", secret)
    assert c1.cmd("MFF UNIX.mode=600; private.bin").code == 213
    assert stat.S_IMODE(os.stat(shared / "private.bin").st_mode) == 0o600
    c2 = two.control(file=f"{shared}/")
    _, s = c2.pasv()
    with s:
        r = c2.cmd("RETR private.bin")
        assert r.code == 550, f"uftptest2 reading uftptest1's 0600 file: {r}"
    r = c2.cmd("HASH private.bin")
    assert r.code == 550, f"uftptest2 hashing uftptest1's 0600 file: {r}"
    for command in ("DELE private.bin", "MFF UNIX.mode=666; private.bin"):
        r = c2.cmd(command)
        assert 500 <= r.code < 600, f"{command} by uftptest2: {r}"
    _, s = c2.pasv()
    with s:
        r = c2.cmd("STOR private.bin")
        if r.code == 150:
            s.sendall(b"overwritten")
            s.close()
            r = c2.read_reply()
        assert 500 <= r.code < 600, f"STOR over another user's file: {r}"
    assert (shared / "private.bin").read_bytes() == secret
    st = os.stat(shared / "private.bin")
    assert st.st_uid == users["uftptest1"].uid and stat.S_IMODE(st.st_mode) == 0o600
    # uftptest2's own files there are fine
    c2.stor("mine.bin", b"two")
    assert os.stat(shared / "mine.bin").st_uid == users["uftptest2"].uid


def refused(site, **fields):
    """True if the request is refused on the command port or at login."""
    secret = site.new_secret()
    reply = site.announce(secret=secret, **fields)
    if reply.startswith("ERROR::"):
        return True
    assert reply == site.ok, reply
    r = site.connect().login(secret)
    return r.code != 230


def test_group_as_primary(own_daemon, site_factory, users):
    user = users["uftptest1"]
    site = site_factory(daemon=own_daemon, user=user)
    c = site.control(group="uftptestg")
    c.stor("g.bin", b"group file")
    assert c.cmd("MKD gdir").code == 257
    for rel in ("g.bin", "gdir"):
        st = os.stat(site.path(rel))
        assert (st.st_uid, st.st_gid) == (user.uid, gid_of("uftptestg")), f"{rel}: {st.st_uid}:{st.st_gid}"
    pids = session_pids(own_daemon, user.uid)
    assert len(pids) == 1, pids
    st = proc_status(pids[0])
    assert ids(st["Gid"])[:2] == [gid_of("uftptestg")] * 2, st["Gid"]
    # one group = that primary plus the user's supplementary groups
    assert set(ids(st["Groups"])) >= {gid_of("uftptestg"), user.gid}, st["Groups"]


def test_group_primary_and_supplementary(own_daemon, site_factory, users):
    user = users["uftptest1"]
    site = site_factory(daemon=own_daemon, user=user)
    c = site.control(group="uftptestg:uftptest1")
    c.stor("g.bin", b"x")
    assert os.stat(site.path("g.bin")).st_gid == gid_of("uftptestg")
    st = proc_status(session_pids(own_daemon, user.uid)[0])
    assert ids(st["Gid"])[:2] == [gid_of("uftptestg")] * 2, st["Gid"]
    assert set(ids(st["Groups"])) == {gid_of("uftptestg"), gid_of("uftptest1")}, st["Groups"]


def test_group_none_is_users_own(site_factory, users):
    user = users["uftptest1"]
    site = site_factory(user=user)
    c = site.control(group="NONE")
    c.stor("n.bin", b"x")
    assert os.stat(site.path("n.bin")).st_gid == user.gid


def test_group_user_is_not_in_is_refused(site_factory, users):
    site = site_factory(user=users["uftptest2"])
    assert refused(site, group="uftptestg"), "uftptest2 got group uftptestg it is not in"
    assert refused(site, group="uftptest2:uftptestg"), "supplementary group uftptestg granted"
    assert refused(site, group="root"), "uftptest2 got gid 0"
    assert refused(site, group="uftptest2:root"), "uftptest2 got supplementary gid 0"
    assert not list(site.base.iterdir())


def test_unknown_group_is_refused(site_factory, users):
    site = site_factory(user=users["uftptest1"])
    assert refused(site, group="no-such-group-uftpdtest")


def test_group_not_enforced_when_disabled(daemon_factory, site_factory, users):
    d = daemon_factory(UFTP_ENFORCE_OS_GIDS="false")
    site = site_factory(daemon=d, user=users["uftptest2"])
    c = site.control(group="uftptestg")
    c.stor("x.bin", b"x")
    st = os.stat(site.path("x.bin"))
    assert (st.st_uid, st.st_gid) == (users["uftptest2"].uid, gid_of("uftptestg"))


@pytest.fixture
def temp_group_of_uftptest1():
    """A group made for one test with uftptest1 as its only member."""
    name = f"uftpdtmp{os.getpid() % 100000}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    subprocess.run(["usermod", "-a", "-G", name, "uftptest1"], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], capture_output=True)


def leave_group(user, group):
    subprocess.run(["gpasswd", "-d", user, group], check=True, capture_output=True)


@pytest.mark.parametrize("cache_seconds", ["0", "600"])
def test_user_cache_seconds_bounds_how_long_a_resolved_user_is_reused(
        daemon_factory, site_factory, users, temp_group_of_uftptest1, cache_seconds):
    """USER_CACHE_SECONDS: a resolved user (uid, groups) is reused for that
    long; 0 asks the user database for every request. Only successes are
    kept: a refused request is looked up again next time."""
    group = temp_group_of_uftptest1
    d = daemon_factory(USER_CACHE_SECONDS=cache_seconds)
    site = site_factory(daemon=d, user=users["uftptest1"])
    assert not refused(site, group=group), "member of the new group refused"
    assert refused(site, group="uftptest1:no-such-group-uftpdtest")
    leave_group("uftptest1", group)
    if cache_seconds == "0":
        assert refused(site, group=group), "left the group, still accepted without a cache"
    else:
        assert not refused(site, group=group), "cached identity not reused"
        # Another group specification is another lookup.
        assert refused(site, group=f"uftptest1:{group}")
