"""FTP commands after login that do not move file data (PROTOCOL.md section 5):
FEAT, NOOP n, navigation, directory and file management, listings, MFMT/MFF,
TYPE, OPTS, HASH, RANG/REST/ALLO replies."""

import calendar
import hashlib
import os
import re
import stat
import time

import pytest


FEATURES = ["PASV", "EPSV", "RANG STREAM", "REST STREAM", "MFMT", "MLSD", "MLST", "APPE",
            "MFF Modify;UNIX.mode;", "KEEP-ALIVE", "ARCHIVE", "UTF-8"]
HASH_ALGOS = ["MD5", "SHA-1", "SHA-256", "SHA-512"]
HASHLIB = {"MD5": hashlib.md5, "SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256,
           "SHA-512": hashlib.sha512}


def feat_lines(c):
    r = c.cmd("FEAT")
    assert r.lines[0] == "211-Features:", r
    assert r.lines[-1] == "211 END", r
    body = r.lines[1:-1]
    for line in body:
        assert line.startswith(" "), f"feature line without leading space: {line!r}"
    return [line.strip() for line in body]


def hash_feature(current):
    return "HASH " + ";".join(a + ("*" if a == current else "") for a in HASH_ALGOS)


def mlst_facts(stat_result, perm_owner_bits=True):
    """Expected facts for a path owned by the session user."""
    mode = stat_result.st_mode
    is_dir = stat.S_ISDIR(mode)
    perm = ""
    if mode & stat.S_IRUSR:
        perm += "l" if is_dir else "r"
    if mode & stat.S_IWUSR:
        perm += "w"
    if mode & stat.S_IXUSR:
        perm += "e" if is_dir else "x"
    return (f"size={stat_result.st_size};"
            f"modify={time.strftime('%Y%m%d%H%M%S', time.localtime(stat_result.st_mtime))};"
            f"type={'dir' if is_dir else 'file'};perm={perm};UNIX.mode={oct(mode)[2:]};")


def simple_line_re(st, name):
    kind = "d" if stat.S_ISDIR(st.st_mode) else "-"
    m = st.st_mode
    perms = ("r" if m & stat.S_IRUSR else "-") + ("w" if m & stat.S_IWUSR else "-") + \
            ("x" if m & stat.S_IXUSR else "-")
    return kind + perms, st.st_size, name


def check_simple_line(line, path, name):
    """`<d|-><r|-><w|-><x|-> <size> <mtime ms> <name>`."""
    st = os.stat(path)
    flags, size, _ = simple_line_re(st, name)
    m = re.fullmatch(r"([d-][r-][w-][x-]) (\d+) (\d+) (.+)", line)
    assert m, f"bad STAT line {line!r}"
    assert m.group(1) == flags and int(m.group(2)) == size and m.group(4) == name, \
        (line, flags, size, name)
    assert abs(int(m.group(3)) - st.st_mtime * 1000) < 1000, (line, st.st_mtime)


# ---------------------------------------------------------------- FEAT, NOOP
def test_feat_essentials(site):
    """What the Java client needs: PASV, a HASH line with '*', never RFC_RANG."""
    feats = feat_lines(site.control())
    assert "PASV" in feats and "EPSV" in feats, feats
    assert hash_feature("MD5") in feats, feats
    assert not [f for f in feats if f.startswith("RFC_RANG")], feats
    assert not [f for f in feats if f.startswith("CRYPTED-")], "unencrypted session lists CRYPTED"


@pytest.mark.beyond_reference  # the reference glues "REST STREAMMFMT" and "...;KEEP-ALIVE"
def test_feat_lists_every_feature_on_its_own_line(site):
    feats = feat_lines(site.control())
    missing = [f for f in FEATURES if f not in feats]
    assert not missing, f"missing features {missing} in {feats}"


def test_noop(site):
    assert site.control().cmd("NOOP").lines == ["200 OK"]


