"""Hostile paths (PROTOCOL.md section 5: clients cannot leave a non-empty base;
paths are normalised before the base check; ARCHITECTURE.md: resolution
beneath the base, no symlink escapes).

Everything outside the base is owned by the session user, so only the
daemon's confinement (not file permissions) stands in the way. Every attempt
must be refused with 534 or 550, and the whole tree must be unchanged."""

import hashlib
import os
import secrets
import socket

import pytest

from helpers import users as u
from helpers.ftp import recv_all

OK_CODES = (534, 550)


@pytest.fixture
def tree(site):
    """base/ with symlinks pointing out of it; victims next to it."""
    work = site.work
    user = site.user
    u.chown(work, user)  # even the base's parent is the user's: only confinement protects it
    site.put("inside.txt", data=b"inside\n")
    site.put("sub/inner.txt", data=b"inner\n")
    u.write_file(work / "outside.txt", b"OUTSIDE SECRET\n", user, 0o644)
    u.make_dir(work / "outdir", user)
    u.write_file(work / "outdir" / "f.txt", b"OUTDIR SECRET\n", user, 0o644)
    u.make_dir(work / "outdir" / "emptysub", user)
    u.make_dir(work / "outempty", user)
    # a sibling whose name starts with the base's name: defeats a string-prefix check
    u.make_dir(work / "base_evil", user)
    u.write_file(work / "base_evil" / "secret.txt", b"SIBLING SECRET\n", user, 0o644)
    u.make_dir(work / "base_evil" / "emptydir", user)
    b = site.base
    u.symlink(b / "abs_file", str(work / "outside.txt"), user)
    u.symlink(b / "rel_file", "../outside.txt", user)
    u.symlink(b / "abs_dir", str(work / "outdir"), user)
    u.symlink(b / "rel_dir", "../outdir", user)
    u.symlink(b / "deep_rel", "sub/../../outdir", user)
    u.symlink(b / "abs_root", "/", user)
    u.symlink(b / "etc_link", "/etc", user)
    u.symlink(b / "sub" / "up_link", "../..", user)
    site.evil_tmp = f"/tmp/uftpd-evil-{secrets.token_hex(6)}"
    return site


