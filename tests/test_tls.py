"""Command-port TLS and ACL (PROTOCOL.md section 4) against the real daemon.

The certificates are made at test time with the openssl command line, the
way the book tells admins to make them (RSA keys, a CA, a server and client
certificates, ACL lines printed with `-nameopt RFC2253`). The client is
Python's `ssl` module speaking to the command port as the Auth server does:
TLS with a client certificate, `key=value` lines, `END`, read to EOF.
"""

import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from helpers import cmdport
from helpers.daemon import LOOPBACK, free_port, is_reference, run_check_config

OPENSSL = shutil.which("openssl")

pytestmark = [
    pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command"),
    pytest.mark.skipif(is_reference(), reason="uftpd (Rust) TLS setup and log lines"),
]

PASSWORD = "test pass phrase"

SERVER_EXT = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
"""

CLIENT_EXT = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth,serverAuth
"""


def openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"
    return r.stdout


class Pki:
    """A CA and certificates it issues, in one directory."""

    def __init__(self, d, ca_subject="/C=EU/O=UNICORE/CN=Test CA"):
        self.dir = pathlib.Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "server.ext").write_text(SERVER_EXT)
        (self.dir / "client.ext").write_text(CLIENT_EXT)
        self.ca = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.ca_key),
                "-out", str(self.ca), "-days", "3650", "-subj", ca_subject, cwd=self.dir)

    def issue(self, name, subject, ext="client"):
        """key and certificate files for subject, signed by this CA."""
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr",
                          self.dir / f"{name}.pem")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                "-subj", subject, cwd=self.dir)
        ext_args = ["-extfile", str(self.dir / f"{ext}.ext")] if ext else []
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                "-CAcreateserial", "-out", str(cert), "-days", "30", *ext_args, cwd=self.dir)
        return key, cert

    def rfc2253(self, cert):
        """The subject as an ACL line, as the book says to print it."""
        out = openssl("x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "RFC2253",
                      cwd=self.dir)
        assert out.startswith("subject=")
        return out[len("subject="):].strip()


@pytest.fixture(scope="module")
def pki(tmp_root):
    p = Pki(tmp_root / "tls-pki")
    p.server = p.issue("server", "/C=EU/O=UNICORE/CN=uftpd", ext="server")
    p.auth = p.issue("auth", "/C=EU/O=UNICORE/OU=Servers/CN=Auth Server")
    p.intruder = p.issue("intruder", "/C=EU/O=UNICORE/CN=Intruder")
    # without -extfile, openssl x509 -req makes an X.509 version 1 certificate
    p.v1 = p.issue("v1", "/C=EU/O=UNICORE/OU=Servers/CN=Auth Server", ext=None)
    # the same DN as the Auth server, from a CA uftpd does not trust
    rogue = Pki(tmp_root / "tls-rogue", ca_subject="/O=Rogue/CN=Rogue CA")
    p.rogue = rogue.issue("auth", "/C=EU/O=UNICORE/OU=Servers/CN=Auth Server")
    # the server key encrypted in both formats admins have
    key = p.server[0]
    p.key_pkcs8 = p.dir / "server-pkcs8.key"
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(key), "-out", str(p.key_pkcs8),
            "-passout", f"pass:{PASSWORD}", cwd=p.dir)
    p.key_traditional = p.dir / "server-traditional.key"
    openssl("rsa", "-in", str(key), "-aes256", "-traditional", "-out", str(p.key_traditional),
            "-passout", f"pass:{PASSWORD}", cwd=p.dir)
    assert "Proc-Type: 4,ENCRYPTED" in p.key_traditional.read_text()
    return p


def tls_context(pki, client):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca))
    ctx.check_hostname = True
    if client is not None:
        key, cert = client
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return ctx


def tls_request(port, lines, pki, client, timeout=30):
    """Sends lines + END over TLS; the reply up to EOF, or None when the
    server refused (handshake failure, alert, or close without reply)."""
    payload = "".join(f"{line}\n" for line in lines) + "END\n"
    ctx = tls_context(pki, client)
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(payload.encode())
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
                return b"".join(chunks) or None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None


def ping(port, pki, client):
    return tls_request(port, ["request-type=uftp-ping-request"], pki, client)


def write_ssl_conf(path, pki, key=None, password=None, extra=""):
    key = key or pki.server[0]
    text = ("# uftpd-ssl.conf as UFTPD 3.x reads it\n"
            f"credential.key={key}\ncredential.certificate={pki.server[1]}\n"
            f"truststore={pki.ca}\n")
    if password is not None:
        text += f"credential.password={password}\n"
    path.write_text(text + extra)
    os.chmod(path, 0o600)
    return path


def start_tls_daemon(daemon_factory, workdir, pki, acl_lines, key=None, password=None,
                     wait=True, **config):
    conf = write_ssl_conf(workdir / f"uftpd-ssl-{len(os.listdir(workdir))}.conf", pki,
                          key=key, password=password)
    acl = workdir / "tls.acl"
    acl.write_text("# allowed command-port peers\n" + "".join(f"{l}\n" for l in acl_lines))
    config.setdefault("ACL_CHECK_INTERVAL", 0)
    d = daemon_factory(check_ready=False, SSL_CONF=conf, ACL=acl, **config)
    d.acl_file = acl
    d.ssl_conf = conf
    if wait:
        wait_tls_ready(d, pki)
    return d