def test_noop_streams_capped_by_max_streams(site):
    c = site.control()
    assert c.cmd("NOOP 2").lines == ["222 Opening 2 data connections"]
    assert c.cmd("NOOP 9").lines == ["223 Opening 4 data connections"]  # default MAX_STREAMS=4
    assert c.cmd("NOOP 4").lines == ["222 Opening 4 data connections"]
    assert c.cmd("NOOP 1").lines == ["222 Opening 1 data connections"]


def test_noop_streams_with_max_streams_2(daemon_factory, site_factory):
    c = site_factory(daemon=daemon_factory(MAX_STREAMS=2)).control()
    r = c.cmd("NOOP 3")
    assert r.lines == ["223 Opening 2 data connections"]
    assert int(r.last.split(" ")[2]) == 2  # how Java reads it


# ---------------------------------------------------------------- navigation
def test_pwd_cwd_cdup(site):
    site.mkdir("sub/deeper")
    c = site.control()
    assert c.cmd("CWD sub").lines == ["200 OK"]
    assert c.cmd("PWD").lines == [f'257 "{site.base}/sub"']
    assert c.cmd("CWD deeper").lines == ["200 OK"]
    assert c.cmd("PWD").lines == [f'257 "{site.base}/sub/deeper"']
    assert c.cmd("CDUP").lines == ["200 OK"]
    assert c.cmd("PWD").lines == [f'257 "{site.base}/sub"']
    assert c.cmd(f"CWD {site.base}/sub/deeper").lines == ["200 OK"]  # absolute inside base
    assert c.cmd("CWD ..").lines == ["200 OK"]
    assert c.cmd("CWD ..").lines == ["200 OK"]
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']


def test_cdup_at_base_is_534(site):
    c = site.control()
    r = c.cmd("CDUP")
    assert r.code == 534 and r.last.startswith("534 Error processing command 'CDUP': "), r
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']


def test_cwd_missing_is_550(site):
    site.put("plain-file", size=10)
    c = site.control()
    for target in ("no-such-dir", "plain-file"):
        r = c.cmd(f"CWD {target}")
        assert r.code == 550 and r.last.startswith("550 Error processing command 'CWD': "), r
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']


def test_ftplib_navigation(site):
    site.mkdir("d1")
    ftp = site.login()
    assert ftp.pwd() == str(site.base)
    ftp.cwd("d1")
    assert ftp.pwd() == f"{site.base}/d1"
    ftp.cwd("..")
    assert ftp.pwd() == str(site.base)


# ---------------------------------------------------------------- MKD, DELE, RMD, rename
def test_mkd(site):
    c = site.control()
    assert c.cmd("MKD newdir").lines == [f'257 "{site.base}/newdir" directory created']
    assert site.path("newdir").is_dir()
    assert c.cmd(f"MKD {site.base}/newdir/abs").lines == [
        f'257 "{site.base}/newdir/abs" directory created']
    assert site.path("newdir/abs").is_dir()
    st = os.stat(site.path("newdir"))
    assert (st.st_uid, st.st_gid) == (site.user.uid, site.user.gid)


def test_mkd_existing_is_error(site):
    site.mkdir("there")
    r = site.control().cmd("MKD there")
    assert 500 <= r.code < 600 and r.last.startswith(f"{r.code} Error processing command 'MKD': "), r


def test_dele(site):
    site.put("victim.txt", size=10)
    c = site.control()
    assert c.cmd("DELE victim.txt").lines == ["200 OK"]
    assert not site.path("victim.txt").exists()


def test_rmd(site):
    site.mkdir("emptydir")
    site.put("full/f.txt", size=10)
    c = site.control()
    assert c.cmd("RMD emptydir").lines == ["200 OK"]
    assert not site.path("emptydir").exists()
    r = c.cmd("RMD full")
    assert 500 <= r.code < 600, r
    assert site.path("full/f.txt").exists()


