"""OPEN_USER_SESSIONS / PAM_MODULE (PROTOCOL.md section 2): every FTP session
opens a PAM session for its user, as root, and closes it when it ends.

The test installs a throw-away PAM service whose only module is pam_exec,
which records each open/close with the uid it ran as. Needs root and libpam
(present on every Debian system with the `login` package)."""

import os
import pathlib
import secrets
import time

import pytest

from helpers.users import needs_root


@pytest.fixture
def pam_service(tmp_path):
    needs_root("installing a PAM service in /etc/pam.d")
    if not pathlib.Path("/etc/pam.d").is_dir():
        pytest.skip("no /etc/pam.d on this machine")
    libpam = [p for p in ("/lib/x86_64-linux-gnu/libpam.so.0", "/usr/lib/x86_64-linux-gnu/libpam.so.0",
                          "/lib64/libpam.so.0", "/usr/lib64/libpam.so.0") if os.path.exists(p)]
    if not libpam:
        pytest.skip("libpam.so.0 not installed")
    name = f"uftpd-test-{secrets.token_hex(4)}"
    record = tmp_path / "pam.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER $(id -u)" >> {record}\n')
    hook.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    service = pathlib.Path("/etc/pam.d") / name
    service.write_text(f"session required pam_exec.so {hook}\n")
    try:
        yield name, record
    finally:
        service.unlink()


def wait_for_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    return path.read_text().splitlines() if path.exists() else []


def test_pam_session_opened_and_closed_as_root(daemon_factory, site_factory, users, pam_service):
    service, record = pam_service
    daemon = daemon_factory(name="pam uftpd", OPEN_USER_SESSIONS="true", PAM_MODULE=service)
    user = users["uftptest1"]
    site = site_factory(daemon=daemon, user=user)
    site.put("hello.txt", b"hello pam\n")
    ftp = site.login()
    assert ftp.pwd() == str(site.path(""))
    lines = wait_for_lines(record, 1)
    assert lines == [f"open_session {user.name} 0"], lines
    chunks = []
    ftp.retrbinary("RETR hello.txt", chunks.append)
    assert b"".join(chunks) == b"hello pam\n"
    ftp.quit()
    lines = wait_for_lines(record, 2)
    assert lines == [f"open_session {user.name} 0", f"close_session {user.name} 0"], lines


def test_pam_failure_does_not_block_the_session(daemon_factory, site_factory, users):
    needs_root("sessions as other users")
    # A service name with no file in /etc/pam.d: Linux-PAM falls back to
    # "other", which may deny; uftpd logs it and serves the session anyway,
    # as UFTPD 3.x does.
    daemon = daemon_factory(name="pam uftpd (missing service)", OPEN_USER_SESSIONS="true",
                            PAM_MODULE=f"uftpd-no-such-service-{secrets.token_hex(4)}")
    site = site_factory(daemon=daemon, user=users["uftptest1"])
    site.put("x.bin", b"x" * 100)
    ftp = site.login()
    assert ftp.size("x.bin") == 100
    ftp.quit()
