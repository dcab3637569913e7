"""``python -m benchmarks.fanout``: fan-out through Redis, flask-asyncws against Django Channels and python-socketio.

For each system and group size: one redis-server, the system's app in two
worker processes (two server processes, each on its own port), N member
connections spread evenly over both from several load-client processes, and
one publisher process outside the servers. Phases: a fixed rate (``--rate``
deliveries/s over the whole group), the max rate (a closed loop with a bounded
number of messages in flight, the window growing 4x a step while the rate
grows), and an overload (open loop at ``--overload`` times the max rate).
Results, and how each figure is taken: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from ..client import raise_fd_limit
from .report import ratios, render
from .run import Options, run_system

SYSTEMS = ("asyncws", "channels", "socketio")


def csv(kind: t.Callable[[str], t.Any]) -> t.Callable[[str], list[t.Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--systems",
        type=csv(str),
        default=list(SYSTEMS),
        help="comma-separated: asyncws, channels, socketio (default all)",
    )
    parser.add_argument("--members", type=csv(int), default=None, help="group sizes (default 1000,10000; --quick 200)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (default 15; --quick 2)")
    parser.add_argument("--rate", type=float, default=5000.0, help="fixed phase: deliveries/s (default %(default)s)")
    parser.add_argument(
        "--window",
        type=int,
        default=20000,
        help="max phase: deliveries in flight at its first step, as whole messages, at least 4 (default %(default)s)",
    )
    parser.add_argument(
        "--overload",
        type=float,
        default=2.0,
        help="overload phase: times the max rate, open loop; 0 skips it (default %(default)s)",
    )
    parser.add_argument("--overload-duration", type=float, default=None, help="seconds (default 10; --quick 2)")
    parser.add_argument(
        "--phases",
        type=csv(str),
        default=["fixed", "max", "overload"],
        help="comma-separated: fixed, max, overload (default all)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        choices=(1, 2, 3),
        help="max phase: windows to try, 4x apart (default 3; --quick 1)",
    )
    parser.add_argument(
        "--drain", type=float, default=60.0, help="longest wait for a phase's last deliveries (default %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=2, help="load-client processes (default %(default)s)")
    parser.add_argument(
        "--asyncws-servers",
        type=csv(str),
        default=["hypercorn", "uvicorn"],
        help="servers for flask-asyncws (default hypercorn,uvicorn; the peers run under uvicorn)",
    )
    parser.add_argument(
        "--rss-limit",
        type=float,
        default=4000.0,
        help="MB, both workers together: stop a phase past it (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds per system")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--render", type=Path, help="print the table of an earlier --json file and exit")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args(argv)

    if args.render:
        earlier = json.loads(args.render.read_text())["results"]
        print(render(earlier))
        print(ratios(earlier))
        return 0
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if set(args.phases) - {"fixed", "max", "overload"}:
        parser.error(f"unknown phases in {args.phases}; choose from fixed, max, overload")
    members = args.members or ([200] if args.quick else [1000, 10000])
    duration = args.duration or (2.0 if args.quick else 15.0)
    overload_duration = args.overload_duration or (2.0 if args.quick else 10.0)
    raise_fd_limit()
    # SIGTERM ends the run as Ctrl-C does: through every finally, stopping every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="fanout-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = [
        (system, server)
        for system in SYSTEMS
        if system in args.systems
        for server in (args.asyncws_servers if system == "asyncws" else ["uvicorn"])
    ]
    results: list[dict[str, t.Any]] = []
    started = time.time()
    try:
        for n in members:
            for system, server in plan:
                print(f"{system}@{server}, {n:,} members", flush=True)
                opts = Options(
                    members=n,
                    fixed_rate=args.rate,
                    duration=duration,
                    window=args.window,
                    overload=args.overload,
                    overload_duration=overload_duration,
                    drain=args.drain,
                    clients=args.clients,
                    rss_limit_mb=args.rss_limit,
                    log_dir=log_dir,
                    phases=args.phases,
                    max_steps=args.max_steps or (1 if args.quick else 3),
                )
                results.append(run_system(system, server, opts))
    except KeyboardInterrupt:
        print("interrupted: every process stopped", file=sys.stderr)
        return 130
    finally:
        if args.json and results:
            meta = {"argv": sys.argv[1:], "started": started, "seconds": time.time() - started}
            args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print()
    print(render(results))
    text = ratios(results)
    if text:
        print(text)
    print(f"\nlogs: {log_dir}")
    return 1 if any("failed" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
