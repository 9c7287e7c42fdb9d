"""Special files and broken archives (PROTOCOL.md sections 5 and 7).

A FIFO or device node inside the base directory is never opened in a way
that blocks: RETR, STOR, APPE, HASH and SYNC of one get a prompt 550
"not a regular file" and the session goes on. In archive mode a hard link
to itself leaves the file as it is, and a stream that ends inside a
member's data removes the partial file and names the member."""

import os
import shutil
import stat
import subprocess
import tarfile
import time

import pytest

from helpers import users as u
from helpers.tarballs import file_entry, tar_bytes

# A reply must come well before this; a blocking open never answers.
PROMPT = 10


def hard_link(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    info.mode = 0o600
    return info, None


def make_fifo(site, rel="pipe"):
    p = site.path(rel)
    os.mkfifo(p, 0o666)
    if u.is_root():
        os.chown(p, site.user.uid, site.user.gid)
    return p


def prompt_control(site):
    c = site.control()
    c.timeout = PROMPT
    c.sock.settimeout(PROMPT)
    return c


def assert_not_regular(reply, verb, site, rel="pipe"):
    assert reply.code == 550, reply
    expected = f"550 Error processing command '{verb}': {site.path(rel)}: not a regular file"
    assert reply.last == expected, reply


def assert_alive(c):
    assert c.cmd("NOOP").code == 200


@pytest.mark.parametrize("verb", ["RETR", "STOR", "APPE"])
def test_fifo_transfer_refused_promptly(site, verb):
    make_fifo(site)
    c = prompt_control(site)
    _, s = c.pasv()
    with s:
        started = time.monotonic()
        r = c.cmd(f"{verb} pipe")
        assert time.monotonic() - started < PROMPT
        assert_not_regular(r, verb, site)
    assert_alive(c)
    assert stat.S_ISFIFO(os.lstat(site.path("pipe")).st_mode)
    # the session still transfers ordinary files
    data = site.put("f.bin", size=5000)
    _, got, r226 = c.retr("f.bin")
    assert got == data and r226.code == 226


def test_fifo_with_a_reader_not_written(site):
    """With a reader on the FIFO the open for writing succeeds; the server must still
    refuse it (fstat of the opened descriptor), and write nothing into the pipe."""
    p = make_fifo(site)
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        c = prompt_control(site)
        for verb in ("STOR", "APPE"):
            _, s = c.pasv()
            with s:
                assert_not_regular(c.cmd(f"{verb} pipe"), verb, site)
            assert_alive(c)
        try:
            leaked = os.read(fd, 100)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        os.close(fd)


def test_fifo_hash_refused_promptly(site):
    make_fifo(site)
    c = prompt_control(site)
    assert_not_regular(c.cmd("HASH pipe"), "HASH", site)
    assert_alive(c)


@pytest.mark.parametrize("verb", ["SYNC-TO-CLIENT", "SYNC-TO-SERVER"])
def test_fifo_sync_refused_promptly(site, verb):
    make_fifo(site)
    c = prompt_control(site)
    _, s = c.pasv()
    with s:
        assert_not_regular(c.cmd(f"{verb} pipe"), verb, site)
    assert_alive(c)


def test_fifo_in_listing_unchanged(site):
    """The listing still shows the FIFO (MLSD type facts are not changed)."""
    make_fifo(site)
    site.put("f.bin", size=10)
    c = prompt_control(site)
    r150, data, r226 = c.listing("MLSD")
    assert r150.code == 150 and r226.code == 226
    assert b"; pipe\r\n" in data or b";pipe\r\n" in data or b" pipe\r\n" in data, data


# ------------------------------------------------------------------ archives
@pytest.fixture
def own_site(site_factory, daemon_factory):
    """A site on a daemon of its own: the skip warnings these tests cause stay out
    of the shared daemon's log, which other tests search for "skipped"."""
    return site_factory(daemon=daemon_factory())


def store_archive(site, target, payload):
    c = site.control()
    assert c.cmd("TYPE ARCHIVE").code == 200
    return c, c.stor(target, payload)[1]


def test_archive_hard_link_to_itself_keeps_the_file(own_site):
    data = os.urandom(70_000)
    payload = tar_bytes([file_entry("a", data), hard_link("a", "a")])
    c, r = store_archive(own_site, "t", payload)
    assert r.lines == ["226 File transfer successful"], r
    assert own_site.path("t/a").read_bytes() == data
    assert "hard link to itself" in own_site.daemon.log_text()
    assert_alive(c)


def test_archive_hard_link_onto_the_same_file_keeps_it(own_site):
    """b is already a hard link of a on disk: copying a onto b would truncate a."""
    own_site.mkdir("t")
    own_site.put("t/a", b"old")
    os.link(own_site.path("t/a"), own_site.path("t/b"))
    data = os.urandom(10_000)
    payload = tar_bytes([file_entry("a", data), hard_link("b", "a")])
    _, r = store_archive(own_site, "t", payload)
    assert r.code == 226, r
    assert own_site.path("t/a").read_bytes() == data
    assert own_site.path("t/b").read_bytes() == data


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar")
def test_archive_gnu_tar_duplicate_member(own_site, tmp_path):
    """GNU `tar cf dup.tar a a` stores the second `a` as a hard link to `a`."""
    data = os.urandom(20_000)
    (tmp_path / "a").write_bytes(data)
    subprocess.run(["tar", "cf", "dup.tar", "a", "a"], cwd=tmp_path, check=True)
    _, r = store_archive(own_site, "g", (tmp_path / "dup.tar").read_bytes())
    assert r.code == 226, r
    assert own_site.path("g/a").read_bytes() == data


def test_archive_ending_inside_a_member(site):
    small = b"s" * 1000
    payload = tar_bytes([file_entry("small", small), file_entry("big", os.urandom(100_000))])
    cut = 512 + 1024 + 512 + 4488  # small's header and data, big's header, 4488 bytes
    c, r = store_archive(site, "t", payload[:cut])
    assert r.lines == ["500 Error processing command 'STOR': archive ended inside 'big' "
                       "(4488 of 100000 bytes); 1 file(s) unpacked before"], r
    assert site.path("t/small").read_bytes() == small
    assert not site.path("t/big").exists(), "partial file left behind"
    assert_alive(c)
