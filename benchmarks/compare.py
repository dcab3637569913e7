"""Compare two checkouts' CPU cost per message and per handshake.

``python -m benchmarks.compare --before PYTHON:DIR --after PYTHON:DIR`` runs
``python -m benchmarks.overhead`` in each checkout, with the given Python and
the checkout's own ``benchmarks`` and ``flask_asyncws``, alternating between
the two round after round (before then after, then after then before, ...) so
that a busy minute of the machine weighs on both. It prints one table: per
configuration, each side's minimum over every repeat of every round (the
figure ``overhead`` says to compare), the change from before to after, and how
far the rounds moved. A configuration more than ``--threshold`` percent slower
by both the minimum and the median change within a round is flagged, and the
exit status is then 3; one that is slower by one of the two only is named.

It reads the tables ``overhead`` prints, so a checkout made before this tool
existed compares too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: Apps that run no code of this package: their change is the machine's noise.
CONTROLS = ("raw", "quart")
#: Each ``overhead`` run has this long before it counts as hung.
RUN_TIMEOUT = 900
#: The size of the environment moves where a process's stack starts, and with
#: it a program's speed by a percent or so; the two checkouts' directories
#: differ in length. Each run gets padding of a random size, so that effect
#: varies from run to run on both sides instead of once between them.
PADDING = "BENCHMARKS_COMPARE_PADDING"


@dataclasses.dataclass
class Checkout:
    label: str
    python: str
    directory: Path
    #: Per (measure, app), the minimum CPU µs of each round's run.
    rounds: dict[tuple[str, str], list[float]] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """Which Python, which code: the package's location and its commit."""
        probe = "import flask_asyncws, platform; print(flask_asyncws.__file__, platform.python_version())"
        done = subprocess.run(
            [self.python, "-c", probe], cwd=self.directory, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise SystemExit(f"{self.label}: {self.python} cannot import flask_asyncws: {done.stderr.strip()[-500:]}")
        location, version = done.stdout.split()
        if not Path(location).resolve().is_relative_to(self.directory.resolve()):
            raise SystemExit(f"{self.label}: {self.python} imports flask_asyncws from {location}, not {self.directory}")
        return f"{self.label}: {self.directory} at {git_state(self.directory)}, Python {version} ({self.python})"


def git_state(directory: Path) -> str:
    """The commit checked out in ``directory``, and whether tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git commit"
    return f"{head} with uncommitted changes" if dirty else head


def parse(output: str) -> dict[tuple[str, str], float]:
    """The ``CPU µs (min)`` column of each table ``overhead`` printed.

    A table follows its title line (``echo: ...``, ``handshake (...): ...``),
    whose first word names the measure.
    """
    figures: dict[tuple[str, str], float] = {}
    measure = ""
    for line in output.splitlines():
        if line and not line.startswith("|"):
            measure = line.split(":", 1)[0].split(" (", 1)[0].strip()
        elif line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            try:
                figures[(measure, cells[0])] = float(cells[1])
            except (IndexError, ValueError):
                continue  # the header and the separator
    return figures


def run_overhead(checkout: Checkout, extra: list[str]) -> float:
    """One ``overhead`` run in ``checkout``; its figures join the checkout's rounds. Returns wall seconds."""
    started = time.perf_counter()
    command = [checkout.python, "-m", "benchmarks.overhead", *extra]
    env = {**os.environ, PADDING: "x" * random.randrange(4096)}
    try:
        done = subprocess.run(
            command, cwd=checkout.directory, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{checkout.label}: {' '.join(command)} ran over {RUN_TIMEOUT}s") from None
    if done.returncode != 0:
        raise SystemExit(f"{checkout.label}: {' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    figures = parse(done.stdout)
    if not figures:
        raise SystemExit(f"{checkout.label}: no table in the output of {' '.join(command)}:\n{done.stdout[-2000:]}")
    for key, value in figures.items():
        checkout.rounds.setdefault(key, []).append(value)
    return time.perf_counter() - started


def spread(values: list[float]) -> float:
    """(max - min) / median: how far the rounds of one side moved."""
    return (max(values) - min(values)) / statistics.median(values)


def table(before: Checkout, after: Checkout, threshold: float) -> tuple[list[str], bool]:
    """The comparison as markdown lines, and whether any configuration is over the threshold."""
    lines = [
        "| measure | app | before µs | after µs | change | per round: median (min … max) | spread before / after | |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    slower = False
    for key, old in before.rounds.items():
        new = after.rounds.get(key)
        if new is None or len(new) != len(old):
            lines.append(f"| {key[0]} | {key[1]} | {min(old):.2f} | - | - | - | - | missing after |")
            continue
        change = min(new) / min(old) - 1
        per_round = [b / a - 1 for a, b in zip(old, new, strict=True)]
        # A slower build raises both the floor and the typical round; noise on a
        # busy machine moves one of them by 2-3% at times (a checkout compared
        # with itself did), rarely both.
        over = [change * 100 > threshold, statistics.median(per_round) * 100 > threshold]
        slower = slower or all(over)
        note = f"**over {threshold:g}% slower**" if all(over) else ""
        if any(over) and not all(over):
            note = f"over {threshold:g}% by the {'minimum' if over[0] else 'rounds'} only: noise or not, run again"
        if key[1] in CONTROLS:
            note = " ".join(filter(None, [note, "control: none of this package's code"]))
        lines.append(
            f"| {key[0]} | {key[1]} | {min(old):.2f} | {min(new):.2f} | {change:+.1%}"
            f" | {statistics.median(per_round):+.1%} ({min(per_round):+.1%} … {max(per_round):+.1%})"
            f" | {spread(old):.1%} / {spread(new):.1%} | {note} |"
        )
    for key in after.rounds.keys() - before.rounds.keys():
        lines.append(f"| {key[0]} | {key[1]} | - | {min(after.rounds[key]):.2f} | - | - | - | missing before |")
    return lines, slower


def checkout(label: str, spec: str) -> Checkout:
    python, sep, directory = spec.partition(":")
    if not sep or not python or not directory:
        raise SystemExit(f"--{label} takes PYTHON:DIR, got {spec!r}")
    if not (Path(directory) / "benchmarks" / "overhead.py").is_file():
        raise SystemExit(f"--{label}: {directory} has no benchmarks/overhead.py")
    return Checkout(label, python, Path(directory))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--before", required=True, metavar="PYTHON:DIR", help="the checkout to compare against")
    parser.add_argument("--after", required=True, metavar="PYTHON:DIR", help="the checkout measured against it")
    parser.add_argument("--rounds", type=int, default=40, help="overhead runs per checkout, alternating (default 40)")
    parser.add_argument("--repeat", type=int, default=2, help="overhead's --repeat in each run (default 2)")
    parser.add_argument("--messages", type=int, default=20000, help="overhead's --messages in each run (default 20000)")
    parser.add_argument("--threshold", type=float, default=2.0, help="percent slower that is flagged (default 2)")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    args = parser.parse_args(argv)
    sides = [checkout("before", args.before), checkout("after", args.after)]
    described = [side.describe() for side in sides]
    extra = ["--repeat", str(args.repeat), "--messages", str(args.messages)]
    started = time.perf_counter()
    for round_ in range(args.rounds):
        order = sides if round_ % 2 == 0 else sides[::-1]
        took = [f"{side.label} {run_overhead(side, extra):.0f}s" for side in order]
        print(f"round {round_ + 1}/{args.rounds}: {', '.join(took)}", file=sys.stderr, flush=True)
    lines, slower = table(sides[0], sides[1], args.threshold)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    side.label: {
                        "checkout": text,
                        "rounds": [{"measure": m, "app": a, "us": v} for (m, a), v in side.rounds.items()],
                    }
                    for side, text in zip(sides, described, strict=True)
                },
                indent=1,
            )
        )
    command = " ".join(["python -m benchmarks.compare", *(sys.argv[1:] if argv is None else argv)])
    print(f"Command: {command}")
    print(f"Total time {time.perf_counter() - started:.0f}s.")
    print("\n".join(f"- {line}" for line in described))
    print(
        f"\n`python -m benchmarks.overhead {' '.join(extra)}` in each checkout, {args.rounds} rounds alternating"
        " which side goes first. CPU µs per message (echo) or per connection (handshake): the minimum over every"
        " repeat of every round. Change: after over before. Per round: the change between the two runs of one"
        " round, the median and the extremes over the rounds. Spread: (max − min) / median of one side's rounds.\n"
    )
    print("\n".join(lines))
    return 3 if slower else 0


if __name__ == "__main__":
    raise SystemExit(main())