def test_rename(site):
    data = site.put("old.txt", size=333)
    site.mkdir("into")
    c = site.control()
    assert c.cmd("RNFR old.txt").lines == ["350 File action OK Please send rename-to"]
    assert c.cmd("RNTO into/new.txt").lines == ["200 OK"]
    assert not site.path("old.txt").exists()
    assert site.path("into/new.txt").read_bytes() == data


@pytest.mark.beyond_reference  # the reference crashes with 500 (uninitialised state)
def test_rnto_without_rnfr_is_503(site):
    site.put("a.txt", size=5)
    c = site.control()
    r = c.cmd("RNTO b.txt")
    assert r.code == 503, r
    assert site.path("a.txt").exists() and not site.path("b.txt").exists()


def test_ftplib_file_management(site):
    site.put("f.txt", size=20)
    ftp = site.login()
    assert ftp.mkd("made") == f"{site.base}/made"
    ftp.rename("f.txt", "made/g.txt")
    assert dict(ftp.mlsd("made"))["g.txt"]["size"] == "20"
    ftp.delete("made/g.txt")
    ftp.rmd("made")
    assert not site.path("made").exists()


@pytest.mark.parametrize("command", [
    "SIZE nope", "MLST nope", "RETR nope", "HASH nope", "CWD nope",
    pytest.param("DELE nope", marks=pytest.mark.beyond_reference),
    pytest.param("RMD nope", marks=pytest.mark.beyond_reference),
    pytest.param("STAT F nope", marks=pytest.mark.beyond_reference),
])
def test_missing_file_is_550(site, command):
    c = site.control()
    r = c.cmd(command)
    verb = command.split()[0]
    assert r.code == 550 and r.last.startswith(f"550 Error processing command '{verb}': "), r


# ---------------------------------------------------------------- SIZE, MLST, STAT
@pytest.mark.beyond_reference  # the reference's SIZE always fails (bad keyword argument)
def test_size(site):
    site.put("s.bin", size=12345)
    site.put("empty", data=b"")
    c = site.control()
    assert c.cmd("SIZE s.bin").lines == ["213 12345"]
    assert c.cmd("SIZE empty").lines == ["213 0"]


def test_mlst_file(site):
    site.put("m.txt", size=4321, mode=0o640)
    r = site.control().cmd("MLST m.txt")
    assert len(r.lines) == 3, f"MLST must be exactly three lines: {r}"
    assert r.lines[0].startswith("250- Listing "), r
    assert r.lines[2] == "250 End", r
    assert r.lines[1] == " " + mlst_facts(os.stat(site.path("m.txt"))) + " m.txt", r


def test_mlst_dir(site):
    site.mkdir("dd", mode=0o750)
    r = site.control().cmd("MLST dd")
    assert len(r.lines) == 3, r
    assert r.lines[1] == " " + mlst_facts(os.stat(site.path("dd"))) + " dd", r
    # as Java splits it: facts, then the name after the first space
    facts, name = r.lines[1].strip().split(" ", 1)
    assert name == "dd" and "type=dir" in facts.split(";")


def test_stat_file_and_dir(site):
    site.put("one.txt", size=11)
    site.put("two.bin", size=2222, mode=0o600)
    site.mkdir("three")
    c = site.control()
    r = c.cmd("STAT F one.txt")
    assert r.lines[0] == "211- Sending file list" and r.lines[-1] == "211 End of file list", r
    assert len(r.lines) == 3, r
    assert r.lines[1].startswith(" ")
    check_simple_line(r.lines[1][1:], site.path("one.txt"), "one.txt")
    r = c.cmd("STAT N .")
    assert r.lines[0] == "211- Sending file list" and r.lines[-1] == "211 End of file list", r
    body = sorted(r.lines[1:-1], key=lambda l: l.split(" ")[-1])
    names = [l.split(" ")[-1] for l in body]
    assert names == ["one.txt", "three", "two.bin"], r
    for line, name in zip(body, names):
        assert line.startswith(" ")
        check_simple_line(line[1:], site.path(name), name)


