"""Profile a server under echo load with py-spy and print where the time goes.

``python -m benchmarks.profile sync uvicorn --connections 100 --seconds 10``
(``--mode handshake`` profiles opening and closing connections instead)
(needs ``pip install py-spy``). Prints the functions with the most samples,
by self time and by inclusive time, and writes the collapsed stacks next to
the given ``--out`` path for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import threading
from pathlib import Path

from .groups import ECHO_APPS, FLASK_SOCK
from .procs import Server, drive


def summarize(collapsed: str, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].rsplit(":", 1)[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "self:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    apps = {label: (app, path) for label, app, path in (*ECHO_APPS, FLASK_SOCK)}
    parser.add_argument("app", choices=apps)
    parser.add_argument("server", choices=("hypercorn", "uvicorn", "gunicorn"))
    parser.add_argument("--mode", choices=("echo", "handshake"), default="echo")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("profile.txt"))
    args = parser.parse_args(argv)
    app, path = apps[args.app]
    with Server(args.server, app, threads=args.connections + 10) as server:
        spy = [
            "py-spy",
            "record",
            "-p",
            str(server.pid),
            "-d",
            str(int(args.seconds)),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(args.out),
            "--nonblocking",
        ]
        recorder = threading.Thread(target=subprocess.run, args=(spy,), kwargs={"capture_output": True})
        load = threading.Thread(
            target=drive,
            args=(server, args.mode, path),
            kwargs={
                "deadline": args.seconds + 120,
                "connections": args.connections,
                "duration": args.seconds + 2,
                "warmup": 0.5,
            },
        )
        load.start()
        recorder.start()
        recorder.join(args.seconds + 60)
        load.join(args.seconds + 120)
    print(summarize(args.out.read_text(), args.top))


if __name__ == "__main__":
    main()
