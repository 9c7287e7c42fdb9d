"""File names with CR or LF must not break reply framing (PROTOCOL.md section 5).

Such names cannot be made through FTP (a command argument with a bare CR,
LF or NUL is refused with 501), but they can exist on disk. Wherever uftpd
writes a name or path into a control-channel reply or a listing line, CR
and LF are escaped as the two characters `\\r` and `\\n`, so that:
- a multi-line reply is `<code>-...`, body lines each starting with a space,
  then `<code> ...`, and the next command gets its own reply (the Java
  client ends a reply at the first line starting with the code; its
  readLine also ends a line at a bare CR);
- LIST, NLST and MLSD send exactly one `\\r\\n`-terminated line per entry.
"""

import os

EVIL = "evil\r\n211 End of file list\r\n"
NAMES = {  # name on disk -> how listings show it
    EVIL: "evil\\r\\n211 End of file list\\r\\n",
    "cr\rin": "cr\\rin",
    "lf\nin": "lf\\nin",
    "x\n250 End": "x\\n250 End",
    "plain.txt": "plain.txt",
}


def hostile_dir(site, rel="d"):
    """A directory holding a file for each of NAMES, owned by the site user."""
    for name in NAMES:
        site.put(f"{rel}/{name}", size=5)
    assert sorted(os.listdir(site.path(rel))) == sorted(NAMES)
    return rel


def assert_lines_clean(raw):
    """Every line ends in CRLF; no other CR or LF anywhere."""
    assert raw.endswith(b"\r\n"), raw
    for line in raw[:-2].split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, f"bare CR/LF in {raw!r}"


def assert_single(r, code):
    """A one-line reply with this code and no stray CR/LF."""
    assert r.code == code and len(r.raw_lines) == 1, r
    assert_lines_clean(r.raw)


def assert_multi(r, code, first, last):
    """`<code>-<first>`, body lines each starting with a space, `<code> <last>`."""
    assert_lines_clean(r.raw)
    assert r.lines[0] == f"{code}-{first}", r
    assert r.lines[-1] == f"{code} {last}", r
    for line in r.lines[1:-1]:
        assert line.startswith(" "), f"body line without leading space: {line!r}"
        assert not line.startswith(str(code)), line
    return [line[1:] for line in r.lines[1:-1]]


def assert_in_step(c):
    """The next command gets its own reply: nothing was left over."""
    assert c.cmd("NOOP").lines == ["200 OK"]
    assert c._buf == b"", f"bytes after the NOOP reply: {c._buf!r}"
    assert c.cmd("PWD").code == 257


def listing_lines(c, verb, path):
    r150, data, r226 = c.listing(verb, path)
    assert r150.lines == ["150 OK"], r150
    assert r226.lines == ["226 File transfer successful"], r226
    assert_lines_clean(data)
    return data[:-2].decode().split("\r\n")


# ---------------------------------------------------------------- replies
def test_stat_n_lists_crlf_names_on_one_line_each(site):
    d = hostile_dir(site)
    c = site.control()
    body = assert_multi(c.cmd(f"STAT N {d}"), 211, " Sending file list", "End of file list")
    assert len(body) == len(NAMES), body
    shown = sorted(line.split(" ", 3)[3] for line in body)
    assert shown == sorted(NAMES.values()), body
    for line in body:
        assert line.startswith("-rw- 5 "), line
    assert_in_step(c)


def test_stat_n_in_cwd_then_more_commands(site):
    d = hostile_dir(site)
    c = site.control()
    assert c.cmd(f"CWD {d}").lines == ["200 OK"]
    for _ in range(2):
        body = assert_multi(c.cmd("STAT N"), 211, " Sending file list", "End of file list")
        assert len(body) == len(NAMES), body
        assert c.cmd("NOOP 2").lines == ["222 Opening 2 data connections"]


def test_base_with_cr_in_pwd_stat_f_mlst_hash(site):
    """A base directory whose name has a CR: 257, STAT F, MLST and HASH quote it escaped."""
    site.put("we\rird/f.txt", data=b"hello")
    base = f"{site.base}/we\rird"
    shown = f"{site.base}/we\\rird"
    c = site.control(file=base + "/")
    pwd = c.cmd("PWD")
    assert_single(pwd, 257)
    assert pwd.lines == [f'257 "{shown}"']
    body = assert_multi(c.cmd("STAT F ."), 211, " Sending file list", "End of file list")
    assert len(body) == 1 and body[0].startswith("d") and body[0].endswith(" we\\rird"), body
    mlst = c.cmd("MLST .")
    body = assert_multi(mlst, 250, f" Listing {shown}", "End")
    assert len(body) == 1 and body[0].endswith("; we\\rird"), body
    h = c.cmd("HASH f.txt")
    assert_single(h, 213)
    assert h.lines == [f"213 MD5 0-4 5d41402abc4b2a76b9719d911017c592 {shown}/f.txt"]
    assert_single(c.cmd("STAT F no-such-file"), 550)
    assert_single(c.cmd("RMD ."), 534)  # quotes nothing, but stays one line
    assert_in_step(c)


