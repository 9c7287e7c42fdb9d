"""Archive mode (PROTOCOL.md section 7): TYPE ARCHIVE + STOR <dir> unpacks a tar
stream below <dir> as the session user; hostile entries are refused or
neutralised, reported in the 226 reply and the log, never written outside
the base directory."""

import base64
import io
import os
import socket
import stat
import tarfile
import time

import pytest

from helpers import users as u
from helpers.tarballs import file_entry, tar_bytes


def special(name, kind, **kw):
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info, None


def store_archive(ftp, target, payload):
    assert ftp.sendcmd("TYPE ARCHIVE").startswith("200")
    return ftp.storbinary(f"STOR {target}", io.BytesIO(payload))


def test_unpacks_files_and_directories(site):
    long_name = "deep/" + "x" * 150 + "/file-with-a-long-name.txt"  # GNU long name
    files = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(70_000), long_name: b"long",
             "sub/empty": b""}
    members = [special("sub", tarfile.DIRTYPE, mode=0o755)]
    members += [file_entry(n, d) for n, d in files.items()]
    members.append(file_entry("run.sh", b"#!/bin/sh\n", mode=0o750))
    ftp = site.login()
    reply = store_archive(ftp, "unpacked", tar_bytes(members))
    assert reply == "226 File transfer successful", reply
    log = site.daemon.log_text()
    assert "unpacked 5 file(s), 1 dir(s)" in log and "skipped" not in log, log[-3000:]
    base = site.path("unpacked")
    for name, data in files.items():
        assert (base / name).read_bytes() == data, name
    st = (base / "run.sh").stat()
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert int(st.st_mtime) == 1_600_000_000
    if u.is_root():
        for p in base.rglob("*"):
            assert p.stat().st_uid == site.user.uid, f"{p} not owned by the session user"
    log = site.daemon.log_text()
    assert "USAGE [Received 5 file(s)]" in log


def test_pax_headers(site):
    name = "pax/" + "ü" * 120 + ".txt"  # long UTF-8 name: a pax 'path' record
    payload = tar_bytes([file_entry(name, b"pax data")], fmt=tarfile.PAX_FORMAT)
    reply = store_archive(site.login(), "p", payload)
    assert reply.startswith("226 "), reply
    assert (site.path("p") / name).read_bytes() == b"pax data"


def test_type_normal_stores_the_tar_as_it_is(site):
    payload = tar_bytes([file_entry("a.txt", b"a")])
    ftp = site.login()
    assert ftp.sendcmd("TYPE ARCHIVE").startswith("200")
    assert ftp.sendcmd("TYPE NORMAL").startswith("200")
    ftp.storbinary("STOR plain.tar", io.BytesIO(payload))
    assert site.path("plain.tar").read_bytes() == payload
    # OPTS ARCHIVE true is the other switch
    assert ftp.sendcmd("OPTS ARCHIVE true") == "200 ARCHIVE=true"
    ftp.storbinary("STOR x", io.BytesIO(payload))
    assert site.path("x/a.txt").read_bytes() == b"a"
    assert ftp.sendcmd("OPTS ARCHIVE false") == "200 ARCHIVE=false"


def test_hostile_entries_are_refused_and_reported(site, workdir):
    outside = workdir / "outside"
    outside.mkdir()
    os.chmod(outside, 0o777)  # writable for the session user: only confinement protects it
    site.mkdir("t")
    u.symlink(site.path("t/escape"), str(outside), site.user)  # pre-existing link out of the base
    members = [
        file_entry("ok.txt", b"fine"),
        file_entry("../up.txt", b"evil"),
        file_entry("a/../../up2.txt", b"evil"),
        file_entry(str(outside / "abs.txt"), b"evil"),
        file_entry("escape/through-link.txt", b"evil"),
        special("ln-out", tarfile.SYMTYPE, linkname=str(outside)),
        special("ln-in", tarfile.SYMTYPE, linkname="ok.txt"),
        special("hard-out", tarfile.LNKTYPE, linkname="/etc/passwd"),
        special("hard-up", tarfile.LNKTYPE, linkname="../../../etc/passwd"),
        special("hard-in", tarfile.LNKTYPE, linkname="ok.txt"),
        special("dev", tarfile.CHRTYPE, devmajor=1, devminor=3),
        special("blk", tarfile.BLKTYPE, devmajor=7, devminor=0),
        special("fifo", tarfile.FIFOTYPE),
        file_entry("suid", b"#!/bin/sh\n", mode=0o4755),
        file_entry("sgid", b"x", mode=0o2750),
        file_entry("evil\r\n226 fake reply", b"x"),
    ]
    ftp = site.login()
    reply = store_archive(ftp, "t", tar_bytes(members))
    assert reply == "226 File transfer successful", reply
    assert "unpacked 5 file(s)" in site.daemon.log_text()
    for name, why in [("../up.txt", "'..'"), ("a/../../up2.txt", "'..'"),
                      (str(outside / "abs.txt")[1:], "absolute"),
                      ("ln-out", "symbolic link"), ("ln-in", "symbolic link"),
                      ("hard-out", "outside the archive"), ("hard-up", "outside the archive"),
                      ("dev", "device node"), ("blk", "device node"), ("fifo", "fifo"),
                      ("suid", "setuid/setgid/sticky bits removed"),
                      ("sgid", "setuid/setgid/sticky bits removed")]:
        assert name in site.daemon.log_text(), f"{name} not reported in the log"
    log = site.daemon.log_text()
    assert "escape/through-link.txt' skipped" in log, log[-3000:]
    assert "'..' in the name" in log and "absolute name" in log
    # nothing outside the base, nothing special inside it
    assert list(outside.iterdir()) == []
    assert not (site.base / "up.txt").exists() and not (site.work / "up.txt").exists()
    t = site.path("t")
    assert sorted(p.name for p in t.iterdir()) == sorted(
        ["ok.txt", "escape", "hard-in", "suid", "sgid", "evil\r\n226 fake reply"])
    assert (t / "hard-in").read_bytes() == b"fine" and not (t / "hard-in").is_symlink()
    assert os.stat(t / "hard-in").st_ino != os.stat(t / "ok.txt").st_ino
    for name in ("suid", "sgid"):
        mode = os.stat(t / name).st_mode
        assert mode & 0o7000 == 0, f"{name}: mode {oct(mode)}"
    assert stat.S_IMODE(os.stat(t / "suid").st_mode) == 0o755
    # the session carries on
    assert ftp.sendcmd("NOOP") == "200 OK"


