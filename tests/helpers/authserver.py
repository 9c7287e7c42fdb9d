"""A tiny UNICORE Auth server (PROTOCOL.md section 11) for driving real
clients such as pyuftp against our daemon.

The subset pyuftp uses, over plain http:
- `POST /rest/auth/<SERVER>` with `Authorization: Basic ...`: pings the
  daemon's command port, sends it a transfer request made from the JSON body
  (serverPath -> file, streamCount -> streams, compress, encryptionKey /
  encryptionAlgorithm -> key / algo, group, client (else the HTTP peer
  address) -> client-ip, persistent) and answers
  `{"success": true, "reason": "", "serverHost": "127.0.0.1", "serverPort": <from OK::>,
  "secret": "<secret>"}`;
  errors: 401 (credentials), 404 (unknown server), 503 (uftpd down), 500
  (uftpd refused: `<server>: <reply>`), each with `{"errorMessage": ...}`;
- `GET /rest/auth`: the info document (`client.dn`, `server.version`, one key
  per server with `href`, `dataSharing.enabled`, ...) for `pyuftp info`.

Everything a client sent and every transfer request made is kept in
`AuthServer.log` (a list of dicts) for the tests to look at.
"""

import base64
import grp
import json
import os
import pwd
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import cmdport
from .daemon import LOOPBACK

VERSION = "test-authserver-1.0"


def _bool(value, default=False):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def resolve_clients(value):
    """`-X` value (IPs/host names, `,` or space separated) -> `a,b,c` of IPs."""
    out = []
    for name in value.replace(",", " ").split():
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror:
            continue
        for info in infos:
            ip = info[4][0]
            if ip not in out:
                out.append(ip)
    return ",".join(out)


