#!/usr/bin/env python3
"""Profile ONE uftpd transfer, to see where a benchmark gap comes from.

    bench/profile.py [--tool perf|callgrind|strace] [--streams N]
                     [--codec plain|Blowfish|AES-128|AES-256|gzip|gzip+AES-128|zstd|"zstd -1"|ChaCha20-Poly1305]
                     [--dir down|up] [--mib SIZE] [--client curl|uftpc]
                     [--side server|client]

Starts uftpd (UFTPD_BIN, default target/release/uftpd) under the tool, with
the session processes followed, runs one transfer with uftpc (UFTPC_BIN) or
curl, stops the daemon and prints the report. With `--side client` the
daemon runs plainly and the client runs under the tool instead (where a
transfer is bound by the client on the same cores):

- perf: `perf record -e cpu-clock` (software clock: works where hardware
  counters do not), then the top symbols of the session process;
- callgrind: instruction counts (repeatable on a noisy machine), top
  functions by inclusive and self cost;
- strace: system calls of the session (count, time) — `strace -f -c`.

Run as root (sessions run as 'nobody'). Scratch files in /dev/shm/uftpd-prof.
Reports are kept in /tmp/uftpd-prof-<tool>-<case>.txt.
"""

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import driver as D  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", default="perf", choices=["perf", "callgrind", "strace"])
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--codec", default="plain")
    ap.add_argument("--dir", default="down", choices=["down", "up"])
    ap.add_argument("--mib", type=int, default=0, help="file size (default 1024, callgrind 64)")
    ap.add_argument("--client", default="uftpc", choices=["uftpc", "curl"])
    ap.add_argument("--side", default="server", choices=["server", "client"])
    ap.add_argument("--lines", type=int, default=45)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if not shutil.which(a.tool if a.tool != "callgrind" else "valgrind"):
        raise SystemExit(f"{a.tool} is not installed")
    size = (a.mib or (64 if a.tool == "callgrind" else 1024)) * D.MiB
    env = D.ENV
    env.smoke = False
    env.bench_dir = pathlib.Path("/dev/shm/uftpd-prof")
    env.work = env.bench_dir / f"run.{os.getpid()}"
    env.work.mkdir(parents=True, exist_ok=True)
    os.chmod(env.work, 0o755)
    env.data = env.work / "data"
    env.vsroot = env.work / "vsroot"
    env.acl = env.work / "uftpd.acl"
    env.acl.write_text("")
    env.uftpd_bin = os.environ.get("UFTPD_BIN", str(D.REPO / "target/release/uftpd"))
    env.uftpc_bin = os.environ.get("UFTPC_BIN", str(D.REPO / "target/release/uftpc"))
    env.user = "nobody"
    env.data.mkdir()
    os.chmod(env.data, 0o777)
    os.chown(env.data, 65534, 65534)
    src = env.data / "f.bin"
    if a.codec == "plain":
        with open(src, "wb") as f:
            for _ in range(size // D.MiB):
                f.write(os.urandom(D.MiB))
    else:
        D.make_semi(src, size)
    os.chmod(src, 0o644)
    case = f"{a.codec}-{a.streams}-{a.dir}-{a.client}"
    if a.side == "client":
        case += "-client"
    out = pathlib.Path(f"/tmp/uftpd-prof-{a.tool}-{case}")
    srv = D.Uftpd(env, D.CODEC_SERVER_CONFIG.get(a.codec))
    conf = env.work / "uftpd.conf"
    conf.write_text("".join(f'export {k}="{v}"\n' for k, v in srv.config().items()))
    daemon = [env.uftpd_bin, "--config", str(conf)]
    if a.tool == "perf":
        wrap = ["perf", "record", "-e", "cpu-clock", "-F", "4000", "--call-graph", os.environ.get("PERF_CALLGRAPH", "fp"), "-o", f"{out}.data", "--"]
    elif a.tool == "callgrind":
        wrap = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                f"--callgrind-out-file={out}.%p.out"]
    else:
        wrap = ["strace", "-f", "-c", "-o", f"{out}.strace"]
    logf = open(env.work / "uftpd.log", "wb")
    proc = subprocess.Popen((wrap if a.side == "server" else []) + daemon, cwd=env.work, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    srv.proc = proc
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if "ListenPort" in D.cmd_request(srv.cmd_port, ["request-type=uftp-ping-request"], 5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("uftpd did not start:\n" + (env.work / "uftpd.log").read_text())
            time.sleep(0.2)
        spec = {c[0]: c for c in D.CODECS}
        kw = {"streams": a.streams}
        if a.codec != "plain":
            _, klen, algo, compress = spec[a.codec]
            kw.update(key=os.urandom(klen) if klen else None, algo=algo, compress=compress)
        secret = srv.announce(**kw)
        if a.client == "curl":
            argv = (D.curl_get(srv, secret, "f.bin") if a.dir == "down"
                    else D.curl_put(srv, secret, src, "up.bin"))
        else:
            argv = D.uftpc(srv, secret, ["get", "f.bin", "/dev/null"] if a.dir == "down"
                           else ["put", str(src), "up.bin"], **kw,
                           **D.CODEC_CLIENT_OPTIONS.get(a.codec, {}))
        if a.side == "client":
            argv = wrap + argv
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True)
        wall = time.monotonic() - t0
        print(f"{case}: rc={r.returncode} {size / D.MiB / wall:.0f} MiB/s under {a.tool} "
              f"{r.stderr.strip()[-200:]}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        logf.close()
        shutil.rmtree(env.work, ignore_errors=True)
    report = pathlib.Path(f"{out}.txt")
    if a.tool == "perf":
        rep = subprocess.run(["perf", "report", "-i", f"{out}.data", "--no-children",
                              "--sort", "comm,dso,sym", "--stdio", "-g", "none",
                              "--percent-limit", "0.5"],
                             capture_output=True, text=True).stdout
    elif a.tool == "callgrind":
        outs = sorted(pathlib.Path("/tmp").glob(f"{out.name}.*.out"), key=lambda p: p.stat().st_size)
        rep = ""
        if outs:  # the biggest profile is the session process
            rep = subprocess.run(["callgrind_annotate", "--inclusive=no", str(outs[-1])],
                                 capture_output=True, text=True).stdout
            rep += subprocess.run(["callgrind_annotate", "--inclusive=yes", str(outs[-1])],
                                  capture_output=True, text=True).stdout
    else:
        rep = pathlib.Path(f"{out}.strace").read_text()
    report.write_text(rep)
    lines = [ln for ln in rep.splitlines() if ln.strip() and not ln.startswith("#")]
    print("\n".join(lines[:a.lines]))
    print(f"(full report: {report})")


if __name__ == "__main__":
    main()
