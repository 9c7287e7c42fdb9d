"""Plugins (issue 4): `--list-plugins`, a dynamic storage plugin doing real
transfers, and the refusals at startup (wrong API version or toolchain, not
a plugin, unknown name, unsafe location, missing setting).

The plugin libraries are the workspace's cdylibs `uftpd-example-dynamic`
(storage plugin `audit-posix`: POSIX plus an audit log) and
`uftpd-test-bad-header` (a header that does not match; which mismatch is
chosen by UFTPD_TEST_BAD_HEADER in the daemon's environment). They are
built next to the uftpd binary under test (`cargo build --release -p ...`
with that binary's target directory) and copied into a root-owned test
directory, since uftpd loads plugins only from admin-owned locations.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from helpers.daemon import LOOPBACK, REPO, is_reference, uftpd_bin

pytestmark = pytest.mark.skipif(is_reference(), reason="plugins are a uftpd (Rust) feature")

EXAMPLE = "libuftpd_example_dynamic.so"
BAD_HEADER = "libuftpd_test_bad_header.so"


def wait_exit(daemon, timeout=20):
    try:
        return daemon.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture(scope="session")
def plugin_build_dir():
    """The directory of the uftpd binary, with the plugin cdylibs built in it."""
    binary = uftpd_bin()
    out = binary.parent
    if out.name in ("release", "debug") and shutil.which("cargo"):
        argv = ["cargo", "build", "--quiet", "-p", "uftpd-example-dynamic",
                "-p", "uftpd-test-bad-header", "--target-dir", str(out.parent)]
        if out.name == "release":
            argv.insert(2, "--release")
        p = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=1800)
        assert p.returncode == 0, f"{' '.join(argv)} failed:\n{p.stdout.decode()[-4000:]}"
    for lib in (EXAMPLE, BAD_HEADER):
        if not (out / lib).is_file():
            pytest.skip(f"{out / lib} not built (cargo build --release --workspace)")
    return out


@pytest.fixture(scope="session")
def plugin_dir(plugin_build_dir, tmp_root):
    """An admin-owned directory holding copies of the plugin libraries."""
    d = tmp_root / "plugins"
    d.mkdir(mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    for lib in (EXAMPLE, BAD_HEADER):
        shutil.copy(plugin_build_dir / lib, d / lib)
        os.chmod(d / lib, 0o755)
    return d


def list_plugins(config_file=None, env=None):
    argv = [str(uftpd_bin()), "--list-plugins"]
    if config_file:
        argv += ["--config", str(config_file)]
    e = {k: v for k, v in os.environ.items()
         if k not in ("PLUGINS", "STORAGE_BACKEND", "CMD_AUTHORIZER", "UFTPD_TEST_BAD_HEADER")}
    e.update(env or {})
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=60)


def columns(stdout):
    return [line.split(None, 3) for line in stdout.decode().splitlines()]


# ---------------------------------------------------------------- --list-plugins
def test_list_plugins_without_config_shows_the_static_set(workdir):
    conf = workdir / "empty.conf"
    conf.write_text("# nothing: defaults need no plugin config\n")
    p = list_plugins(conf)
    assert p.returncode == 0, p.stderr.decode()
    rows = columns(p.stdout)
    assert all(len(r) == 4 for r in rows), rows
    roles = {r[0] for r in rows}
    assert {"storage", "authorizer"} <= roles, rows
    assert ["storage", "posix"] in [r[:2] for r in rows], rows
    assert ["authorizer", "plain"] in [r[:2] for r in rows], rows
    assert all(r[3] == "static" for r in rows), rows
    assert all(re.fullmatch(r"\d+\.\d+\.\d+\S*", r[2]) for r in rows), rows


def test_list_plugins_shows_where_a_dynamic_plugin_came_from(workdir, plugin_dir):
    conf = workdir / "uftpd.conf"
    conf.write_text(f'export PLUGINS="{plugin_dir / EXAMPLE}"\n')
    p = list_plugins(conf)
    assert p.returncode == 0, p.stderr.decode()
    rows = columns(p.stdout)
    audit = [r for r in rows if r[1] == "audit-posix"]
    assert len(audit) == 1, rows
    assert audit[0][0] == "storage"
    assert audit[0][3] == str(plugin_dir / EXAMPLE)
    assert ["storage", "posix", audit[0][2], "static"] in rows, rows


def test_list_plugins_refuses_a_bad_library_in_one_line(workdir, plugin_dir):
    conf = workdir / "uftpd.conf"
    conf.write_text(f"export PLUGINS={plugin_dir / BAD_HEADER}\n")
    p = list_plugins(conf)
    assert p.returncode != 0
    err = p.stderr.decode().strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"uftpd: cannot load plugin library {plugin_dir / BAD_HEADER}: "
                          "plugin API version 2.0"), err


# ---------------------------------------------------------------- a real transfer
def announce_cli(daemon, user, directory):
    """`uftpd announce` as an admin would use it; returns the secret."""
    argv = [str(uftpd_bin()), "announce", "--cmd", f"{LOOPBACK}:{daemon.cmd_port}",
            "--file", f"{directory}/", "--client-ip", LOOPBACK, "--user", user.name]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0, f"{' '.join(argv)}:\n{out}"
    m = re.search(r"^secret: (\S+)$", out, re.M)
    assert m, out
    return m.group(1)


def curl(daemon, secret, path, *args):
    argv = ["curl", "-sS", "--max-time", "60", "-u", f"anonymous:{secret}", *args,
            f"ftp://{LOOPBACK}:{daemon.server_port}/{path}"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
    assert p.returncode == 0, f"curl exit {p.returncode}: {' '.join(argv)}\n{p.stderr.decode()}"
    return p.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_dynamic_storage_plugin_serves_transfers_and_audits_them(
        daemon_factory, site_factory, plugin_dir, workdir):
    audit = workdir / "audit.log"
    d = daemon_factory(PLUGINS=plugin_dir / EXAMPLE, STORAGE_BACKEND="audit-posix",
                       AUDIT_LOG=audit)
    log = d.log_text()
    assert f"Plugin library {plugin_dir / EXAMPLE}: storage plugin 'audit-posix'" in log, log
    assert "Storage backend: audit-posix" in log, log
    site = site_factory(daemon=d)

    # upload through the plugin
    data = os.urandom(1_234_567)
    src = workdir / "src.bin"
    src.write_bytes(data)
    curl(d, announce_cli(d, site.user, site.base), "up.bin", "-T", str(src))
    assert site.path("up.bin").read_bytes() == data
    assert site.path("up.bin").stat().st_uid == site.user.uid

    # download through the plugin: reads are served, not audited
    old = site.put("old.bin", size=70_000)
    assert curl(d, announce_cli(d, site.user, site.base), "old.bin") == old

    # a directory made through the plugin
    curl(d, announce_cli(d, site.user, site.base), "", "-Q", "MKD newdir")
    assert site.path("newdir").is_dir()

    records = audit.read_text().splitlines()
    assert len(records) == 2, records
    assert re.fullmatch(
        rf'ts=\d+ user="{site.user.name}" uid={site.user.uid} event=write size=1234567 '
        rf'mode=truncate path="{site.base}/up.bin"', records[0]), records
    assert re.fullmatch(
        rf'ts=\d+ user="{site.user.name}" uid={site.user.uid} event=mkdir '
        rf'path="{site.base}/newdir"', records[1]), records
    if os.geteuid() == 0 and site.user.uid != 0:
        # opened by the plugin before the session dropped to the user: the
        # log stays the admin's
        st = audit.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o640), st


def test_audit_setting_can_come_from_the_environment(daemon_factory, site_factory, plugin_dir,
                                                     workdir):
    """Sessions start with a clean environment; what the plugin read at
    startup reaches them anyway."""
    audit = workdir / "env-audit.log"
    d = daemon_factory(PLUGINS=plugin_dir / EXAMPLE, STORAGE_BACKEND="audit-posix",
                       env={"AUDIT_LOG": str(audit)})
    site = site_factory(daemon=d)
    f = site.login()
    f.mkd("via-env")
    f.quit()
    assert 'event=mkdir path="' + str(site.base / "via-env") + '"' in audit.read_text()


# ---------------------------------------------------------------- refusals
def refused(daemon_factory, expected, **kw):
    """Start a daemon that must refuse to start; return its log."""
    d = daemon_factory(check_ready=False, **kw)
    code = wait_exit(d)
    log = d.log_text()
    assert code not in (None, 0), f"uftpd did not refuse to start (exit {code})\n{log}"
    assert expected in log, f"expected {expected!r} in the log:\n{log}"
    assert "panicked" not in log and "RUST_BACKTRACE" not in log, log
    # one line says it all (it goes to the log and to stderr, both land
    # here: the same message twice, nothing else)
    messages = {line[line.index(expected):].strip() for line in log.splitlines()
                if expected in line}
    assert len(messages) == 1, messages
    return log


@pytest.mark.parametrize("variant,message", [
    ("abi", "plugin API version 2.0 does not fit this uftpd's plugin API 1.0"),
    ("toolchain", "plugin was built with 'rustc 1.0.0 (fake 2015-05-15)' and storage-api"),
    ("magic", "not a uftpd plugin (wrong magic number in its header)"),
])
def test_mismatching_header_is_refused_naming_the_file(daemon_factory, plugin_dir, variant,
                                                      message):
    lib = plugin_dir / BAD_HEADER
    refused(daemon_factory, f"cannot load plugin library {lib}: {message}",
            PLUGINS=lib, env={"UFTPD_TEST_BAD_HEADER": variant})


def test_library_without_plugin_symbol_is_refused(daemon_factory, workdir):
    libc = next((pathlib.Path(line.split()[-1]) for line in open("/proc/self/maps")
                 if re.search(r"/libc(\.so|-[^/]*\.so)", line)), None)
    if libc is None:
        pytest.skip("no libc in /proc/self/maps")
    refused(daemon_factory,
            f"cannot load plugin library {libc}: not a uftpd plugin (it has no symbol "
            "uftpd_plugin_header)", PLUGINS=libc)


def test_missing_library_is_refused(daemon_factory, workdir):
    lib = workdir / "no-such-plugin.so"
    refused(daemon_factory, f"cannot load plugin library {lib}: No such file or directory",
            PLUGINS=lib)


def test_relative_library_path_is_a_config_error(daemon_factory):
    refused(daemon_factory, "invalid value for PLUGINS: 'libaudit.so'", PLUGINS="libaudit.so")


def test_unknown_backend_name_is_refused(daemon_factory, plugin_dir):
    refused(daemon_factory, "unknown storage plugin 'lustre' (available: ",
            STORAGE_BACKEND="lustre", PLUGINS=plugin_dir / EXAMPLE)


def test_unknown_authorizer_name_is_refused(daemon_factory):
    refused(daemon_factory, "unknown authorizer plugin 'kerberos'", CMD_AUTHORIZER="kerberos")


def test_missing_plugin_setting_is_refused(daemon_factory, plugin_dir):
    refused(daemon_factory, "storage plugin 'audit-posix': AUDIT_LOG is not set",
            STORAGE_BACKEND="audit-posix", PLUGINS=plugin_dir / EXAMPLE)


def test_library_in_a_world_writable_directory_is_refused(daemon_factory, plugin_dir, workdir):
    unsafe_dir = workdir / "anyone-can-write"
    unsafe_dir.mkdir()
    os.chmod(unsafe_dir, 0o777)
    lib = unsafe_dir / EXAMPLE
    shutil.copy(plugin_dir / EXAMPLE, lib)
    os.chmod(lib, 0o755)
    refused(daemon_factory,
            f"cannot load plugin library {lib}: {unsafe_dir} is writable by group and others "
            "(mode 0777)", PLUGINS=lib, STORAGE_BACKEND="audit-posix",
            AUDIT_LOG=workdir / "audit.log")


def test_group_writable_library_is_refused(daemon_factory, plugin_dir, workdir):
    lib = workdir / EXAMPLE
    shutil.copy(plugin_dir / EXAMPLE, lib)
    os.chmod(lib, 0o775)
    refused(daemon_factory, f"cannot load plugin library {lib}: {lib} is writable by its group",
            PLUGINS=lib)