class AuthServer:
    """servers: {name: daemon (has .cmd_port)}; users: {login: (password, unix user)}."""

    def __init__(self, servers, users, host=LOOPBACK, server_host=LOOPBACK, extra_request=None):
        self.servers = dict(servers)
        self.users = dict(users)
        self.server_host = server_host
        self.extra_request = dict(extra_request or {})  # more command-port keys per request
        self.log = []
        self._lock = threading.Lock()
        outer = self

        class Handler(_Handler):
            auth = outer

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def port(self):
        return self.httpd.server_address[1]

    @property
    def base_url(self):
        return f"http://{LOOPBACK}:{self.port}"

    def url(self, server, path=""):
        """A client URL `<base>/rest/auth/<SERVER>:<path>`."""
        return f"{self.base_url}/rest/auth/{server}:{path}"

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="authserver",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join(10)

    def record(self, entry):
        with self._lock:
            self.log.append(entry)

    def transfers(self):
        """The transfer requests sent to a daemon (dicts of command-port keys)."""
        with self._lock:
            return [e["request"] for e in self.log if "request" in e]

    # ---- the service
    def check_user(self, header):
        """Authorization header -> (login, unix user) or None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            login, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        entry = self.users.get(login)
        if entry is None or not secrets.compare_digest(entry[0], password):
            return None
        return login, entry[1]

    def lookup(self, name):
        """`<SERVER>` or `<SERVER>-<n>` (instance n of a group) -> (SERVER, daemon) or None."""
        if name in self.servers:
            return name, self.servers[name]
        base, sep, num = name.rpartition("-")
        if sep and num.isdigit() and base in self.servers:
            return base, self.servers[base]
        return None

    def ping(self, daemon):
        raw = cmdport.ping(LOOPBACK, daemon.cmd_port, timeout=10)
        return dict(cmdport.parse_info(raw))

    def transfer(self, server, daemon, unix_user, body, peer):
        """Send the transfer request; return (http status, json reply)."""
        try:
            self.ping(daemon)
        except OSError as e:
            return 503, {"errorMessage": f"{server}: UFTPD server not available: {e}"}
        secret = secrets.token_urlsafe(24)
        client = body.get("client")
        client_ip = resolve_clients(str(client)) if client else peer
        req = {
            "request-type": "uftp-transfer-request",
            "client-ip": client_ip,
            "user": unix_user,
            "secret": secret,
            "persistent": "true" if _bool(body.get("persistent")) else "false",
            "file": str(body.get("serverPath") or ""),
            "append": "false",
            "streams": str(int(body.get("streamCount") or 1)),
            "compress": "true" if _bool(body.get("compress")) else "false",
        }
        if body.get("group"):
            req["group"] = str(body["group"])
        if body.get("encryptionKey"):
            req["key"] = str(body["encryptionKey"])
            req["algo"] = str(body.get("encryptionAlgorithm") or "BLOWFISH").upper()
        req.update(self.extra_request)
        raw = cmdport.send_request(LOOPBACK, daemon.cmd_port, cmdport.request_lines(**req))
        reply = cmdport.decode_reply(raw)
        self.record({"server": server, "body": body, "request": req, "reply": reply})
        if reply.startswith("OK::"):
            return 200, {"success": True, "reason": "", "serverHost": self.server_host,
                         "serverPort": int(reply[4:]), "secret": secret}
        return 500, {"errorMessage": f"{server}: {reply}"}

    def info(self, login, unix_user):
        doc = {}
        try:
            pw = pwd.getpwnam(unix_user)
            gid = grp.getgrgid(pw.pw_gid).gr_name
            groups = sorted({grp.getgrgid(g).gr_name
                             for g in os.getgrouplist(unix_user, pw.pw_gid)})
        except KeyError:  # a mapping to an unknown user (uftpd will refuse it)
            gid, groups = "", []
        for name, daemon in self.servers.items():
            entry = {
                "href": f"{self.base_url}/rest/auth/{name}",
                "description": f"uftpd under test ({name})",
                "uid": unix_user,
                "gid": gid,
                "availableGroups": groups,
                "rateLimit": 0,
                "reservations": [],
                "dataSharing": {"enabled": False},
            }
            try:
                p = self.ping(daemon)
                entry["status"] = "OK"
                entry["uftpdServerVersion"] = p.get("Version", "")
                limit = p.get("MaxSessionsPerClient")
                if limit and limit.isdigit():
                    entry["sessionLimit"] = int(limit)
            except OSError as e:
                entry["status"] = f"UFTPD server not available: {e}"
            doc[name] = entry
        doc["client"] = {"dn": login, "role": {"selected": "user", "available": ["user"]},
                         "xlogin": {"UID": unix_user}}
        doc["server"] = {"version": VERSION}
        return doc


class _Handler(BaseHTTPRequestHandler):
    auth = None  # the AuthServer, set by a subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep pytest output clean
        pass

    def _send(self, status, doc, headers=()):
        body = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _unauthorized(self):
        self._send(401, {"errorMessage": "Authentication failed"},
                   [("WWW-Authenticate", 'Basic realm="uftpd-tests"')])

    def _path(self):
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self):
        who = self.auth.check_user(self.headers.get("Authorization"))
        path = self._path()
        if path != "/rest/auth" and not path.startswith("/rest/auth/"):
            return self._send(404, {"errorMessage": f"Not found: {self.path}"})
        if who is None:
            return self._unauthorized()
        doc = self.auth.info(*who)
        if path == "/rest/auth":
            return self._send(200, doc)
        name = path[len("/rest/auth/"):]
        found = self.auth.lookup(name)
        if found is None:
            return self._send(404, {"errorMessage": f"No such server: {name}"})
        return self._send(200, doc[found[0]])

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self._path()
        if not path.startswith("/rest/auth/"):
            return self._send(404, {"errorMessage": f"Not found: {self.path}"})
        name = path[len("/rest/auth/"):]
        who = self.auth.check_user(self.headers.get("Authorization"))
        self.auth.record({"server": name, "http_body": raw.decode("utf-8", "replace"),
                          "authorized": who is not None})
        if who is None:
            return self._unauthorized()
        found = self.auth.lookup(name)
        if found is None:
            return self._send(404, {"errorMessage": f"No such server: {name}"})
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            return self._send(400, {"errorMessage": f"Bad request: {e}"})
        try:
            status, doc = self.auth.transfer(name, found[1], who[1], body,
                                             self.client_address[0])
        except Exception as e:  # e.g. the daemon broke the command-port protocol
            status, doc = 500, {"errorMessage": f"{name}: {e!r}"}
        self._send(status, doc)
