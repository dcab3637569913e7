"""Run the benchmark suite and print one table: ``python -m benchmarks``.

Each configuration gets a fresh server process (pinned to CPU 0) and a fresh
load-client process (pinned to CPU 1) where ``taskset`` and two cores exist.
Configurations compared with each other run in interleaved rounds and their
ratios are taken within a round. Every process has a deadline, so a run
always ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

from .apps import session_cookie
from .client import raise_fd_limit
from .serve import LISTEN_BACKLOG

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("hypercorn", "uvicorn")
#: (label, app, path) of the echo apps served by hypercorn and uvicorn.
ECHO_APPS = (("sync", "sync", "/sync"), ("async", "async", "/async"), ("quart", "quart", "/echo"), ("raw", "raw", "/"))
FLASK_SOCK = ("flask-sock", "flask-sock", "/echo")
#: Floors for handshakes and memory. The raw echo holding a Flask request
#: context per connection: the least any extension giving handlers Flask's
#: context can cost. The same with the echo loop as sync code in a greenlet: the
#: least a sync handler that waits in a greenlet can cost.
FLOORS = (("flask-ctx", "floor", "/floor"), ("greenlet-ctx", "greenlet-floor", "/floor"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass
class Options:
    quick: bool
    repeat: int
    duration: float
    warmup: float
    connections: tuple[int, ...]
    handshake_concurrency: int
    memory_stages: tuple[int, ...]
    flask_sock_memory: int
    scale_connections: int
    scale_duration: float
    #: Round trips a window must count before it closes (a smoke run must measure work).
    min_count: int


def pinned(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


# -- the server process ---------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's worker is a child)."""
    found = [pid]
    for p in found:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    found.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _over_tree(pid: int, name: str, read: t.Callable[[str], float]) -> float:
    """``read`` applied to ``/proc/<p>/<name>`` of ``pid`` and its descendants, summed."""
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/{name}") as f:
                total += read(f.read())
        except OSError:
            pass
    return total


def rss_bytes(pid: int) -> int:
    return int(_over_tree(pid, "statm", lambda text: int(text.split()[1]) * PAGE))


