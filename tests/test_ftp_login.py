"""FTP greeting, login and session framing (PROTOCOL.md section 5, first part)."""

import re

import pytest

from helpers.users import needs_root


def test_greeting_format(site):
    c = site.connect()
    assert re.fullmatch(r"220 UFTPD [^,\s]+, \S+", c.greeting.last), c.greeting


@pytest.mark.beyond_reference  # the reference says "UFTPD DEV"
def test_greeting_version_parses_like_pyuftp(site):
    c = site.connect()
    m = re.match(r"220 UFTPD (.*),", c.greeting.last)  # pyuftp's expression
    assert m, c.greeting
    parts = [int(x) for x in m.group(1).split(".")]  # pyuftp splits on dots into ints
    assert len(parts) == 3, c.greeting


@pytest.mark.beyond_reference  # the reference ends lines with a bare \n
def test_reply_lines_end_with_crlf(site):
    secret = site.announce_ok()
    c = site.connect()
    replies = [c.greeting, c.cmd("SYST"), c.cmd("USER anonymous"), c.cmd(f"PASS {secret}"),
               c.cmd("FEAT"), c.cmd("PWD"), c.cmd("NOOP"), c.cmd("RETR no-such-file")]
    for r in replies:
        for line in r.raw_lines:
            assert line.endswith(b"\r\n"), f"line without CRLF: {line!r} in {r}"


def test_syst_before_login(site):
    secret = site.announce_ok()
    c = site.connect()
    assert c.cmd("SYST").lines == ["215 Unix Type: L8"]
    assert c.cmd("USER anonymous").lines == ["331 Please specify the password"]
    assert c.cmd(f"PASS {secret}").lines == ["230 Login successful"]


def test_login_user_then_pass(site):
    secret = site.announce_ok()
    c = site.connect()
    assert c.cmd("USER anonymous").lines == ["331 Please specify the password"]
    assert c.cmd(f"PASS {secret}").lines == ["230 Login successful"]
    assert c.cmd("NOOP").lines == ["200 OK"]


def test_login_second_user_carries_secret(site):
    secret = site.announce_ok()
    c = site.connect()
    assert c.cmd("USER anonymous").code == 331
    assert c.cmd(f"USER {secret}").lines == ["230 Login successful"]
    assert c.cmd("NOOP").lines == ["200 OK"]


def test_ftplib_login(site):
    ftp = site.login()
    assert ftp.getwelcome().startswith("220 UFTPD ")
    assert ftp.pwd() == str(site.base)


def test_pass_anonymous_is_protocol_error(site):
    site.announce_ok()
    c = site.connect()
    assert c.cmd("USER anonymous").code == 331
    assert c.cmd("PASS anonymous").lines == ["500 Protocol error"]
    assert c.closed(), "connection not closed after protocol error"


@pytest.mark.parametrize("first", ["NOOP", "PWD", "PASS secret", "RETR x", "FEAT"])
def test_command_before_user_is_protocol_error(site, first):
    c = site.connect()
    assert c.cmd(first).lines == ["500 Protocol error"]
    assert c.closed(), "connection not closed after protocol error"


def test_unknown_secret(site):
    c = site.connect()
    assert c.cmd("USER anonymous").code == 331
    assert c.cmd("PASS " + site.new_secret()).lines == [
        "530 Not logged in: no matching transfer request found"]


def test_client_ip_mismatch_is_refused_and_closed(site):
    secret = site.announce_ok(client_ip="10.9.9.9")
    c = site.connect()
    assert c.cmd("USER anonymous").code == 331
    r = c.cmd(f"PASS {secret}")
    assert r.code == 500 and len(r.text) > 0, r
    assert c.closed(), "connection not closed after client-ip mismatch"


def test_client_ip_list(site):
    c = site.control(client_ip="10.9.9.9,127.0.0.1")
    assert c.cmd("NOOP").code == 200


@pytest.mark.beyond_reference  # the reference compares strings
def test_client_ip_old_sender_form(site):
    c = site.control(client_ip="localhost/127.0.0.1")
    assert c.cmd("NOOP").code == 200


def test_disable_ip_check(daemon_factory, site_factory):
    s = site_factory(daemon=daemon_factory(DISABLE_IP_CHECK="true"))
    c = s.control(client_ip="10.9.9.9")
    assert c.cmd("NOOP").lines == ["200 OK"]


def test_one_time_secret_refused_while_session_runs(site):
    secret = site.announce_ok(persistent="false")
    first = site.control(secret)
    second = site.connect()
    assert second.cmd("USER anonymous").code == 331
    assert second.cmd(f"PASS {secret}").lines == [
        "500 Session for these credentials is already running"]
    assert first.cmd("NOOP").lines == ["200 OK"], "first session broken by the second login"


def test_one_time_secret_not_reusable_after_session(site):
    secret = site.announce_ok(persistent="false")
    first = site.control(secret)
    first.send("QUIT")
    assert first.closed()
    again = site.connect()
    assert again.cmd("USER anonymous").code == 331
    r = again.cmd(f"PASS {secret}")
    assert 500 <= r.code < 600, f"one-time secret accepted twice: {r}"


