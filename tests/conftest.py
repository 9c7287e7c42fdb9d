"""Fixtures for the uftpd end-to-end tests.

What a test gets:
- `uftpd`: the shared daemon of the session (default config), restarted if
  a test killed it (that test fails with the log);
- `daemon_factory(**config)`: a daemon of its own with config variants
  (PORT_RANGE, MAX_CONNECTIONS, ...), stopped after the test; a daemon that
  died during the test makes the test fail loudly with its log;
- `site`: the shared daemon + the session user + a fresh base directory owned
  by that user; `site.announce(**fields)`, `site.login(secret)` (ftplib),
  `site.control(...)` (raw control connection), `site.put(...)` (files);
- `site_factory(daemon=..., user=...)` for more sites (other users, variants);
- `users`: the test users (root only), `session_user`: who sessions run as.

The log of every daemon a failing test used is attached to its report.

Tests marked `beyond_reference` assert PROTOCOL.md where the reference Python
UFTPD differs; `-m "not beyond_reference"` runs the rest (e.g. with
UFTPD_IMPL=ref UFTPD_REF=<checkout>).
"""

import ftplib
import itertools
import os
import pathlib
import re
import secrets
import shutil
import tempfile

import pytest

from helpers import cmdport
from helpers.daemon import Daemon, DaemonError, LOOPBACK, is_reference
from helpers.ftp import Control
from helpers import users as u


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "beyond_reference: asserts PROTOCOL.md where the reference UFTPD 3.x "
        "behaves differently (expected to fail with UFTPD_IMPL=ref)")


# ---------------------------------------------------------------- logs on failure
_USED = []  # (daemon, log offset) used by the running test


def use_daemon(daemon):
    _USED.append((daemon, daemon.log_size()))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _USED.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for daemon, offset in _USED:
            rep.sections.append((f"uftpd log: {daemon.name} (since test start)",
                                 daemon.log_tail(offset)))