def tcp_retransmits() -> int | None:
    """The kernel's count of retransmitted TCP segments (all sockets).

    On loopback a retransmission means a dropped packet (a burst larger than
    ``net.core.netdev_max_backlog``), which costs a 200 ms+ timeout: a run
    where this grows has latency the apps did not cause.
    """
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Tcp:")]
        return int(lines[1][lines[0].index("RetransSegs")])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    def user_and_system(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    return _over_tree(pid, "stat", user_and_system)


class Server:
    """One app under one server, in its own process, on a fresh port."""

    def __init__(self, server: str, app: str, threads: int = 100) -> None:
        self.name = f"{app}@{server}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(LISTEN_BACKLOG)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        self.log = None if os.environ.get("BENCH_SERVER_LOGS") else open(os.devnull, "wb")
        command = [
            *pinned(0),
            sys.executable,
            "-m",
            "benchmarks.serve",
            server,
            app,
            str(fd),
            "--threads",
            str(threads),
        ]
        self.proc = subprocess.Popen(command, pass_fds=[fd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)
        self.sock.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    if s.recv(16).startswith(b"HTTP/1.1"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log is not None:
            self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()


# -- the client process ---------------------------------------------------


def drive(
    server: Server, mode: str, path: str, deadline: float, settle: float = 1.0, **args: t.Any
) -> dict[str, t.Any]:
    """Run the load client against ``server``; add the server's CPU and RSS."""
    command = [
        *pinned(1),
        sys.executable,
        "-m",
        "benchmarks.client",
        mode,
        server.url(path),
        "--deadline",
        str(deadline),
    ]
    for key, value in args.items():
        if value is not None:
            command += [
                f"--{key.replace('_', '-')}",
                ",".join(map(str, value)) if isinstance(value, tuple) else str(value),
            ]
    rss_base = rss_bytes(server.pid)
    peak = [rss_base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_bytes(server.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    killer = threading.Timer(deadline + 30, proc.kill)
    killer.start()
    result: dict[str, t.Any] = {}
    stages: list[dict[str, t.Any]] = []
    cpu0 = wall0 = 0.0
    retrans0: int | None = None
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            event = json.loads(line)
            kind = event.pop("event")
            if kind == "start":
                cpu0, wall0, retrans0 = cpu_seconds(server.pid), time.perf_counter(), tcp_retransmits()
            elif kind == "end":
                result["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - wall0)
                retrans = tcp_retransmits()
                if retrans is not None and retrans0 is not None:
                    result["retransmits"] = retrans - retrans0
            elif kind == "stage":
                time.sleep(settle)  # let the server settle its allocations
                rss = rss_bytes(server.pid)
                event["rss"] = rss
                event["per_connection"] = (rss - rss_base) / event["open"] if event["open"] else None
                stages.append(event)
                proc.stdin.write("\n")
                proc.stdin.flush()
            elif kind == "result":
                result.update(event)
        proc.wait(30)
    finally:
        killer.cancel()
        done.set()
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0 and "failed" not in result:
        result["failed"] = f"client exited with {proc.returncode}"
    if server.proc.poll() is not None:
        result["failed"] = f"server exited with {server.proc.returncode}"
    result["rss_base"] = rss_base
    result["rss_peak"] = peak[0]
    result["stages"] = stages
    return result


# -- the groups -------------------------------------------------------------

Row = dict[str, t.Any]


#: Per message the Flask-context floor costs what raw costs. The greenlet floor
#: shows what a sync handler waiting in a greenlet costs at least; the async
#: floor what an async handler costs through one ``websocket`` object for both
#: handler kinds, with none of the checks that object makes.
ECHO_FLOORS = (FLOORS[1], ("async-ctx", "async-floor", "/floor"))


Case = tuple[str, str, str, str]  # label, server, app, path


def echo_sets() -> t.Iterator[list[Case]]:
    """The configurations compared with each other: one set per server.

    Flask-Sock joins uvicorn's set, the server it is compared with.
    """
    for server in SERVERS:
        cases = [(label, server, app, path) for label, app, path in (*ECHO_APPS, *ECHO_FLOORS)]
        if server == "uvicorn":
            cases.append((FLASK_SOCK[0], "gunicorn", FLASK_SOCK[1], FLASK_SOCK[2]))
        yield cases


def in_rounds(
    cases: list[Case], repeat: int, run: t.Callable[[Case], dict[str, t.Any]]
) -> list[list[dict[str, t.Any]]]:
    """Run every case once per round, rotating the order each round.

    This machine's speed drifts by 10-20% over minutes (and more with many
    connections, whose working set outgrows the CPU's caches): runs of one
    configuration back to back would compare a fast minute with a slow one.
    Runs of one round sit next to each other in time, and each carries its
    round number, so ratios are taken within a round (see ``paired``).
    """
    runs: list[list[dict[str, t.Any]]] = [[] for _ in cases]
    for round_ in range(repeat):
        for offset in range(len(cases)):
            i = (round_ + offset) % len(cases)
            runs[i].append({**run(cases[i]), "round": round_})
    return runs


def echo_run(opts: Options, conns: int, case: Case) -> dict[str, t.Any]:
    _, server, app, path = case
    with Server(server, app, threads=conns + 10) as srv:
        return drive(
            srv,
            "echo",
            path,
            deadline=opts.warmup + opts.duration + 90,
            connections=conns,
            duration=opts.duration,
            min_count=opts.min_count,
            warmup=opts.warmup,
        )


def group_echo(opts: Options) -> list[Row]:
    rows = []
    for conns in opts.connections:
        for cases in echo_sets():
            runs = in_rounds(cases, opts.repeat, functools.partial(echo_run, opts, conns))
            for (label, server, _, _), case_runs in zip(cases, runs, strict=True):
                rows.append({"group": "echo", "app": label, "server": server, "connections": conns, "runs": case_runs})
                report_progress(rows[-1])
    return rows


def handshake_run(opts: Options, case: Case) -> dict[str, t.Any]:
    _, server, app, path = case
    with Server(server, app, threads=opts.handshake_concurrency + 10) as srv:
        return drive(
            srv,
            "handshake",
            path,
            deadline=opts.warmup + opts.duration + 90,
            connections=opts.handshake_concurrency,
            duration=opts.duration,
            min_count=opts.min_count,
            warmup=opts.warmup,
            cookie="session=" + session_cookie() if app == "session" else None,
        )


def group_handshake(opts: Options) -> list[Row]:
    rows = []
    for server in SERVERS:
        cases = [(label, server, app, path) for label, app, path in (*ECHO_APPS, ("session", "session", "/session"))]
        cases += [(label, server, app, path) for label, app, path in FLOORS]
        if server == "uvicorn":
            cases.append((FLASK_SOCK[0], "gunicorn", FLASK_SOCK[1], FLASK_SOCK[2]))
        runs = in_rounds(cases, opts.repeat, functools.partial(handshake_run, opts))
        for (label, server_, _, _), case_runs in zip(cases, runs, strict=True):
            row = {"group": "handshake", "app": label, "server": server_, "connections": opts.handshake_concurrency}
            row["runs"] = case_runs
            rows.append(row)
            report_progress(row)
    return rows


def group_memory(opts: Options) -> list[Row]:
    rows = []
    cases = [(label, server, app, path, opts.memory_stages) for server in SERVERS for label, app, path in ECHO_APPS]
    cases += [(label, server, app, path, opts.memory_stages) for label, app, path in FLOORS for server in SERVERS]
    cases.append((*FLASK_SOCK[:1], "gunicorn", *FLASK_SOCK[1:], (opts.flask_sock_memory,)))
    for label, server, app, path, stages in cases:
        runs = []
        for _ in range(opts.repeat):
            with Server(server, app, threads=max(stages) + 10) as srv:
                runs.append(
                    drive(
                        srv,
                        "idle",
                        path,
                        deadline=300,
                        settle=0.2 if opts.quick else 1.0,
                        stages=tuple(stages),
                        source_addresses=4,
                    )
                )
        for i, stage in enumerate(stages):
            rows.append(
                {
                    "group": "memory",
                    "app": label,
                    "server": server,
                    "connections": stage,
                    "runs": [_stage_run(run, i) for run in runs],
                }
            )
            report_progress(rows[-1])
    return rows


def _stage_run(run: dict[str, t.Any], index: int) -> dict[str, t.Any]:
    stages = run.get("stages") or []
    if index >= len(stages):
        return {"failed": run.get("failed", "stage not reached"), "errors": run.get("errors", 0)}
    stage = stages[index]
    return {
        **run,
        "open": stage["open"],
        "per_connection": stage["per_connection"],
        "rss": stage["rss"],
        # The client names every connection it failed to open, so a shortfall
        # is already among the errors; max() keeps an unnamed one visible.
        "errors": max(stage["errors"], stage["target"] - stage["open"]),
        "error_kinds": stage["error_kinds"],
    }


def group_scale(opts: Options) -> list[Row]:
    rows = []
    for server in SERVERS:
        runs = []
        for _ in range(opts.repeat):
            with Server(server, "sync") as srv:
                runs.append(
                    drive(
                        srv,
                        "scale",
                        "/sync",
                        deadline=opts.scale_duration + 240,
                        connections=opts.scale_connections,
                        duration=opts.scale_duration,
                        min_count=opts.min_count,
                        warmup=opts.warmup * 2,
                        source_addresses=4,
                    )
                )
        rows.append(
            {"group": "scale", "app": "sync", "server": server, "connections": opts.scale_connections, "runs": runs}
        )
        report_progress(rows[-1])
    return rows


def group_http(opts: Options) -> list[Row]:
    """The HTTP rows: ``http_bench.py``'s own table (it drives servers with ``wrk``)."""
    command = [sys.executable, str(ROOT / "benchmarks" / "http_bench.py")]
    if opts.quick:
        command.append("--quick")
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return [{"group": "http", "output": "", "failed": "timed out"}]
    row: Row = {"group": "http", "output": done.stdout}
    if done.returncode not in (0, 3):  # 3: a target missed, figures still valid
        row["failed"] = f"exited with {done.returncode}: {done.stderr.strip()[-500:]}"
    return [row]


GROUPS = {
    "echo": group_echo,
    "handshake": group_handshake,
    "memory": group_memory,
    "scale": group_scale,
    "http": group_http,
}


# -- the table ------------------------------------------------------------


def failures(row: Row) -> list[str]:
    """Why a row is not clean: failed processes, errors, short connection counts."""
    problems = []
    for run in row.get("runs", [row]):
        if run.get("failed"):
            problems.append(run["failed"])
        if run.get("errors"):
            problems.append(f"{run['errors']} errors {run.get('error_kinds', '')}".strip())
        opened = run.get("opened", run.get("open"))
        if row["group"] in ("echo", "scale") and opened is not None and opened < row["connections"]:
            problems.append(f"opened {opened}/{row['connections']}")
    return problems


def med(row: Row | None, key: str) -> float | None:
    """The median of ``key`` over the row's runs (None for a missing row)."""
    if row is None:
        return None
    values = [float(r[key]) for r in row["runs"] if r.get(key) is not None]
    return statistics.median(values) if values else None


def spread(row: Row, key: str) -> float | None:
    """(max - min) / median of the runs, the run-to-run noise."""
    values = [float(r[key]) for r in row["runs"] if r.get(key) is not None]
    if len(values) < 2 or not statistics.median(values):
        return None
    return (max(values) - min(values)) / statistics.median(values)


def maxof(row: Row, key: str) -> float | None:
    values = [r[key] for r in row["runs"] if r.get(key) is not None]
    return max(values) if values else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def find(rows: list[Row], group: str, app: str, server: str, conns: int | None = None) -> Row | None:
    for row in rows:
        if (
            row["group"] == group
            and row["app"] == app
            and row["server"] == server
            and (conns is None or row["connections"] == conns)
        ):
            return row
    return None


def round_ratios(row: Row | None, base: Row | None, key: str = "rate") -> list[float]:
    """``row`` over ``base`` in each round both ran in."""
    if row is None or base is None:
        return []
    by_round: dict[int, float] = {r["round"]: r[key] for r in base["runs"] if "round" in r and r.get(key)}
    return [
        float(r[key]) / by_round[r["round"]]
        for r in row["runs"]
        if r.get(key) is not None and by_round.get(r.get("round"))
    ]


def paired(row: Row | None, base: Row | None, key: str = "rate") -> float | None:
    """``row`` over ``base``: the median of the ratios within each round.

    Rows run outside rounds (memory, scale) fall back to the ratio of medians.
    """
    ratios = round_ratios(row, base, key)
    if ratios:
        return statistics.median(ratios)
    mine, theirs = med(row, key), med(base, key)
    return mine / theirs if mine is not None and theirs else None


def ratio_range(row: Row | None, base: Row | None) -> str:
    """The paired ratio with its lowest and highest round: ``0.91 (0.88-0.93)``."""
    ratios = round_ratios(row, base)
    if len(ratios) < 2 or row is base:
        return ratio(paired(row, base))
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def ratio(value: float | None) -> str:
    return fmt(value, ".2f")


def render(rows: list[Row]) -> str:
    out: list[str] = []
    echo = [r for r in rows if r["group"] == "echo"]
    if echo:
        out.append("## Echo: 64-byte text, request/response (median of runs; spread = (max-min)/median)")
        out.append(
            "| server | app | conns | msg/s | spread | p50 ms | p99 ms | ×raw | ×quart"
            " | server CPU | client CPU | TCP rexmit | errors |"
        )
        out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
        for r in echo:
            rate = med(r, "rate")
            raw = find(rows, "echo", "raw", r["server"], r["connections"])
            quart = find(rows, "echo", "quart", r["server"], r["connections"])
            out.append(
                f"| {r['server']} | {r['app']} | {r['connections']} | {fmt(rate)} | {fmt(spread(r, 'rate'), '.0%')}"
                f" | {fmt(med(r, 'p50_ms'), '.2f')} | {fmt(med(r, 'p99_ms'), '.2f')}"
                f" | {ratio_range(r, raw)} | {ratio(paired(r, quart))}"
                f" | {fmt(med(r, 'server_cpu'), '.0%')} | {fmt(med(r, 'client_cpu'), '.0%')}"
                f" | {fmt(maxof(r, 'retransmits'))} | {'; '.join(failures(r)) or 0} |"
            )
    hs = [r for r in rows if r["group"] == "handshake"]
    if hs:
        out.append("")
        out.append(f"## Handshakes: open, one echo, close, at concurrency {hs[0]['connections']}")
        out.append(
            "| server | app | handshakes/s | spread | p50 ms | p99 ms | ×raw | server CPU | client CPU | errors |"
        )
        out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
        for r in hs:
            rate = med(r, "rate")
            raw = find(rows, "handshake", "raw", r["server"])
            out.append(
                f"| {r['server']} | {r['app']} | {fmt(rate)} | {fmt(spread(r, 'rate'), '.0%')}"
                f" | {fmt(med(r, 'p50_ms'), '.2f')} | {fmt(med(r, 'p99_ms'), '.2f')}"
                f" | {ratio(paired(r, raw))} | {fmt(med(r, 'server_cpu'), '.0%')}"
                f" | {fmt(med(r, 'client_cpu'), '.0%')} | {'; '.join(failures(r)) or 0} |"
            )
    mem = [r for r in rows if r["group"] == "memory"]
    if mem:
        out.append("")
        out.append("## Memory: server RSS per idle open connection (after one echo each)")
        out.append("| server | app | conns | KiB/conn | spread | RSS MiB | ×raw | errors |")
        out.append("|---|---|--:|--:|--:|--:|--:|---|")
        for r in mem:
            per = med(r, "per_connection")
            raw = find(rows, "memory", "raw", r["server"], r["connections"])
            out.append(
                f"| {r['server']} | {r['app']} | {r['connections']} | {fmt(per and per / 1024, '.1f')}"
                f" | {fmt(spread(r, 'per_connection'), '.0%')} | {fmt((med(r, 'rss') or 0) / 2**20, '.0f')}"
                f" | {ratio(paired(r, raw, 'per_connection'))} | {'; '.join(failures(r)) or 0} |"
            )
    scale = [r for r in rows if r["group"] == "scale"]
    if scale:
        out.append("")
        out.append("## Scale: sync handler, every connection echoing once a second")
        out.append(
            "| server | conns | echoes/s | p50 ms | p99 ms | peak RSS MiB"
            " | server CPU | client CPU | TCP rexmit | errors |"
        )
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
        for r in scale:
            out.append(
                f"| {r['server']} | {r['connections']} | {fmt(med(r, 'rate'))} | {fmt(med(r, 'p50_ms'), '.2f')}"
                f" | {fmt(med(r, 'p99_ms'), '.2f')} | {fmt((med(r, 'rss_peak') or 0) / 2**20, '.0f')}"
                f" | {fmt(med(r, 'server_cpu'), '.0%')} | {fmt(med(r, 'client_cpu'), '.0%')}"
                f" | {fmt(maxof(r, 'retransmits'))} | {'; '.join(failures(r)) or 0} |"
            )
    for r in rows:
        if r["group"] == "http":
            out.append("")
            out.append("## HTTP (benchmarks/http_bench.py)")
            out.extend(["```", r.get("output", "").strip() or "(no output)", "```"])
            if r.get("failed"):
                out.append(f"failed: {r['failed']}")
    targets = check_targets(rows)
    if targets:
        out.append("")
        out.append("## Targets (ratios within this run)")
        out.extend(f"- {'PASS' if ok else 'MISS'} {text}" for ok, text in targets)
    return "\n".join(out)


def check_targets(rows: list[Row]) -> list[tuple[bool, str]]:
    checks: list[tuple[bool, str]] = []

    def over(group: str, app: str, server: str, base: str, base_server: str | None = None, **kw: t.Any) -> float | None:
        conns = kw.pop("conns", None)
        return paired(
            find(rows, group, app, server, conns), find(rows, group, base, base_server or server, conns), **kw
        )

    def check(value: float | None, limit: float, text: str, above: bool = True) -> None:
        if value is None:
            return
        checks.append(
            (
                value >= limit if above else value <= limit,
                f"{text}: {value:.2f} (target {'≥' if above else '≤'} {limit})",
            )
        )

    conns_seen = sorted({r["connections"] for r in rows if r["group"] == "echo" and r["connections"] > 1})
    for conns in conns_seen:
        for app in ("sync", "async"):
            for server in SERVERS:
                check(over("echo", app, server, "raw", conns=conns), 0.9, f"echo {app}@{server} ×raw at {conns}")
            check(over("echo", app, "hypercorn", "quart", conns=conns), 1.15, f"echo {app}@hypercorn ×quart at {conns}")
            check(
                over("echo", app, "uvicorn", "flask-sock", "gunicorn", conns=conns),
                1.0,
                f"echo {app}@uvicorn ×flask-sock at {conns}",
            )
            for server in SERVERS:
                check(
                    over("echo", app, server, "quart", conns=conns, key="p99_ms"),
                    1.0,
                    f"p99 {app}@{server} ÷ quart's at {conns}",
                    above=False,
                )
    for app in ("sync", "async", "session"):
        for server in SERVERS:
            check(over("handshake", app, server, "raw"), 0.8, f"handshakes {app}@{server} ×raw")
    for conns in sorted({r["connections"] for r in rows if r["group"] == "memory"}):
        for app in ("sync", "async"):
            for server in SERVERS:
                check(
                    over("memory", app, server, "raw", conns=conns, key="per_connection"),
                    1.3,
                    f"RSS/conn {app}@{server} ÷ raw's at {conns}",
                    above=False,
                )
    for r in rows:
        if r["group"] == "scale":
            problems = failures(r)
            checks.append(
                (not problems, f"scale {r['connections']} sync@{r['server']}: {'; '.join(problems) or 'zero errors'}")
            )
    return checks


def report_progress(row: Row) -> None:
    runs = row["runs"]
    keys = ("rate", "p99_ms", "per_connection", "errors", "failed")
    brief = [
        {k: (round(r[k], 2) if isinstance(r.get(k), float) else r.get(k)) for k in keys if r.get(k) is not None}
        for r in runs
    ]
    print(
        f"  {row['group']:9} {row['server']:9} {row['app']:10} {row['connections']:>6}  {brief}",
        file=sys.stderr,
        flush=True,
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds per group with small counts (smoke test)")
    parser.add_argument("--only", action="append", choices=GROUPS, help="run only this group (repeatable)")
    parser.add_argument("--repeat", type=int, help="runs per configuration (default 2, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per echo/handshake run (default 4)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default 1)")
    parser.add_argument("--connections", help="comma-separated echo concurrencies (default 1,100,1000)")
    parser.add_argument("--scale-duration", type=float, help="seconds of the scale run (default 30)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--render", type=Path, help="print the table of results written by --json, run nothing")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        print(f"Machine: {saved['machine']}.\n")
        print(render(saved["rows"]))
        return 1 if any(failures(r) for r in saved["rows"]) else 0
    quick = args.quick
    opts = Options(
        quick=quick,
        repeat=args.repeat or (1 if quick else 2),
        duration=args.duration or (0.3 if quick else 4.0),
        warmup=args.warmup if args.warmup is not None else (0.1 if quick else 1.0),
        connections=tuple(int(c) for c in args.connections.split(","))
        if args.connections
        else ((10,) if quick else (1, 100, 1000)),
        handshake_concurrency=5 if quick else 50,
        memory_stages=(20,) if quick else (2000, 10000),
        flask_sock_memory=20 if quick else 2000,
        scale_connections=50 if quick else 10000,
        scale_duration=args.scale_duration or (1.0 if quick else 30.0),
        min_count=20 if quick else 0,
    )
    raise_fd_limit()
    groups = args.only or list(GROUPS)
    print(f"# {machine()}; server on CPU 0, client on CPU 1: {bool(pinned(0))}", file=sys.stderr, flush=True)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in groups:
        print(f"{name}:", file=sys.stderr, flush=True)
        rows.extend(GROUPS[name](opts))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "options": dataclasses.asdict(opts), "rows": rows}, indent=1)
        )
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    print(f"Machine: {machine()}. Command: {command}")
    print(f"Total time {time.perf_counter() - started:.0f}s.\n")
    print(render(rows))
    return 1 if any(failures(r) for r in rows) else 0