def test_stat_n_of_cwd(site):
    site.put("x1", size=1)
    site.put("sub/x2", size=2)
    c = site.control()
    assert c.cmd("CWD sub").code == 200
    r = c.cmd("STAT N")
    assert [l.split(" ")[-1] for l in r.lines[1:-1]] == ["x2"], r


# ---------------------------------------------------------------- LIST, MLSD
LIST_RE = re.compile(r"([d-])([r-][w-][x-])[r-][w-][x-][r-][w-][x-] +(\d+) +\S+ +\S+ +(\d+) +"
                     r"([A-Z][a-z]{2} +\d{1,2} +(?:\d{2}:\d{2}|\d{4})) (.+)")


def test_list(site):
    site.put("l1.txt", size=10)
    site.put("l2.bin", size=20000)
    site.mkdir("ldir")
    c = site.control()
    r150, data, r226 = c.listing("LIST")
    assert r150.lines == ["150 OK"], r150
    assert r226.lines == ["226 File transfer successful"], r226
    lines = [l.rstrip("\r") for l in data.decode().split("\n") if l.strip()]
    parsed = {}
    for line in lines:
        m = LIST_RE.fullmatch(line)
        assert m, f"LIST line not ls-style: {line!r}"
        parsed[m.group(6)] = (m.group(1), int(m.group(4)))
    assert parsed == {"l1.txt": ("-", 10), "l2.bin": ("-", 20000),
                      "ldir": ("d", os.stat(site.path("ldir")).st_size)}, lines


def test_list_of_path_and_ftplib(site):
    site.put("sub/a.txt", size=5)
    site.put("sub/b.txt", size=6)
    ftp = site.login()
    lines = []
    ftp.retrlines("LIST sub", lines.append)
    names = sorted(LIST_RE.fullmatch(l.rstrip("\r")).group(6) for l in lines)
    assert names == ["a.txt", "b.txt"], lines


def test_mlsd(site):
    site.put("m1.txt", size=100)
    site.mkdir("m2")
    c = site.control()
    r150, data, r226 = c.listing("MLSD")
    assert r150.lines == ["150 OK"], r150
    assert r226.lines == ["226 File transfer successful"], r226
    lines = sorted(l.rstrip("\r") for l in data.decode().split("\n") if l.strip())
    expected = sorted([mlst_facts(os.stat(site.path("m1.txt"))) + " m1.txt",
                       mlst_facts(os.stat(site.path("m2"))) + " m2"])
    assert lines == expected


def test_mlsd_ftplib(site):
    site.put("dir/x.bin", size=77)
    ftp = site.login()
    entries = dict(ftp.mlsd("dir"))
    assert list(entries) == ["x.bin"]
    assert entries["x.bin"]["size"] == "77" and entries["x.bin"]["type"] == "file"


def test_listing_missing_dir(site):
    c = site.control()
    r, _, _ = c.listing("MLSD", "no-such-dir")
    assert r.code == 550, r
    assert c.cmd("NOOP").lines == ["200 OK"]


# ---------------------------------------------------------------- MFMT, MFF, TYPE
def test_mfmt(site):
    site.put("t.txt", size=3)
    c = site.control()
    assert c.cmd("MFMT 20200102030405 t.txt").lines == ["213 Modify=20200102030405; t.txt"]
    expected = time.mktime(time.strptime("20200102030405", "%Y%m%d%H%M%S"))
    assert os.stat(site.path("t.txt")).st_mtime == expected
    r = c.cmd("MLST t.txt")
    assert ";modify=20200102030405;" in r.lines[1], r