def test_persistent_secret_allows_several_sessions(site):
    secret = site.announce_ok(persistent="true")
    sessions = [site.control(secret) for _ in range(3)]
    for c in sessions:
        assert c.cmd("PWD").lines == [f'257 "{site.base}"']
    sessions[0].send("QUIT")
    assert sessions[0].closed()
    assert site.control(secret).cmd("NOOP").code == 200


def test_cwd_after_login_is_base(site):
    assert site.control().cmd("PWD").lines == [f'257 "{site.base}"']


@pytest.mark.parametrize("suffix", ["___UFTP___MULTI___FILE___SESSION___MODE___", "some-file.dat"])
def test_base_is_dirname_of_file(site, suffix):
    c = site.control(file=f"{site.base}/{suffix}")
    assert c.cmd("PWD").lines == [f'257 "{site.base}"']
    assert c.cmd("CDUP").code == 534


def test_relative_base_is_below_home(site_factory, users):
    needs_root("a test user's home")
    user = users["uftptest1"]
    s = site_factory(user=user)
    import os
    import shutil
    from helpers import users as u
    sub = os.path.join(user.home, "uftpd-test-relbase")
    u.make_dir(sub, user)
    try:
        c = s.control(file="uftpd-test-relbase/")
        assert c.cmd("PWD").lines == [f'257 "{sub}"']
        assert c.cmd("CDUP").code == 534
    finally:
        shutil.rmtree(sub)


@pytest.mark.beyond_reference  # the reference reports PWD "/" (it chdirs to "/", not $HOME)
def test_empty_file_starts_in_home_unconfined(site_factory, users):
    needs_root("a test user's home")
    user = users["uftptest1"]
    s = site_factory(user=user)
    c = s.control(file="")
    assert c.cmd("PWD").lines == [f'257 "{user.home}"']
    assert c.cmd("CDUP").lines == ["200 OK"], "no base: the client may go up"
    import os
    assert c.cmd("PWD").lines == [f'257 "{os.path.dirname(user.home)}"']


def test_missing_home_starts_at_root(site_factory, users):
    needs_root("user nobody")
    nobody = users["nobody"]
    import os
    if os.path.isdir(nobody.home):
        pytest.skip(f"nobody's home {nobody.home} exists here")
    s = site_factory(user=nobody)
    c = s.control(file="")
    assert c.cmd("PWD").lines == ['257 "/"']


@pytest.mark.beyond_reference  # the reference closes without a reply
@pytest.mark.parametrize("verb", ["QUIT", "BYE", "quit"])
def test_quit_says_goodbye_and_closes(site, verb):
    c = site.control()
    assert c.cmd(verb).lines == ["221 Goodbye"]
    assert c.closed()


@pytest.mark.beyond_reference  # the reference closes without a reply: ftplib's quit() fails
def test_ftplib_quit(site):
    ftp = site.login()
    assert ftp.quit().startswith("221")


def test_commands_are_case_insensitive(site):
    c = site.control()
    assert c.cmd("noop").lines == ["200 OK"]
    assert c.cmd("pWd").lines == [f'257 "{site.base}"']
    assert c.cmd("syst").code == 215


def test_empty_lines_are_ignored(site):
    c = site.control()
    c.send(b"\r\n\r\nNOOP\r\n\r\n", eol=b"")
    assert c.read_reply().lines == ["200 OK"]
    assert c.cmd("PWD").lines == [f'257 "{site.base}"'], "an empty line got a reply"


def test_client_lines_may_end_with_lf(site):
    c = site.control()
    c.send("NOOP", eol=b"\n")
    assert c.read_reply().lines == ["200 OK"]
    c.send("PWD", eol=b"\n")
    assert c.read_reply().lines == [f'257 "{site.base}"']


def test_syst_after_login(site):
    r = site.control().cmd("SYST")
    assert 200 <= r.code < 300, r


def test_unknown_command(site):
    c = site.control()
    assert c.cmd("XYZZY foo").lines == ["502 Command not implemented."]
    assert c.cmd("NOOP").lines == ["200 OK"]


@pytest.mark.beyond_reference  # the reference session dies on a non-UTF-8 line
def test_non_utf8_line_gets_error_and_session_stays(site):
    site.put("data.bin", size=100)
    c = site.control()
    c.send(b"RETR \xff\xfe\xc3(.bin")
    r = c.read_reply()
    assert 500 <= r.code < 600, r
    assert c.cmd("NOOP").lines == ["200 OK"]
    assert c.cmd("SIZE data.bin").lines == ["213 100"]


def test_error_reply_format(site):
    c = site.control()
    r = c.cmd("RETR no-such-file")
    assert r.code == 550 and r.last.startswith("550 Error processing command 'RETR': "), r
    r = c.cmd("retr no-such-file")
    assert r.last.startswith("550 Error processing command 'RETR': "), r
    assert len(r.last) > len("550 Error processing command 'RETR': "), "no reason given"
    assert c.cmd("NOOP").lines == ["200 OK"], "an error must keep the session open"
