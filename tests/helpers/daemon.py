"""Start and stop a uftpd for a test, with its own config file and ports.

Environment:
  UFTPD_BIN         the uftpd binary (default <repo>/target/release/uftpd)
  UFTPD_IMPL        "rust" (default) or "ref": run the reference Python UFTPD
                    instead, to develop and cross-check the tests
  UFTPD_REF         checkout of the reference UFTPD (needed with UFTPD_IMPL=ref)
  UFTPD_REF_PYTHON  python for the reference (default /usr/bin/python3: its
                    lazily imported modules must be readable by the test users)

The Rust daemon is started as `uftpd --config FILE`; the reference reads the
same variables from its environment only.
"""

import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]

# every variable of PROTOCOL.md section 2, plus the test extension
CONFIG_NAMES = [
    "CMD_HOST", "CMD_PORT", "SERVER_HOST", "SERVER_PORT", "ADVERTISE_HOST",
    "DISABLE_IPv6", "SSL_CONF", "ACL", "MAX_CONNECTIONS", "MAX_STREAMS",
    "PORT_RANGE", "DISABLE_IP_CHECK", "UFTP_KEYFILES", "UFTP_NOWRITE",
    "UFTP_NO_WRITE", "UFTP_ENFORCE_OS_GIDS", "LOG_VERBOSE", "LOG_SYSLOG",
    "UFTP_USE_SENDFILE", "OPEN_USER_SESSIONS", "PAM_MODULE",
    "REQUEST_LIFETIME", "STORAGE_BACKEND", "CMD_AUTHORIZER", "PLUGINS",
    "ALLOW_INSECURE_COMMAND_PORT", "ACL_CHECK_INTERVAL", "SSL_HANDSHAKE_TIMEOUT",
]

LOOPBACK = "127.0.0.1"


def impl():
    value = os.environ.get("UFTPD_IMPL", "rust").strip().lower()
    if value not in ("rust", "ref"):
        raise RuntimeError(f"UFTPD_IMPL must be 'rust' or 'ref', not {value!r}")
    return value


def is_reference():
    return impl() == "ref"


def uftpd_bin():
    return pathlib.Path(os.environ.get("UFTPD_BIN", REPO / "target" / "release" / "uftpd"))