def test_mff(site):
    site.put("p.txt", size=3, mode=0o644)
    c = site.control()
    assert c.cmd("MFF Modify=20210203040506;UNIX.mode=640; p.txt").lines == [
        "213 Modify=20210203040506;UNIX.mode=640; p.txt"]
    st = os.stat(site.path("p.txt"))
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime == time.mktime(time.strptime("20210203040506", "%Y%m%d%H%M%S"))


@pytest.mark.parametrize("arg", ["I", "A", "NORMAL"])
def test_type(site, arg):
    assert site.control().cmd(f"TYPE {arg}").lines == ["200 OK"]


def test_epsv_all(site):
    assert site.control().cmd("EPSV ALL").lines == ["200 OK"]


# ---------------------------------------------------------------- RANG, REST, ALLO replies
def test_rang_rest_allo_replies(site):
    c = site.control()
    assert c.cmd("RANG 10 20").lines == ["350 Restarting at 10. End byte range at 20"]
    assert c.cmd("RANG 1 0").lines == ["350 Resetting range"]
    assert c.cmd("REST 5").lines == ["350 Restarting at 5."]
    assert c.cmd("ALLO 123").lines == ["200 OK Will read up to 123 bytes from data connection."]
    r = c.cmd("RANG x y")
    assert r.code == 501, r
    r = c.cmd("REST abc")
    assert r.code == 501, r


# ---------------------------------------------------------------- OPTS
@pytest.mark.beyond_reference  # the reference fails on OPTS without arguments
def test_opts_list(site):
    r = site.control(rateLimit="123456").cmd("OPTS")
    assert r.lines[0] == "211-OPTS" and r.lines[-1] == "211 END", r
    opts = {}
    for line in r.lines[1:-1]:
        m = re.fullmatch(r" ([A-Z_]+) (\S+)", line)
        assert m, f"bad OPTS line {line!r}"
        opts[m.group(1)] = m.group(2)
    assert opts.get("HASH") == "MD5", opts
    assert opts.get("RATE_LIMIT") == "123456", opts


@pytest.mark.beyond_reference  # the reference answers with the option list
def test_opts_hash_query(site):
    c = site.control()
    assert c.cmd("OPTS HASH").lines == ["200 MD5"]
    c.cmd("OPTS HASH SHA-512")
    assert c.cmd("OPTS HASH").lines == ["200 SHA-512"]


def test_opts_hash_set(site):
    c = site.control()
    assert c.cmd("OPTS HASH SHA-256").lines == ["200 HASH=SHA-256"]
    assert hash_feature("SHA-256") in feat_lines(c)


def test_opts_unknown_and_bad_values(site):
    c = site.control()
    r = c.cmd("OPTS NO_SUCH_OPTION 1")
    assert r.code == 500 and r.last.startswith("500 Error processing command 'OPTS': "), r
    # a known option with a bad value: PROTOCOL.md is silent on the code (reference: 500)
    r = c.cmd("OPTS HASH CRC32")
    assert r.code in (500, 501) and r.last.startswith(f"{r.code} Error processing command 'OPTS': "), r
    assert hash_feature("MD5") in feat_lines(c), "a refused OPTS HASH changed the algorithm"
    assert c.cmd("NOOP").lines == ["200 OK"]


@pytest.mark.beyond_reference  # the reference fails on OPTS without arguments
def test_opts_rate_limit_only_lowered(site):
    c = site.control(rateLimit="1000000")
    assert c.cmd("OPTS RATE_LIMIT 5000000").code == 200
    assert " RATE_LIMIT 1000000" in c.cmd("OPTS").lines
    assert c.cmd("OPTS RATE_LIMIT 500000").lines == ["200 RATE_LIMIT=500000"]
    assert " RATE_LIMIT 500000" in c.cmd("OPTS").lines


