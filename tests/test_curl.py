"""curl as an unmodified FTP client (PROTOCOL.md: plain FTP clients work
unchanged). Every transfer is compared byte for byte."""

import os
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def curl(site, secret, urlpath, *args, out=None):
    """Run curl against the site; returns (stdout bytes, verbose log)."""
    argv = ["curl", "-sS", "-v", "--max-time", "60", "-u", f"anonymous:{secret}",
            *args, f"ftp://127.0.0.1:{site.port}/{urlpath}"]
    if out:
        argv[1:1] = ["-o", str(out)]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
    log = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, f"curl exit {p.returncode}: {' '.join(argv)}\n{log[-4000:]}"
    return p.stdout, log


def test_download(site):
    data = site.put("file.bin", size=2 * 1024 * 1024 + 7)
    got, _ = curl(site, site.announce_ok(), "file.bin")
    assert got == data


def test_download_from_subdir_with_pasv(site):
    data = site.put("a/b/file.bin", size=100_000)
    got, log = curl(site, site.announce_ok(), "a/b/file.bin", "--disable-epsv")
    assert got == data
    assert "PASV" in log


def test_download_to_file(site):
    data = site.put("file.bin", size=333_333)
    out = site.work / "out.bin"
    curl(site, site.announce_ok(), "file.bin", out=out)
    assert out.read_bytes() == data


def test_upload(site):
    data = os.urandom(1_500_001)
    src = site.work / "src.bin"
    src.write_bytes(data)
    curl(site, site.announce_ok(), "up.bin", "-T", str(src))
    assert site.path("up.bin").read_bytes() == data


def test_upload_into_subdir_overwrites(site):
    site.put("sub/up.bin", size=5_000_000)
    data = os.urandom(1000)
    src = site.work / "src.bin"
    src.write_bytes(data)
    curl(site, site.announce_ok(), "sub/up.bin", "-T", str(src))
    assert site.path("sub/up.bin").read_bytes() == data


def test_ranged_download(site):
    data = site.put("file.bin", size=10_000)
    got, _ = curl(site, site.announce_ok(), "file.bin", "-r", "100-199")
    assert got == data[100:200]


def test_resumed_download(site):
    data = site.put("file.bin", size=10_000)
    got, _ = curl(site, site.announce_ok(), "file.bin", "-r", "9000-")
    assert got == data[9000:]


LIST_NAME = re.compile(r"^[d-][r-][w-][x-]\S* +\d+ +\S+ +\S+ +(\d+) +\S+ +\S+ +\S+ (.+)$")


def test_directory_listing(site):
    site.put("dir/one.txt", size=11)
    site.put("dir/two.bin", size=22222)
    site.mkdir("dir/three")
    got, _ = curl(site, site.announce_ok(), "dir/")
    entries = {}
    for line in got.decode().splitlines():
        m = LIST_NAME.match(line.rstrip("\r"))
        assert m, f"not an ls line: {line!r}"
        entries[m.group(2)] = (line[0], int(m.group(1)))
    assert entries == {"one.txt": ("-", 11), "two.bin": ("-", 22222),
                       "three": ("d", os.stat(site.path("dir/three")).st_size)}, got


@pytest.mark.beyond_reference  # the reference has no NLST (502)
def test_names_only_listing(site):
    """curl -l sends NLST, which PROTOCOL.md section 5's table does not list:
    plain FTP clients must work unchanged, so uftpd needs it anyway."""
    site.put("dir/one.txt", size=1)
    site.put("dir/two.bin", size=2)
    got, _ = curl(site, site.announce_ok(), "dir/", "-l")
    assert sorted(l.rstrip("\r") for l in got.decode().splitlines()) == ["one.txt", "two.bin"], got


def test_persistent_secret_several_curl_runs(site):
    data = site.put("file.bin", size=50_000)
    secret = site.announce_ok(persistent="true")
    for _ in range(3):
        assert curl(site, secret, "file.bin")[0] == data