def wait_tls_ready(d, pki, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.assert_alive(" during startup")
        try:
            with socket.create_connection((LOOPBACK, d.server_port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(4).startswith(b"220"):
                    reply = ping(d.cmd_port, pki, pki.auth)
                    if reply and b"ListenPort" in reply:
                        return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"TLS daemon not ready\n{d.log_tail()}")


def wait_for_log(d, text, since=0, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in d.log_text(since):
            return d.log_text(since)
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log\n{d.log_tail(since)}")


def wait_exit(d, timeout=20):
    try:
        return d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{d.name} did not exit\n{d.log_tail()}") from None


# ---------------------------------------------------------------- tests

def test_transfer_over_tls_like_the_auth_server(daemon_factory, workdir, pki, site_factory):
    """Ping, transfer request and a real download, announced over TLS."""
    d = start_tls_daemon(daemon_factory, workdir, pki, [pki.rfc2253(pki.auth[1])])
    log = d.log_text()
    assert "Command port: TLS 1.2/1.3 (rustls), client certificate required" in log
    assert "PLAIN TEXT" not in log
    info = dict(cmdport.parse_info(ping(d.cmd_port, pki, pki.auth)))
    assert info["ListenPort"] == str(d.server_port)

    site = site_factory(daemon=d)
    data = site.put("hello.bin", size=200_000)
    secret = site.new_secret()
    lines = cmdport.request_lines(
        request_type="uftp-transfer-request", client_ip=LOOPBACK, user=site.user.name,
        secret=secret, persistent="false", file=f"{site.base}/", append="false",
        streams="1", compress="false")
    reply = tls_request(d.cmd_port, lines, pki, pki.auth)
    assert cmdport.decode_reply(reply or b"") == f"OK::{d.server_port}"
    f = site.login(secret)
    chunks = []
    f.retrbinary("RETR hello.bin", chunks.append)
    assert b"".join(chunks) == data
    f.quit()
    accepted = wait_for_log(d, "Command port: accepted")
    assert "CN=Auth Server" in accepted


@pytest.mark.parametrize("who", ["intruder", "rogue", "v1", "none", "plain"])
def test_refused_peers_are_logged_and_cost_nothing(daemon_factory, workdir, pki, who):
    d = start_tls_daemon(daemon_factory, workdir, pki, [pki.rfc2253(pki.auth[1])])
    since = d.log_size()
    if who == "plain":
        try:
            reply = cmdport.send_request(LOOPBACK, d.cmd_port,
                                         ["request-type=uftp-ping-request"], timeout=30)
        except (ConnectionResetError, cmdport.CommandPortTimeout):
            reply = b""
        assert b"ListenPort" not in reply
    else:
        client = {"intruder": pki.intruder, "rogue": pki.rogue, "v1": pki.v1, "none": None}[who]
        assert ping(d.cmd_port, pki, client) is None
    expected = {
        "intruder": "CN=Intruder is not allowed by the ACL file",
        "rogue": "is not issued by a CA in the truststore",
        "v1": "is an X.509 version 1 certificate",
        "none": "sent no client certificate",
        "plain": "did not speak TLS",
    }[who]
    line = next(l for l in wait_for_log(d, expected, since).splitlines() if expected in l)
    assert "rejected 127.0.0.1:" in line, line
    if who in ("intruder", "rogue", "v1"):
        assert "CN=" in line
    # the allowed peer is served as before
    assert b"ListenPort" in (ping(d.cmd_port, pki, pki.auth) or b"")
    d.assert_alive()


def test_acl_edited_while_running(daemon_factory, workdir, pki):
    d = start_tls_daemon(daemon_factory, workdir, pki, [pki.rfc2253(pki.auth[1])])
    assert ping(d.cmd_port, pki, pki.intruder) is None
    # add the intruder (lower case, blanks: matching is case-insensitive)
    base = d.acl_file.read_text()
    d.acl_file.write_text(base + "cn=intruder, o=unicore\n")
    assert b"ListenPort" in (ping(d.cmd_port, pki, pki.intruder) or b"")
    wait_for_log(d, "reloaded, 2 entries")
    # remove it again, leaving a typo'd line
    d.acl_file.write_text(base + "CN=Intruder,O=UNICORE,XY=1\n")
    assert ping(d.cmd_port, pki, pki.intruder) is None
    log = wait_for_log(d, "line 3: cannot parse 'CN=Intruder,O=UNICORE,XY=1'")
    assert "unknown attribute type 'XY'" in log
    assert b"ListenPort" in (ping(d.cmd_port, pki, pki.auth) or b"")
    d.assert_alive()


@pytest.mark.parametrize("form", ["pkcs8", "traditional"])
def test_encrypted_server_key(daemon_factory, workdir, pki, form):
    key = pki.key_pkcs8 if form == "pkcs8" else pki.key_traditional
    d = start_tls_daemon(daemon_factory, workdir, pki, [pki.rfc2253(pki.auth[1])],
                         key=key, password=PASSWORD)
    assert b"ListenPort" in (ping(d.cmd_port, pki, pki.auth) or b"")
    log = d.log_text()
    assert "(encrypted, decrypted with credential.password)" in log
    assert PASSWORD not in log


def test_wrong_password_stops_startup(daemon_factory, workdir, pki):
    d = start_tls_daemon(daemon_factory, workdir, pki, [], key=pki.key_pkcs8,
                         password="not it", wait=False)
    assert wait_exit(d) != 0
    log = d.log_text()
    assert "wrong credential.password" in log, log
    assert "not it" not in log


def test_stalled_handshakes_do_not_block_the_command_port(daemon_factory, workdir, pki):
    d = start_tls_daemon(daemon_factory, workdir, pki, [pki.rfc2253(pki.auth[1])],
                         SSL_HANDSHAKE_TIMEOUT=2)
    since = d.log_size()
    stalled = []
    for _ in range(30):
        s = socket.create_connection((LOOPBACK, d.cmd_port), timeout=30)
        # the start of a ClientHello record, then silence
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00")
        stalled.append(s)
    try:
        # honest peers are served while the stalled ones hang
        for _ in range(3):
            assert b"ListenPort" in (ping(d.cmd_port, pki, pki.auth) or b"")
        # the stalled connections are closed by the handshake timeout
        for s in stalled:
            s.settimeout(30)
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
        wait_for_log(d, "no TLS handshake within 2s", since)
    finally:
        for s in stalled:
            s.close()
    d.assert_alive()


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_huge_request_over_tls_is_cut_off(daemon_factory, workdir, pki):
    d = start_tls_daemon(daemon_factory, workdir, pki, [pki.rfc2253(pki.auth[1])])
    total = 100 * 1024 * 1024
    sent = [0]
    ctx = tls_context(pki, pki.auth)
    raw = socket.create_connection((LOOPBACK, d.cmd_port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    line = b"x" * 1023 + b"\n"

    def send():
        try:
            while sent[0] < total:
                s.sendall(line * 64)
                sent[0] += len(line) * 64
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=send, daemon=True)
    t.start()
    reply = b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            reply += data
    except (OSError, ssl.SSLError):
        pass
    t.join(60)
    s.close()
    assert not t.is_alive()
    assert sent[0] < total, "the daemon read the whole 100 MB"
    if reply:
        assert reply.startswith(b"ERROR::Request too large"), reply[:200]
    assert vm_rss_kb(d.pid) < 200 * 1024
    assert b"ListenPort" in (ping(d.cmd_port, pki, pki.auth) or b"")
    d.assert_alive()


def check_config(config_file, env=None):
    r = run_check_config(config_file, env)
    return r.returncode, r.stdout + r.stderr


def test_check_config_reports_tls_and_acl(workdir, pki):
    conf = write_ssl_conf(workdir / "uftpd-ssl.conf", pki)
    acl = workdir / "uftpd.acl"
    acl.write_text(f"# peers\n{pki.rfc2253(pki.auth[1])}\nO=UNICORE\nCN=broken\\\n")
    cfg = workdir / "uftpd.conf"
    cfg.write_text(f'export CMD_HOST=127.0.0.1\nexport CMD_PORT={free_port()}\n'
                   f'export SERVER_PORT={free_port()}\n'
                   f'export SSL_CONF="{conf}"\nexport ACL="{acl}"\nexport DISABLE_IP_CHECK=true\n')
    code, out = check_config(cfg)
    assert code == 0, out
    for text in ["authorizer 'acl': TLS on", "server certificate CN=uftpd,O=UNICORE,C=EU",
                 "1 CA certificate(s)", "2 entries", "ACL line 2: allowing <CN=Auth Server",
                 "WARNING: ACL line 3 <O=UNICORE> has no CN",
                 "line 4: cannot parse 'CN=broken\\'", "WARNING: DISABLE_IP_CHECK=true",
                 "uftpd would start"]:
        assert text in out, f"{text!r} missing:\n{out}"
    # a credential file that does not exist: the daemon would not start
    conf.write_text(f"credential.path={pki.dir / 'nothing.pem'}\n")
    code, out = check_config(cfg)
    assert code != 0 and "would NOT start" in out, out


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to root")
def test_check_config_refuses_plain_remote_command_port_as_root(workdir):
    cfg = workdir / "uftpd.conf"
    cfg.write_text(f'export CMD_HOST="*"\nexport CMD_PORT={free_port()}\n'
                   f'export SERVER_PORT={free_port()}\n')
    code, out = check_config(cfg, env={"ALLOW_INSECURE_COMMAND_PORT": "false"})
    assert code != 0, out
    assert "refusing to run as root with a plain-text command port" in out
    code, out = check_config(cfg, env={"ALLOW_INSECURE_COMMAND_PORT": "true"})
    assert code == 0, out
    assert "WARNING: ALLOW_INSECURE_COMMAND_PORT=true" in out
