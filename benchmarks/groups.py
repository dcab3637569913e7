"""The benchmark groups: which configurations run, in which order, with which load.

Configurations compared with each other run in interleaved rounds, and each run
carries its round, so that ``report`` takes their ratios within a round.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
import typing as t

from .apps import session_cookie
from .procs import ROOT, Server, drive

SERVERS = ("hypercorn", "uvicorn")
#: (label, app, path) of the echo apps served by hypercorn and uvicorn.
ECHO_APPS = (("sync", "sync", "/sync"), ("async", "async", "/async"), ("quart", "quart", "/echo"), ("raw", "raw", "/"))
FLASK_SOCK = ("flask-sock", "flask-sock", "/echo")
#: Floors for handshakes and memory. The raw echo holding a Flask request
#: context per connection: the least any extension giving handlers Flask's
#: context can cost. The same with the echo loop as sync code in a greenlet: the
#: least a sync handler that waits in a greenlet can cost.
FLOORS = (("flask-ctx", "floor", "/floor"), ("greenlet-ctx", "greenlet-floor", "/floor"))


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
    round number, so ratios are taken within a round (see ``report.paired``).
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
