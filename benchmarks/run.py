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
import json
import sys
import time
from pathlib import Path

from .client import raise_fd_limit
from .groups import GROUPS, Options, Row
from .procs import pinned
from .report import failures, machine, render


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