# ---------------------------------------------------------------- HASH
def test_hash_all_algorithms(site):
    data = site.put("sub/h.bin", size=200_003)
    c = site.control()
    for algo in HASH_ALGOS:
        assert c.cmd(f"OPTS HASH {algo}").lines == [f"200 HASH={algo}"]
        r = c.cmd("HASH sub/h.bin")
        expected = f"213 {algo} 0-{len(data) - 1} {HASHLIB[algo](data).hexdigest()} {site.base}/sub/h.bin"
        assert r.lines == [expected], r
        assert len(r.last.split(" ")) == 5  # how Java splits it


def test_hash_with_range(site):
    data = site.put("h.bin", size=50_000)
    c = site.control()
    assert c.cmd("OPTS HASH SHA-256").code == 200
    assert c.cmd("RANG 100 1100").code == 350
    r = c.cmd("HASH h.bin")
    assert r.lines == [f"213 SHA-256 100-1099 {hashlib.sha256(data[100:1100]).hexdigest()} "
                       f"{site.base}/h.bin"], r
    # the range applied to one command only
    r = c.cmd("HASH h.bin")
    assert r.lines == [f"213 SHA-256 0-49999 {hashlib.sha256(data).hexdigest()} {site.base}/h.bin"], r


def test_hash_with_rest(site):
    data = site.put("h.bin", size=5000)
    c = site.control()
    assert c.cmd("REST 1000").code == 350
    r = c.cmd("HASH h.bin")
    assert r.lines == [f"213 MD5 1000-4999 {hashlib.md5(data[1000:]).hexdigest()} {site.base}/h.bin"], r


@pytest.mark.parametrize("key_bytes,algo,expected", [
    (48, "AES", "CRYPTED-AES"),
    (16, "BLOWFISH", "CRYPTED-BLOWFISH"),
    (48, None, "CRYPTED-AES"),       # no algo: 32/40/48 bytes are AES
    (20, None, "CRYPTED-BLOWFISH"),  # else BLOWFISH
])
def test_feat_lists_cipher_of_encrypted_session(site, reference, key_bytes, algo, expected):
    import base64
    key = base64.b64encode(os.urandom(key_bytes)).decode()
    secret = site.new_secret()
    reply = site.announce(secret=secret, key=key, algo=algo)
    if reference and reply.startswith("ERROR::"):
        pytest.skip(f"reference without its crypto package: {reply}")
    assert reply == site.ok, reply
    feats = feat_lines(site.control(secret))
    assert expected in feats, feats
    assert len([f for f in feats if f.startswith("CRYPTED-")]) == 1, feats


# ---------------------------------------------------------------- local time
IST = 5 * 3600 + 1800  # Asia/Kolkata: UTC+5:30, no DST


@pytest.mark.skipif(not os.path.exists("/usr/share/zoneinfo/Asia/Kolkata"), reason="no tzdata")
def test_listing_times_are_local_time(daemon_factory, site_factory):
    """MLST/MLSD modify and LIST dates are in the daemon's local time (TZ)."""
    site = site_factory(daemon=daemon_factory(env={"TZ": "Asia/Kolkata"}))
    site.put("t.txt", size=5)
    mtime = 1_700_000_000  # 2023-11-14 22:13:20 UTC = 2023-11-15 03:43:20 IST
    os.utime(site.path("t.txt"), (mtime, mtime))
    c = site.control()
    r = c.cmd("MLST t.txt")
    assert ";modify=20231115034320;" in r.lines[1], r
    _, data, _ = c.listing("LIST")
    assert " Nov 15 2023 t.txt" in data.decode() or " Nov 15  2023 t.txt" in data.decode(), data
    # MFMT takes local time too (the reference uses mktime)
    assert c.cmd("MFMT 20200102030405 t.txt").code == 213
    utc = calendar.timegm(time.strptime("20200102030405", "%Y%m%d%H%M%S"))
    assert os.stat(site.path("t.txt")).st_mtime == utc - IST, \
        f"MFMT set {os.stat(site.path('t.txt')).st_mtime}, expected {utc - IST} (local IST)"
    r = c.cmd("MLST t.txt")
    assert ";modify=20200102030405;" in r.lines[1], r