def snapshot(root):
    """Everything about a tree that a write could change (not atime)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [""] + dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            entry = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
            if os.path.islink(p):
                entry += ("->", os.readlink(p))
            elif os.path.isfile(p):
                entry += (hashlib.sha256(open(p, "rb").read()).hexdigest(),)
            state[os.path.relpath(p, root)] = entry
    return state


def diff(before, after):
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(f"{k}: {before.get(k)} -> {after.get(k)}")
    return out


# ---------------------------------------------------------------- hostile paths
LEXICAL_FILES = ["../outside.txt", "../../etc/passwd", "/etc/passwd", "{work}/outside.txt",
                 "sub/../../outside.txt", "./../outside.txt", "sub/../../../../../../etc/passwd"]
LEXICAL_DIRS = ["..", "../outdir", "/etc", "/", "{work}/outdir", "sub/../.."]
SIBLING_FILES = ["../base_evil/secret.txt", "{work}/base_evil/secret.txt"]
SIBLING_DIRS = ["../base_evil", "{work}/base_evil"]
SYMLINK_FILES = ["abs_file", "rel_file", "abs_dir/f.txt", "rel_dir/f.txt", "deep_rel/f.txt",
                 "abs_root/etc/passwd", "etc_link/passwd", "sub/up_link/outside.txt"]
SYMLINK_DIRS = ["abs_dir", "rel_dir", "deep_rel", "abs_root", "etc_link", "sub/up_link"]

LEXICAL_NEW = ["../new_x", "{work}/new_x", "sub/../../new_x", "{evil_tmp}"]
SIBLING_NEW = ["../base_evil/new_x", "{work}/base_evil/new_x"]
SYMLINK_NEW = ["abs_dir/new_x", "rel_dir/new_x", "deep_rel/new_x", "sub/up_link/new_x"]

LEXICAL_DELE = ["../outside.txt", "{work}/outside.txt", "sub/../../outdir/f.txt"]
SIBLING_DELE = ["../base_evil/secret.txt"]
SYMLINK_DELE = ["abs_dir/f.txt", "rel_dir/f.txt", "deep_rel/f.txt", "sub/up_link/outside.txt"]

LEXICAL_RMD = ["../outempty", "{work}/outempty", "../outdir/emptysub"]
SIBLING_RMD = ["../base_evil/emptydir"]
SYMLINK_RMD = ["abs_dir/emptysub", "rel_dir/emptysub", "sub/up_link/outempty"]

# which paths each operation is tried with, by group
OPS = {
    "RETR": dict(lexical=LEXICAL_FILES, sibling=SIBLING_FILES, symlink=SYMLINK_FILES),
    "HASH": dict(lexical=LEXICAL_FILES, sibling=SIBLING_FILES, symlink=SYMLINK_FILES),
    "SIZE": dict(lexical=LEXICAL_FILES, sibling=SIBLING_FILES, symlink=SYMLINK_FILES),
    "MLST": dict(lexical=LEXICAL_FILES + LEXICAL_DIRS, sibling=SIBLING_FILES + SIBLING_DIRS,
                 symlink=SYMLINK_FILES + SYMLINK_DIRS),
    "STAT F": dict(lexical=LEXICAL_FILES + LEXICAL_DIRS, sibling=SIBLING_FILES + SIBLING_DIRS,
                   symlink=SYMLINK_FILES + SYMLINK_DIRS),
    "STAT N": dict(lexical=LEXICAL_DIRS, sibling=SIBLING_DIRS, symlink=SYMLINK_DIRS),
    "LIST": dict(lexical=LEXICAL_DIRS, sibling=SIBLING_DIRS, symlink=SYMLINK_DIRS),
    "MLSD": dict(lexical=LEXICAL_DIRS, sibling=SIBLING_DIRS, symlink=SYMLINK_DIRS),
    "CWD": dict(lexical=LEXICAL_DIRS, sibling=SIBLING_DIRS, symlink=SYMLINK_DIRS),
    "STOR": dict(lexical=LEXICAL_NEW + LEXICAL_FILES[:1], sibling=SIBLING_NEW + SIBLING_FILES,
                 symlink=SYMLINK_NEW + SYMLINK_FILES),
    "APPE": dict(lexical=LEXICAL_FILES[:1] + LEXICAL_FILES[3:4], sibling=SIBLING_FILES,
                 symlink=SYMLINK_FILES),
    "DELE": dict(lexical=LEXICAL_DELE, sibling=SIBLING_DELE, symlink=SYMLINK_DELE),
    "RMD": dict(lexical=LEXICAL_RMD, sibling=SIBLING_RMD, symlink=SYMLINK_RMD),
    "MKD": dict(lexical=LEXICAL_NEW, sibling=SIBLING_NEW, symlink=SYMLINK_NEW),
    "RNTO": dict(lexical=LEXICAL_NEW, sibling=SIBLING_NEW, symlink=SYMLINK_NEW),
    "RNFR": dict(lexical=LEXICAL_FILES[:1] + LEXICAL_FILES[3:4], sibling=SIBLING_FILES,
                 symlink=SYMLINK_FILES),
    "MFMT": dict(lexical=LEXICAL_FILES[:1] + LEXICAL_FILES[3:4], sibling=SIBLING_FILES,
                 symlink=SYMLINK_FILES),
    "MFF": dict(lexical=LEXICAL_FILES[:1] + LEXICAL_FILES[3:4], sibling=SIBLING_FILES,
                symlink=SYMLINK_FILES),
}
DATA_OPS = {"RETR", "LIST", "MLSD", "STOR", "APPE"}

# the reference compares strings (prefix) and never resolves links
GROUP_MARKS = {"lexical": [], "sibling": [pytest.mark.beyond_reference],
               "symlink": [pytest.mark.beyond_reference]}


def attempt(c, op, target):
    """Try op on target; returns (final reply, bytes leaked to us)."""
    leaked = b""
    if op == "RNTO":
        r = c.cmd("RNFR inside.txt")
        assert r.code == 350, f"RNFR inside.txt: {r}"
        return c.cmd(f"RNTO {target}"), leaked
    if op == "RNFR":
        r = c.cmd(f"RNFR {target}")
        if r.code != 350:
            return r, leaked
        return c.cmd("RNTO stolen.txt"), leaked
    if op == "MFMT":
        return c.cmd(f"MFMT 19990101000000 {target}"), leaked
    if op == "MFF":
        return c.cmd(f"MFF Modify=19990101000000;UNIX.mode=777; {target}"), leaked
    if op == "CWD":
        r = c.cmd(f"CWD {target}")
        if r.code == 200:
            c.cmd("CWD {base}".format(base=c.base))
        return r, leaked
    if op not in DATA_OPS:
        r = c.cmd(f"{op} {target}")
        if r.code < 400:
            leaked = r.raw
        return r, leaked
    _, s = c.pasv()
    with s:
        r = c.cmd(f"{op} {target}")
        if r.code == 150:
            if op in ("STOR", "APPE"):
                try:
                    s.sendall(b"EVIL DATA\n")
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the server closed the data connection
            else:
                leaked = recv_all(s)
            r = c.read_reply()
            r.code = r.code if r.code >= 400 else 150  # a transfer happened: not refused
    return r, leaked


CASES = [pytest.param(op, group, id=f"{op.replace(' ', '_')}-{group}", marks=GROUP_MARKS[group])
         for op in OPS for group in ("lexical", "sibling", "symlink")]


@pytest.mark.parametrize("op,group", CASES)
def test_hostile_paths(tree, op, group):
    site = tree
    targets = [t.format(work=site.work, evil_tmp=site.evil_tmp) for t in OPS[op][group]]
    before = snapshot(site.work)
    c = site.control()
    c.base = site.base
    refused_badly = []
    for target in targets:
        r, leaked = attempt(c, op, target)
        if r.code not in OK_CODES or leaked:
            refused_badly.append(f"{op} {target!r}: {r}" + (f" (got {len(leaked)} bytes)" if leaked else ""))
    # the session is intact and still confined
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']
    changes = diff(before, snapshot(site.work))
    assert not os.path.exists(site.evil_tmp), f"{op} created {site.evil_tmp}"
    assert not changes, f"{op} changed the tree: {changes}\nreplies: {refused_badly}"
    assert not refused_badly, "not refused with 534/550:\n" + "\n".join(refused_badly)


def test_absolute_path_inside_base_is_fine(tree):
    """The positive control: absolute paths and harmless `..` inside the base work."""
    site = tree
    c = site.control()
    assert c.retr(f"{site.base}/inside.txt")[1] == b"inside\n"
    assert c.retr("sub/../inside.txt")[1] == b"inside\n"
    assert c.retr(f"{site.base}/sub/../sub/inner.txt")[1] == b"inner\n"
    assert c.cmd("CWD sub").code == 200
    assert c.retr("../inside.txt")[1] == b"inside\n"


@pytest.mark.beyond_reference  # the reference follows links out of the base
def test_symlink_within_base_and_cwd_escape(tree):
    """A link to a place inside the base may be used; CWD through a link may not escape."""
    site = tree
    u.symlink(site.base / "link_in", "sub/inner.txt", site.user)
    c = site.control()
    r150, data, _ = c.retr("link_in")
    assert data == b"inner\n"
    r = c.cmd("CWD rel_dir")
    assert r.code in OK_CODES, r
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']
