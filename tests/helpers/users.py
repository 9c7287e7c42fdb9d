"""Test users and files owned by them.

As root: `uftptest1` and `uftptest2` (made with `useradd -m`, each with its
own group) and a group `uftptestg` that only uftptest1 belongs to; `nobody`
is used as it is. Without root, the only user is the current one.
"""

import grp
import os
import pathlib
import pwd
import subprocess

TEST_USERS = ("uftptest1", "uftptest2")
SHARED_GROUP = "uftptestg"


def is_root():
    return os.geteuid() == 0


class User:
    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name = name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.home = pw.pw_dir
        self.group = grp.getgrgid(pw.pw_gid).gr_name

    @property
    def groups(self):
        """All gids of the user (primary + supplementary), as the OS sees them."""
        return set(os.getgrouplist(self.name, self.gid))

    def __repr__(self):
        return f"User({self.name}, uid={self.uid}, gid={self.gid})"


def _run(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def ensure_test_users():
    """Create the test users and groups (idempotent). Needs root."""
    assert is_root()
    try:
        grp.getgrnam(SHARED_GROUP)
    except KeyError:
        _run("groupadd", SHARED_GROUP)
    for name in TEST_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run("useradd", "-m", "-U", "-s", "/bin/sh", name)
        home = pathlib.Path(pwd.getpwnam(name).pw_dir)
        if not home.is_dir():
            u = User(name)
            home.mkdir(mode=0o755, parents=True)
            os.chown(home, u.uid, u.gid)
    members = set(grp.getgrnam(SHARED_GROUP).gr_mem)
    if "uftptest1" not in members:
        _run("usermod", "-a", "-G", SHARED_GROUP, "uftptest1")
    if "uftptest2" in members:
        _run("gpasswd", "-d", "uftptest2", SHARED_GROUP)


def chown(path, user):
    if is_root():
        os.chown(path, user.uid, user.gid, follow_symlinks=False)


def make_dir(path, user, mode=0o755):
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    chown(path, user)
    return path


def write_file(path, data, user, mode=0o644):
    path = pathlib.Path(path)
    path.write_bytes(data)
    os.chmod(path, mode)
    chown(path, user)
    return path


def symlink(path, target, user):
    os.symlink(target, path)
    chown(path, user)


def needs_root(what):
    """Skip visibly when not root."""
    if not is_root():
        import pytest
        pytest.skip(f"needs root: {what}")