# ---------------------------------------------------------------- dirs and users
@pytest.fixture(scope="session")
def tmp_root():
    """A world-traversable temp dir (pytest's own is 0700 root, users could not enter)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="uftpd-tests-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield root
    if not os.environ.get("UFTPD_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


_counter = itertools.count()


@pytest.fixture
def workdir(request, tmp_root):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    path = tmp_root / f"{next(_counter):04d}-{name}"
    path.mkdir()
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def users():
    """The test users by name (root only; others skip)."""
    if not u.is_root():
        return None
    u.ensure_test_users()
    return {name: u.User(name) for name in ("uftptest1", "uftptest2", "nobody")}


@pytest.fixture(scope="session")
def session_user(users):
    """Who ordinary sessions run as: uftptest1 as root, else the current user."""
    if users:
        return users["uftptest1"]
    import pwd
    return u.User(pwd.getpwuid(os.geteuid()).pw_name)


# ---------------------------------------------------------------- daemons
class _Shared:
    def __init__(self, root):
        self.root = root
        self.daemon = None
        self.generation = 0

    def get(self):
        if self.daemon is None or not self.daemon.alive():
            if self.daemon is not None:
                try:
                    self.daemon.stop()
                except DaemonError:
                    pass  # reported by the test during which it died
            self.generation += 1
            self.daemon = Daemon(self.root / f"shared-daemon-{self.generation}",
                                 name=f"shared uftpd #{self.generation}",
                                 config=SHARED_CONFIG).start()
        return self.daemon


# the shared daemon: generous per-user limit, so that requests left pending by
# earlier tests (they live 300 s) never make a later test fail
SHARED_CONFIG = {"MAX_CONNECTIONS": 1000}


@pytest.fixture(scope="session")
def _shared(tmp_root):
    shared = _Shared(tmp_root)
    yield shared
    if shared.daemon is not None:
        shared.daemon.stop()


@pytest.fixture
def uftpd(_shared):
    daemon = _shared.get()
    use_daemon(daemon)
    yield daemon
    daemon.assert_alive(" during this test")


@pytest.fixture
def daemon_factory(workdir):
    """start(name=None, env=None, check_ready=True, config_text=None, run_as=None, **config)
    -> a started Daemon (run_as: a users.User to run it unprivileged, as root only).

    config_text replaces the generated config file (config still tells the
    test harness which ports to wait for)."""
    started = []

    def start(name=None, env=None, check_ready=True, config_text=None, run_as=None, **config):
        idx = len(started)
        d = Daemon(workdir / f"daemon{idx}", name=name or f"uftpd variant {idx}",
                   config=config, env=env, check_ready=check_ready, run_as=run_as)
        d.config_text = config_text
        started.append(d)
        use_daemon(d)
        return d.start()

    yield start
    errors = []
    for d in started:
        try:
            d.stop()
        except DaemonError as e:
            if d.check_ready:
                errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# ---------------------------------------------------------------- sites
class Site:
    """A daemon, a user to act as, and a fresh base directory owned by that user."""

    def __init__(self, daemon, user, workdir, closers):
        self.daemon = daemon
        self.user = user
        self.work = workdir
        self.base = u.make_dir(workdir / "base", user)
        self._closers = closers

    @property
    def port(self):
        return self.daemon.server_port

    @property
    def ok(self):
        return f"OK::{self.daemon.server_port}"

    @staticmethod
    def new_secret():
        return "t" + secrets.token_hex(16)

    # ---- command port
    def announce(self, **fields):
        """Send a transfer request (PROTOCOL.md section 3 order); return the reply line.

        Defaults: this site's user, a fresh secret, client-ip 127.0.0.1, base
        directory `<base>/`. A field set to None is not sent.
        """
        req = dict(request_type="uftp-transfer-request", client_ip=LOOPBACK,
                   user=self.user.name, secret=self.new_secret(), persistent="false",
                   file=f"{self.base}/", append="false", streams="1", compress="false")
        req.update(fields)
        raw = cmdport.send_request(LOOPBACK, self.daemon.cmd_port, cmdport.request_lines(**req))
        return cmdport.decode_reply(raw)

    def announce_ok(self, **fields):
        """Announce and assert `OK::<port>`; returns the secret."""
        secret = fields.pop("secret", None) or self.new_secret()
        reply = self.announce(secret=secret, **fields)
        assert reply == self.ok, f"transfer request {fields}: expected {self.ok!r}, got {reply!r}"
        return secret

    # ---- FTP
    def connect(self, **kw):
        c = Control(LOOPBACK, self.port, **kw)
        self._closers.append(c.close)
        return c

    def control(self, secret=None, **fields):
        """A raw control connection, logged in (announcing first unless secret given)."""
        if secret is None:
            secret = self.announce_ok(**fields)
        c = self.connect()
        r = c.login(secret)
        assert r.code == 230, f"login: expected 230, got {r}\n"
        return c

    def login(self, secret=None, **fields):
        """ftplib.FTP logged in with secret (announcing first unless given)."""
        if secret is None:
            secret = self.announce_ok(**fields)
        f = ftplib.FTP(timeout=30)
        self._closers.append(f.close)
        f.connect(LOOPBACK, self.port)
        f.login("anonymous", secret)
        return f

    # ---- files
    def path(self, rel):
        return self.base / rel

    def put(self, rel, data=None, size=1000, mode=0o644, owner=None):
        """A file below base with given or random content, owned by the site user."""
        if data is None:
            data = os.urandom(size)
        p = self.base / rel
        self._ensure_dirs(p.parent)
        u.write_file(p, data, owner or self.user, mode)
        return data

    def mkdir(self, rel, mode=0o755):
        p = self.base / rel
        self._ensure_dirs(p.parent)
        return u.make_dir(p, self.user, mode)

    def _ensure_dirs(self, d):
        missing = []
        while not d.exists():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            u.make_dir(m, self.user)


@pytest.fixture
def site_factory(workdir, session_user, request):
    closers = []
    count = itertools.count()

    def make(daemon=None, user=None):
        d = daemon or request.getfixturevalue("uftpd")
        wd = workdir / f"site{next(count)}"
        wd.mkdir()
        os.chmod(wd, 0o755)
        return Site(d, user or session_user, wd, closers)

    yield make
    for c in closers:
        try:
            c()
        except Exception:
            pass


@pytest.fixture
def site(site_factory):
    return site_factory()


@pytest.fixture
def announce(site):
    """announce(**fields) -> reply line, on the shared daemon."""
    return site.announce


@pytest.fixture
def login(site):
    """login(secret) -> logged-in ftplib.FTP on the shared daemon."""
    return site.login


@pytest.fixture
def reference():
    """True when the suite runs against the reference Python UFTPD."""
    return is_reference()