def test_excludes_apply_to_entries(site):
    members = [file_entry("keep.txt", b"k"), file_entry("secret.key", b"s")]
    ftp = site.login(excludes="*.key")
    reply = store_archive(ftp, "e", tar_bytes(members))
    assert reply == "226 File transfer successful", reply
    log = site.daemon.log_text()
    assert "secret.key' skipped" in log and "excluded" in log, log[-3000:]
    assert site.path("e/keep.txt").read_bytes() == b"k"
    assert not site.path("e/secret.key").exists()


def test_read_access_cannot_unpack(site):
    ftp_reply = site.control(access_permissions="READ")
    assert ftp_reply.cmd("TYPE ARCHIVE").code == 200
    _, s = ftp_reply.pasv()
    with s:
        r = ftp_reply.cmd("STOR x")
        assert r.code == 534, r
    assert not site.path("x").exists()


def test_target_that_is_a_file(site):
    site.put("f", data=b"file")
    c = site.control()
    assert c.cmd("TYPE ARCHIVE").code == 200
    _, s = c.pasv()
    with s:
        r = c.cmd("STOR f/inside")
        assert r.code == 550, r
    assert site.path("f").read_bytes() == b"file"


def test_zip_and_compressed_streams_are_refused_clearly(site):
    import gzip
    import zipfile
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("a.txt", "a")
    c = site.control()
    assert c.cmd("TYPE ARCHIVE").code == 200
    for payload, words in [(zbuf.getvalue(), "zip archives are not supported"),
                           (gzip.compress(tar_bytes([file_entry("a", b"a")])), "compressed")]:
        r150, r = c.stor("z", payload)
        assert r.code == 500 and words in r.last, r
    assert list(site.path("z").iterdir()) == []


def test_truncated_archive(site):
    payload = tar_bytes([file_entry("a.txt", b"a" * 5000), file_entry("b.txt", b"b" * 5000)])
    c = site.control()
    assert c.cmd("TYPE ARCHIVE").code == 200
    _, r = c.stor("t", payload[:512 + 5000 + 600])  # second header cut
    assert r.code >= 400 and "after unpacking 1 file(s)" in r.last, r
    assert site.path("t/a.txt").read_bytes() == b"a" * 5000


def test_allo_length_and_keep_alive(site):
    """Java's way: ALLO <n> + STOR over a kept-alive connection; the padding after the
    end-of-archive blocks is read, and the connection carries the next transfer."""
    payload = tar_bytes([file_entry("a.txt", b"abc")])
    assert len(payload) % 10240 == 0  # padded to a full record
    data = site.put("after.bin", size=1000)
    c = site.control()
    assert c.cmd("KEEP-ALIVE true").code == 200
    assert c.cmd("TYPE ARCHIVE").code == 200
    _, s = c.pasv()
    with s:
        assert c.cmd(f"ALLO {len(payload)}").code == 200
        assert c.cmd("STOR k").code == 150
        s.sendall(payload)
        assert c.read_reply().code == 226
        assert c.cmd("TYPE NORMAL").code == 200
        r = c.cmd("RETR after.bin")
        assert r.code == 150
        got = b""
        while len(got) < len(data):
            got += s.recv(65536)
        assert got == data
        assert c.read_reply().code == 226
    assert site.path("k/a.txt").read_bytes() == b"abc"


AES_KEY = base64.b64encode(os.urandom(48)).decode()


@pytest.mark.parametrize("opts,fields", [
    (["-n", "3"], {"streams": "3"}),
    (["-n", "2", "-z", "-E", AES_KEY, "-a", "AES"],
     {"streams": "2", "compress": "true", "algo": "AES", "key": AES_KEY}),
], ids=["3-streams", "2-streams-aes-gzip"])
def test_own_client_multistream_and_codecs(site, workdir, opts, fields):
    import subprocess
    from test_sync import uftpc_bin
    files = {f"d{i}/f{i}.bin": os.urandom(100_000 + i) for i in range(5)}
    tar_path = workdir / "x.tar"
    tar_path.write_bytes(tar_bytes([file_entry(n, d) for n, d in files.items()]))
    secret = site.announce_ok(**fields)
    r = subprocess.run([str(uftpc_bin()), *opts, f"127.0.0.1:{site.port}", secret,
                        "put-archive", str(tar_path), "out"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "unpacked 5 file(s)" in site.daemon.log_text()
    for n, d in files.items():
        assert site.path("out").joinpath(n).read_bytes() == d