# ---------------------------------------------------------------- data channel
def test_list_nlst_mlsd_one_line_per_entry(site):
    d = hostile_dir(site)
    c = site.control()
    ls = listing_lines(c, "LIST", d)
    assert len(ls) == len(NAMES), ls
    for name in NAMES.values():
        assert [line for line in ls if line.endswith(" " + name)], (name, ls)
    assert sorted(listing_lines(c, "NLST", d)) == sorted(NAMES.values())
    mlsd = listing_lines(c, "MLSD", d)
    assert sorted(line.split("; ", 1)[1] for line in mlsd) == sorted(NAMES.values()), mlsd
    for line in mlsd:
        assert line.startswith("size=5;modify="), line
    assert_in_step(c)


def test_list_with_ftplib(site):
    """A line-based client sees one entry per name."""
    d = hostile_dir(site)
    ftp = site.login()
    lines = []
    ftp.retrlines(f"LIST {d}", lines.append)
    assert len(lines) == len(NAMES), lines
    entries = dict(ftp.mlsd(d))
    assert sorted(entries) == sorted(NAMES.values()), entries
    assert ftp.voidcmd("NOOP").startswith("200")


# ---------------------------------------------------------------- commands
def test_mkd_with_bare_cr_refused(site):
    site.mkdir("nl")
    c = site.control()
    r = c.cmd("MKD nl/cr\rin")
    assert_single(r, 501)
    assert os.listdir(site.path("nl")) == []
    r = c.cmd("MKD nl/nul\0in")
    assert_single(r, 501)
    assert os.listdir(site.path("nl")) == []
    assert c.cmd("MKD nl/ok").lines == [f'257 "{site.base}/nl/ok" directory created']
    assert_in_step(c)


def test_stor_with_bare_cr_refused(site):
    c = site.control()
    _, data_sock = c.pasv()
    with data_sock:
        r = c.cmd("STOR up\rload.txt")
        assert_single(r, 501)
    assert os.listdir(site.base) == []
    assert_in_step(c)
    r150, r226 = c.stor("upload.txt", b"fine")
    assert r150.code == 150 and r226.code == 226, (r150, r226)
    assert site.path("upload.txt").read_bytes() == b"fine"


def test_rename_to_bare_cr_refused(site):
    site.put("a.txt", data=b"a")
    c = site.control()
    assert c.cmd("RNFR a.txt").code == 350
    r = c.cmd("RNTO b\r211 End of file list")
    assert_single(r, 501)
    assert os.listdir(site.base) == ["a.txt"]
    assert_in_step(c)


def test_retr_and_stat_of_crlf_name_refused(site):
    """An existing name with a CR cannot be addressed: 501, no bare CR quoted back."""
    hostile_dir(site)
    c = site.control()
    for cmd in ("STAT F d/cr\rin", "MLST d/cr\rin", "SIZE d/cr\rin", "DELE d/cr\rin",
                "CWD d/cr\rin"):
        assert_single(c.cmd(cmd), 501)
    _, data_sock = c.pasv()
    with data_sock:
        assert_single(c.cmd("RETR d/cr\rin"), 501)
    assert sorted(os.listdir(site.path("d"))) == sorted(NAMES)
    assert_in_step(c)


def test_error_reply_cannot_quote_a_bare_cr(site):
    """Arguments quoted back in error replies (here OPTS) cannot start a new line."""
    c = site.control()
    assert_single(c.cmd("OPTS HASH x\r200 MD5"), 501)
    assert_single(c.cmd("OPTS BUFFER_SIZE 1\r211 END"), 501)
    assert c.cmd("OPTS HASH").lines == ["200 MD5"]
    assert_in_step(c)


def test_listing_of_crlf_names_keeps_data_channel_usable(site):
    """After a hostile LIST, a plain transfer on a new data channel works."""
    d = hostile_dir(site)
    site.put("after.bin", data=b"x" * 1000)
    c = site.control()
    assert len(listing_lines(c, "LIST", d)) == len(NAMES)
    r150, data, r226 = c.retr("after.bin")
    assert data == b"x" * 1000 and r226.code == 226
    assert_in_step(c)
