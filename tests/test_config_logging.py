"""Configuration (PROTOCOL.md section 2) and logging (section 10)."""

import re
import socket
import time

import pytest

from helpers import cmdport
from helpers.daemon import LOOPBACK, free_port, is_reference

TAKES_FILE = pytest.mark.skipif(is_reference(), reason="the reference reads only its environment")


def wait_exit(daemon, timeout=15):
    try:
        return daemon.proc.wait(timeout)
    except Exception:
        return None


def log_contains(daemon, pattern, timeout=10):
    """Wait until the daemon's log matches pattern; returns the match or None."""
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, daemon.log_text())
        if m or time.monotonic() > deadline:
            return m
        time.sleep(0.2)


# ---------------------------------------------------------------- config values
@pytest.mark.beyond_reference  # the reference reads any unknown boolean as false
@pytest.mark.parametrize("name,value", [("DISABLE_IP_CHECK", "maybe"), ("LOG_VERBOSE", "2"),
                                        ("UFTP_ENFORCE_OS_GIDS", "nope")])
def test_invalid_boolean_is_a_startup_error(daemon_factory, name, value):
    d = daemon_factory(check_ready=False, **{name: value})
    code = wait_exit(d)
    assert code is not None, f"uftpd started with {name}={value}"
    assert code != 0, f"uftpd exited 0 with {name}={value}"
    assert name in d.log_text(), f"the startup error does not name {name}:\n{d.log_tail()}"


@pytest.mark.beyond_reference  # the reference dies with a bare int() traceback
@pytest.mark.parametrize("name,value", [("MAX_STREAMS", "abc"), ("MAX_CONNECTIONS", "x1"),
                                        ("GZIP_LEVEL", "10"), ("COMPRESS_THREADS", "0"),
                                        ("COMPRESS_THREADS", "65")])
def test_invalid_number_is_a_startup_error(daemon_factory, name, value):
    d = daemon_factory(check_ready=False, **{name: value})
    code = wait_exit(d)
    assert code not in (None, 0), f"uftpd did not refuse {name}={value} (exit {code})"
    assert name in d.log_text(), f"the startup error does not name {name}:\n{d.log_tail()}"


@pytest.mark.parametrize("value", ["5000", "6000:5000", "a:b"])
def test_invalid_port_range_is_a_startup_error(daemon_factory, value):
    d = daemon_factory(check_ready=False, PORT_RANGE=value)
    code = wait_exit(d)
    assert code not in (None, 0), f"uftpd did not refuse PORT_RANGE={value} (exit {code})"
    assert "PORT_RANGE" in d.log_text(), d.log_tail()


@pytest.mark.parametrize("value", ["1", "yes", "TRUE", "True", "YES"])
def test_boolean_spellings(daemon_factory, site_factory, value):
    site = site_factory(daemon=daemon_factory(DISABLE_IP_CHECK=value))
    c = site.control(client_ip="10.9.9.9")
    assert c.cmd("NOOP").lines == ["200 OK"]


@TAKES_FILE
def test_environment_overrides_config_file(daemon_factory):
    env_port = free_port()
    d = daemon_factory(check_ready=False, env={"SERVER_PORT": str(env_port)})
    deadline = time.monotonic() + 20
    info = None
    while time.monotonic() < deadline and d.alive():
        try:
            info = dict(cmdport.parse_info(cmdport.ping(LOOPBACK, d.cmd_port, timeout=5)))
            break
        except OSError:
            time.sleep(0.1)
    assert info, f"no ping answer\n{d.log_tail()}"
    assert info["ListenPort"] == str(env_port), info
    with socket.create_connection((LOOPBACK, env_port), timeout=10) as s:
        s.settimeout(10)
        assert s.recv(4) == b"220 "


@TAKES_FILE
def test_config_file_syntax(daemon_factory, site_factory):
    sp, cp = free_port(), free_port()
    text = f"""# a comment
   # an indented comment

export SERVER_HOST=127.0.0.1
SERVER_PORT={sp}
export CMD_HOST='127.0.0.1'
CMD_PORT="{cp}"
export LOG_SYSLOG="false"
export MAX_CONNECTIONS=5
export DISABLE_IP_CHECK=yes
"""
    d = daemon_factory(config_text=text, SERVER_PORT=sp, CMD_PORT=cp)
    info = dict(cmdport.parse_info(cmdport.ping(LOOPBACK, cp)))
    assert info["ListenPort"] == str(sp) and info["MaxSessionsPerClient"] == "5", info
    site = site_factory(daemon=d)
    assert site.control(client_ip="10.9.9.9").cmd("NOOP").code == 200


# ---------------------------------------------------------------- logging
def test_usage_lines(daemon_factory, site_factory):
    d = daemon_factory(LOG_VERBOSE="false")
    site = site_factory(daemon=d)
    site.put("f.bin", size=12345)
    c = site.control()
    c.retr("f.bin")
    c.stor("g.bin", b"x" * 777)
    name = re.escape(site.user.name)
    sent = log_contains(d, r"USAGE \[Sent 1 file\(s\)\] \[12345 bytes\] \[\d+ (kB|MB)/sec\] \[" + name + r"\]")
    assert sent, f"no USAGE line for the RETR\n{d.log_tail()}"
    received = log_contains(d, r"USAGE \[Received 1 file\(s\)\] \[777 bytes\] \[\d+ (kB|MB)/sec\] \[" + name + r"\]")
    assert received, f"no USAGE line for the STOR\n{d.log_tail()}"


@pytest.mark.beyond_reference  # the reference logs requests and PASS lines in verbose mode
def test_secrets_and_keys_never_logged(daemon_factory, site_factory):
    d = daemon_factory(LOG_VERBOSE="true")
    site = site_factory(daemon=d)
    site.put("f.bin", size=100)
    secret = site.announce_ok(persistent="true")
    c = site.control(secret)
    c.retr("f.bin")
    c.cmd("STAT N .")
    c2 = site.connect()
    c2.cmd("USER anonymous")
    c2.cmd(f"PASS {secret}")
    wrong = site.new_secret()
    c3 = site.connect()
    c3.cmd("USER anonymous")
    c3.cmd(f"PASS {wrong}")
    key = "c2VjcmV0LWtleS1tYXRlcmlhbC0wMTIzNDU2Nzg5YWJjZGVm"  # base64, 36 bytes
    key_secret = site.new_secret()
    site.announce(secret=key_secret, key=key, algo="BLOWFISH")
    time.sleep(1)  # let the session processes write what they write
    log = d.log_text()
    leaked = [what for what, value in (("secret", secret), ("mistyped secret", wrong),
                                       ("key", key), ("secret of an encrypted request", key_secret))
              if value in log]
    assert not leaked, f"found in the log: {leaked}"