def run_check_config(config_file, env=None):
    """`uftpd check-config --config FILE` (with `env` added to the
    environment): the finished process, output as text."""
    return subprocess.run([str(uftpd_bin()), "check-config", "--config", str(config_file)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


_GIVEN_PORTS = set()


def free_port(host=LOOPBACK):
    """A TCP port that is free right now (outside the data-port ranges we use),
    never the same twice in one test run (two ports asked for before either is
    bound, e.g. CMD_PORT and SERVER_PORT, must differ)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port
    raise RuntimeError("no fresh free port found")


def port_is_free(port):
    try:
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False


def free_port_range(count):
    """A run of `count` consecutive free ports below the ephemeral range."""
    for _ in range(500):
        lower = random.randint(20000, 32000 - count)
        if all(port_is_free(p) for p in range(lower, lower + count)):
            return lower, lower + count - 1
    raise RuntimeError(f"no {count} consecutive free ports found")


def _proc_stat(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("ascii", "replace")
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])  # state, ppid


def children_of(pid):
    """Direct children of pid as {pid: state}."""
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = _proc_stat(int(entry))
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            result[int(entry)] = state
    return result


def descendants_of(pid):
    """All descendants of pid as {pid: state}."""
    result = {}
    todo = [pid]
    while todo:
        kids = children_of(todo.pop())
        for k, st in kids.items():
            if k not in result:
                result[k] = st
                todo.append(k)
    return result


def proc_status(pid):
    """/proc/<pid>/status as a dict of str -> str (values stripped)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


class DaemonError(AssertionError):
    pass


class Daemon:
    """One uftpd process with its own config file, ports and log file."""

    def __init__(self, workdir, name="uftpd", config=None, env=None, check_ready=True,
                 run_as=None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.impl = impl()
        acl = self.workdir / "uftpd.acl"
        acl.write_text("# empty: the command port runs in plain text in the tests\n")
        self.config = {
            "SERVER_HOST": LOOPBACK,
            "SERVER_PORT": str(free_port()),
            "CMD_HOST": LOOPBACK,
            "CMD_PORT": str(free_port()),
            "ACL": str(acl),
            "LOG_SYSLOG": "false",
            "LOG_VERBOSE": "true",
        }
        for k, v in (config or {}).items():
            if v is None:
                self.config.pop(k, None)
            else:
                self.config[k] = str(v)
        self.extra_env = dict(env or {})
        self.check_ready = check_ready
        self.run_as = run_as  # a helpers.users.User: start unprivileged (needs root)
        self.config_file = self.workdir / "uftpd.conf"
        self.log_file = self.workdir / "uftpd.log"
        self.proc = None
        self._log = None
        self.start_failed = False

    # ---- properties used by tests
    @property
    def server_port(self):
        return int(self.config["SERVER_PORT"])

    @property
    def cmd_port(self):
        return int(self.config["CMD_PORT"])

    @property
    def host(self):
        return LOOPBACK

    @property
    def pid(self):
        return self.proc.pid

    # ---- config
    def write_config(self):
        if getattr(self, "config_text", None) is not None:  # a test's own file
            self.config_file.write_text(self.config_text)
            return
        lines = [f"# written by the uftpd end-to-end tests for {self.name}"]
        for k, v in self.config.items():
            lines.append(f'export {k}="{v}"')
        self.config_file.write_text("\n".join(lines) + "\n")

    def command(self):
        if self.impl == "ref":
            ref = os.environ.get("UFTPD_REF")
            if not ref:
                raise DaemonError("UFTPD_IMPL=ref needs UFTPD_REF=<checkout of the reference UFTPD>")
            script = pathlib.Path(ref) / "lib" / "UFTPD.py"
            if not script.is_file():
                raise DaemonError(f"reference UFTPD not found: {script}")
            # a python that the session users can read (pyenv under /root is not)
            default = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
            python = os.environ.get("UFTPD_REF_PYTHON", default)
            return [python, str(script)], str(script.parent)
        binary = uftpd_bin()
        if not binary.is_file():
            raise DaemonError(f"uftpd binary not found at {binary}: build it "
                              "(cargo build --release) or set UFTPD_BIN")
        return [str(binary), "--config", str(self.config_file)], str(self.workdir)

    def environment(self):
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_NAMES}
        if self.impl == "ref":
            env.update(self.config)
            env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    # ---- lifecycle
    def start(self, timeout=20):
        self.write_config()
        argv, cwd = self.command()
        self._log = open(self.log_file, "ab")
        ids = {}
        env = self.environment()
        if self.run_as is not None:
            ids = dict(user=self.run_as.uid, group=self.run_as.gid, extra_groups=[])
            env.update(HOME=self.run_as.home, USER=self.run_as.name, LOGNAME=self.run_as.name)
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, **ids)
        if self.check_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        """Ready when the FTP port greets and the command port answers a ping.

        (A ping rather than a bare connect: the reference UFTPD spins forever
        on a command connection that closes without END.)
        """
        from . import cmdport  # local import, no cycle at module load
        deadline = time.monotonic() + timeout
        ftp_ok = cmd_ok = False
        last_error = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.start_failed = True
                raise DaemonError(f"{self.name} exited with code {self.proc.returncode} "
                                  f"during startup\n{self.log_tail()}")
            try:
                if not ftp_ok:
                    with socket.create_connection((LOOPBACK, self.server_port), timeout=2) as s:
                        s.settimeout(5)
                        if s.recv(4).startswith(b"220"):
                            ftp_ok = True
                if not cmd_ok:
                    reply = cmdport.send_request(LOOPBACK, self.cmd_port,
                                                 ["request-type=uftp-ping-request"], timeout=5)
                    if b"ListenPort" in reply:
                        cmd_ok = True
                if ftp_ok and cmd_ok:
                    return
            except OSError as e:
                last_error = e
            time.sleep(0.1)
        self.kill()
        self.start_failed = True  # reported here; stop() must not report it again
        raise DaemonError(f"{self.name} not ready after {timeout}s (ftp={ftp_ok}, cmd={cmd_ok}, "
                          f"last error {last_error!r})\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self, when=""):
        if not self.alive():
            raise DaemonError(f"{self.name} died{when} (exit code {self.proc.returncode})\n"
                              f"{self.log_tail()}")

    def stop(self):
        """SIGTERM, then SIGKILL; leftover session processes are killed by pid.

        Raises DaemonError if the daemon had died before it was asked to stop.
        """
        if self.proc is None:
            return
        died = self.proc.poll() is not None
        leftovers = descendants_of(self.proc.pid) if not died else {}
        if not died:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # session processes we caused to exist: end them by their ids
        for pid in list(leftovers) + list(descendants_of(self.proc.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # anything still in the daemon's own process group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log:
            self._log.close()
            self._log = None
        if died and not self.start_failed:
            raise DaemonError(f"{self.name} had died before the end of its test(s) "
                              f"(exit code {self.proc.returncode})\n{self.log_tail()}")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # ---- logs
    def log_size(self):
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since=0):
        try:
            with open(self.log_file, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, since=0, lines=150):
        text = self.log_text(since).splitlines()
        head = f"---- {self.name} log ({self.log_file}), last {min(lines, len(text))} lines ----"
        return "\n".join([head] + text[-lines:])
