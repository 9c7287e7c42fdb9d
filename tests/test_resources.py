"""Resource hygiene of the daemon over many sessions: children reaped, no
file descriptors leaked (ARCHITECTURE.md: the parent tracks and reaps
children and keeps serving whatever a session does)."""

import os
import time

import pytest

from helpers.daemon import children_of


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(daemon, timeout=30):
    """Wait until the daemon has no children left (sessions over, all reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        kids = children_of(daemon.pid)
        if not kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.2)


def one_session(site, data):
    c = site.control()
    _, got, r226 = c.retr("small.bin")
    assert got == data and r226.code == 226
    c.send("QUIT")
    assert c.closed(10), "session not closed after QUIT"
    c.close()


@pytest.fixture
def busy_site(daemon_factory, site_factory):
    return site_factory(daemon=daemon_factory(name="resource uftpd", MAX_CONNECTIONS=1000,
                                              LOG_VERBOSE="false"))


def test_300_sequential_sessions_leak_nothing(busy_site):
    site = busy_site
    daemon = site.daemon
    data = site.put("small.bin", size=4096)
    for _ in range(5):  # warm up lazily opened things
        one_session(site, data)
    assert settle(daemon) == {}, "children left after warm-up"
    fds_before = fd_count(daemon.pid)
    for i in range(300):
        one_session(site, data)
    left = settle(daemon)
    zombies = [p for p, st in left.items() if st == "Z"]
    assert not zombies, f"zombie children after 300 sessions: {zombies}"
    assert not left, f"children still running 30 s after their sessions ended: {left}"
    fds_after = fd_count(daemon.pid)
    assert fds_after <= fds_before + 3, \
        f"daemon fds grew from {fds_before} to {fds_after} over 300 sessions: " \
        f"{sorted(os.readlink(f'/proc/{daemon.pid}/fd/{fd}') for fd in os.listdir(f'/proc/{daemon.pid}/fd'))}"
    # and it still serves
    one_session(site, data)


def test_abrupt_disconnects_mid_transfer(busy_site):
    site = busy_site
    daemon = site.daemon
    site.put("big.bin", size=8 << 20)
    small = site.put("small.bin", size=100)
    one_session(site, small)
    assert settle(daemon) == {}
    fds_before = fd_count(daemon.pid)
    for i in range(30):
        c = site.control()
        _, s = c.pasv()
        r = c.cmd("RETR big.bin")
        assert r.code == 150, r
        s.recv(1000)
        if i % 2:
            s.close()  # drop the data connection first
        c.close()      # then, or only, the control connection
        s.close()
    left = settle(daemon)
    assert not left, f"children left after abrupt disconnects: {left}"
    assert fd_count(daemon.pid) <= fds_before + 3
    one_session(site, small)
