"""One system at one group size, from redis-server to the last phase (``run_system``)."""

from __future__ import annotations

import math
import subprocess
import tempfile
import threading
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from ..procs import cpu_seconds
from .common import FIXED, MAX_STEPS, OVERLOAD, PHASE_NAMES, Board, merge, percentile_ms
from .procs import Lines, Processes, Redis, Worker, child, environment


@dataclass
class Options:
    members: int
    fixed_rate: float  # deliveries per second, over the whole group
    duration: float  # seconds per phase
    window: int  # max-rate phase: deliveries in flight, rounded up to whole messages
    overload: float  # overload phase: this many times the max rate, open loop (0: no overload phase)
    overload_duration: float
    drain: float  # longest wait for the last deliveries of a phase
    clients: int  # load-client processes
    rss_limit_mb: float  # stop a phase when the two workers together pass this
    log_dir: Path
    phases: list[str]  # of "fixed", "max", "overload"
    max_steps: int  # at most this many windows in the max phase


#: A phase ends when nothing arrived for this many seconds after its last publish.
QUIET = 5.0
#: The max phase's window never holds more than this many seconds of deliveries at the best rate seen.
MAX_BACKLOG = 20.0


def loadavg() -> float | None:
    """The machine's one-minute load average: other work on it shows here."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def settle(
    board: Board,
    quiet: float,
    limit: float,
    check: t.Callable[[], None],
    until: t.Callable[[], bool] | None = None,
) -> float:
    """Wait until no frame arrived for ``quiet`` seconds (or ``until()``), at most ``limit``; the seconds waited."""
    started = last_change = time.monotonic()
    last = -1
    while time.monotonic() - started < limit:
        check()
        if until is not None and until():
            break
        frames = board.totals()["frames"]
        if frames != last:
            last, last_change = frames, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            break
        time.sleep(0.05)
    return time.monotonic() - started


class OverLimit(Exception):
    """The workers' memory passed ``--rss-limit``: the phase stops there."""


def log(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def run_system(system: str, server: str, opts: Options) -> dict[str, t.Any]:
    """Start everything, measure every phase, stop everything; the figures (or ``failed``)."""
    label = f"{system}@{server}"
    result: dict[str, t.Any] = {"system": system, "server": server, "members": opts.members, "phases": {}}
    procs = Processes()
    redis: Redis | None = None
    board: Board | None = None
    board_file = tempfile.NamedTemporaryFile(prefix="fanout-board-", delete=False)
    board_file.close()
    logs: list[t.IO[bytes]] = []

    def logfile(name: str) -> t.IO[bytes]:
        f = open(opts.log_dir / f"{label}-{opts.members}-{name}.log", "wb")
        logs.append(f)
        return f

    try:
        redis = Redis(procs, logfile("redis"))
        env = environment(redis.url)
        workers = [Worker(procs, server, system, env, logfile(f"worker{i}")) for i in range(2)]
        for w in workers:
            w.wait_ready()
        time.sleep(1.0)
        rss0 = sum(w.rss() for w in workers)
        result["rss_start_mb"] = rss0 / 2**20

        board = Board(board_file.name, opts.clients, create=True)
        urls = [
            f"ws://127.0.0.1:{w.port}" + ("/socket.io/?EIO=4&transport=websocket" if system == "socketio" else "/ws")
            for w in workers
        ]
        shares = [
            opts.members // opts.clients + (1 if i < opts.members % opts.clients else 0) for i in range(opts.clients)
        ]
        clients: list[Lines] = []
        offset = 0
        for i, share in enumerate(shares):
            # Client i starts on the worker where the previous one stopped: the members split evenly.
            ordered = urls[offset % 2 :] + urls[: offset % 2]
            offset += share
            args = [
                "--urls", ",".join(ordered),
                "--connections", str(share),
                "--protocol", "socketio" if system == "socketio" else "websocket",
                "--board", board_file.name,
                "--slots", str(opts.clients),
                "--slot", str(i),
            ]  # fmt: skip
            clients.append(child(procs, "benchmarks.fanout.client", args, env, logfile(f"client{i}"), f"client {i}"))

        def alive() -> None:
            for w in workers:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"worker {w.name} exited with {w.proc.returncode}")
            for c in clients:
                if c.proc.poll() is not None:
                    raise RuntimeError(f"{c.name} exited with {c.proc.returncode}")

        opened = 0
        connect_errors: list[dict[str, int]] = []
        started = time.monotonic()
        for c in clients:
            event = c.take(60 + opts.members / 50, alive)
            opened += event["open"]
            connect_errors.append(event["errors"])
        result["open"] = opened
        result["connect_seconds"] = time.monotonic() - started
        result["connect_errors"] = merge_counts(connect_errors)
        log(f"{label}: {opened}/{opts.members} members connected in {result['connect_seconds']:.1f}s")
        if opened < opts.members:
            raise RuntimeError(f"only {opened} of {opts.members} members connected: {result['connect_errors']}")

        publisher = child(
            procs,
            "benchmarks.fanout.publish",
            [system, "--board", board_file.name, "--slots", str(opts.clients)],
            env,
            logfile("publisher"),
            "publisher",
        )
        publisher.take(60, alive)

        # Members are in the group once each has received a "ready" message through it. Another one goes out
        # only when the last has stopped arriving, so a slow system is not buried under "ready" messages.
        started = time.monotonic()
        deadline = started + 60 + opts.members / 100
        while board.totals()["ready"] < opened:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {board.totals()['ready']} of {opened} members received 'ready'")
            alive()
            publisher.send(cmd="ready")
            publisher.take(30, alive)
            settle(board, 1.0, deadline - time.monotonic(), alive, until=lambda: board.totals()["ready"] >= opened)
        result["ready_seconds"] = time.monotonic() - started
        settle(board, 1.0, 60, alive)
        time.sleep(1.0)  # let the workers settle their allocations
        rss1 = sum(w.rss() for w in workers)
        result["rss_joined_mb"] = rss1 / 2**20
        result["worker_sockets"] = [w.sockets() for w in workers]
        result["rss_per_member_kib"] = (rss1 - rss0) / opened / 1024
        log(
            f"{label}: all members ready in {result['ready_seconds']:.1f}s, "
            f"{result['rss_per_member_kib']:.1f} KiB/member, sockets per worker {result['worker_sockets']}"
        )

        if "fixed" in opts.phases:
            command = {"cmd": "rate", "rate": opts.fixed_rate / opened, "duration": opts.duration}
            result["phases"]["fixed"] = measure(
                FIXED, command, publisher, clients, workers, redis, board, opened, opts, alive, label
            )
        if "max" in opts.phases:
            # A closed loop, at most `window` messages ahead of the slowest member; the window grows 4x a step
            # while the steady rate grows by more than 10%, and the best step is the max rate.
            window = max(4, math.ceil(opts.window / opened))
            steps: list[dict[str, t.Any]] = []
            for letter in MAX_STEPS[: opts.max_steps]:
                command = {"cmd": "window", "window": window, "duration": opts.duration, "stall": 10.0}
                steps.append(
                    measure(letter, command, publisher, clients, workers, redis, board, opened, opts, alive, label)
                )
                if "aborted" in steps[-1] or (
                    len(steps) > 1 and steps[-1]["deliveries_per_s"] < 1.1 * steps[-2]["deliveries_per_s"]
                ):
                    break
                window *= 4
                # No window the best rate so far would take over MAX_BACKLOG seconds to deliver.
                best_rate = max(step["deliveries_per_s"] for step in steps)
                if window * opened > MAX_BACKLOG * best_rate:
                    break
            best = max(steps, key=lambda step: step["deliveries_per_s"])
            result["phases"]["max"] = dict(best, steps=[{k: v for k, v in s.items() if k != "steps"} for s in steps])
        if "overload" in opts.phases and opts.overload > 0:
            # At a multiple of the max rate measured just before (or, without that phase, of the fixed rate).
            top = result["phases"].get("max", {}).get("deliveries_per_s") or opts.fixed_rate
            rate = max(1.0, opts.overload * top / opened)
            command = {"cmd": "rate", "rate": rate, "duration": opts.overload_duration}
            result["phases"]["overload"] = measure(
                OVERLOAD, command, publisher, clients, workers, redis, board, opened, opts, alive, label
            )
        result["redis"] = {
            "total_commands_processed": redis.info("stats").get("total_commands_processed"),
            "used_memory_peak_human": redis.info("memory").get("used_memory_peak_human"),
        }
        for lines in [*clients, publisher]:
            if lines.proc.poll() is None:
                lines.send(cmd="quit")
        # The members leave before the workers stop, as clients do.
        for lines in clients:
            try:
                lines.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
    except (RuntimeError, TimeoutError, OSError) as exc:
        result["failed"] = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
        log(f"{label}: FAILED: {exc}")
    finally:
        procs.stop_all()
        if board is not None:
            board.close()
        Path(board_file.name).unlink(missing_ok=True)
        if redis is not None:
            redis.cleanup()
        for f in logs:
            f.close()
    result["worker_log"] = worker_log_summary(opts.log_dir, label, opts.members)
    return result


def merge_counts(counts: t.Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def worker_log_summary(log_dir: Path, label: str, members: int) -> list[str]:
    """The first lines the workers wrote (warnings, errors), to show beside the figures."""
    lines: list[str] = []
    for i in range(2):
        path = log_dir / f"{label}-{members}-worker{i}.log"
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.strip() and len(lines) < 6:
                    lines.append(f"worker{i}: {line[:200]}")
    return lines


def measure(
    phase: str,
    command: dict[str, t.Any],
    publisher: Lines,
    clients: list[Lines],
    workers: list[Worker],
    redis: Redis,
    board: Board,
    members: int,
    opts: Options,
    alive: t.Callable[[], None],
    label: str,
) -> dict[str, t.Any]:
    """One phase: publish, wait for the last deliveries, collect every process's figures."""
    name = PHASE_NAMES[phase]
    # Whatever an earlier phase left in flight arrives first.
    backlog = settle(board, 1.0, opts.drain, alive)
    for c in clients:
        c.send(cmd="phase", phase=phase)
    time.sleep(0.1)
    peak = [sum(w.rss() for w in workers)]
    over_limit = threading.Event()
    done = threading.Event()

    #: (monotonic time, deliveries so far), every quarter second: the steady rate comes from these.
    progress: list[tuple[float, int]] = []

    def sample() -> None:
        while not done.wait(0.25):
            progress.append((time.monotonic(), board.totals()["received"]))
            rss = sum(w.rss() for w in workers)
            peak[0] = max(peak[0], rss)
            if rss > opts.rss_limit_mb * 2**20:
                over_limit.set()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def check() -> None:
        alive()
        if over_limit.is_set():
            raise OverLimit(f"stopped: the workers passed {opts.rss_limit_mb:.0f} MB together")

    buffer_closes0 = redis.buffer_limit_closes()
    log_lines0 = [len(w.log_lines()) for w in workers]
    cpu0 = [w.cpu() for w in workers]
    redis_cpu0 = cpu_seconds(redis.proc.pid)
    wall0, start = time.monotonic(), time.time()
    result: dict[str, t.Any] = {"phase": name, "loadavg_before": loadavg(), "settled_before": backlog}
    try:
        publisher.send(phase=phase, **command)
        try:
            done_event = publisher.take(command["duration"] + 120, check)
        except OverLimit as exc:
            # Stopped mid-phase: how many it published is unknown, so no loss count.
            publisher.proc.kill()
            result["aborted"] = str(exc)
            log(f"{label}: {name}: {exc}")
            done_event = {"published": None, "seconds": time.monotonic() - wall0, "cpu": None, "errors": {}}
        published = done_event["published"]
        expected = published * members if published is not None else None
        # Drain: until every delivery arrived, no frame of any kind arrived for QUIET seconds, or opts.drain
        # passed (then the phase is cut: what had not arrived counts as lost, and the note says so).
        last_frames, last_change = -1, time.monotonic()
        drain_end = time.monotonic() + (0 if "aborted" in result else opts.drain)
        while True:
            if time.monotonic() >= drain_end:
                result["cut"] = "aborted" not in result
                break
            try:
                check()
            except OverLimit as exc:
                result["aborted"] = f"{exc} while draining"
                log(f"{label}: {name}: {result['aborted']}")
                break
            totals = board.totals()
            if expected is not None and totals["received"] >= expected:
                break
            if totals["frames"] != last_frames:
                last_frames, last_change = totals["frames"], time.monotonic()
            elif time.monotonic() - last_change > QUIET:
                break
            time.sleep(0.05)
    finally:
        done.set()
        sampler.join()
    wall = time.monotonic() - wall0
    cpu = sum(w.cpu() for w in workers) - sum(cpu0)
    redis_cpu = cpu_seconds(redis.proc.pid) - redis_cpu0
    new_log_lines = [line for w, n in zip(workers, log_lines0, strict=True) for line in w.log_lines()[n:]]
    reports = []
    for c in clients:
        c.send(cmd="report", phase=phase)
        reports.append(c.take(30, alive))
    unique = sum(r["unique"] for r in reports)
    duplicates = sum(r["duplicates"] for r in reports)
    deliveries = unique + duplicates
    last = max((r["last"] for r in reports), default=0.0)
    histogram = merge(r["histogram"] for r in reports)
    seconds = (last - start) if last > start else wall
    if command["cmd"] == "rate" and published:
        # Open loop: over at least the schedule's span (published / rate), not only up to the last arrival.
        seconds = max(seconds, published / command["rate"])
    # While publishing, past the first quarter (the ramp): what the system keeps up, without ramp or drain.
    steady = [(at, n) for at, n in progress if wall0 + command["duration"] / 4 <= at <= wall0 + done_event["seconds"]]
    whole_rate = deliveries / seconds if seconds > 0 else 0.0
    steady_rate = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]) if len(steady) >= 4 else None
    result.update(
        published=published,
        publish_seconds=done_event["seconds"],
        publisher_cpu=done_event["cpu"],
        publish_errors=done_event["errors"],
        stalled=done_event.get("stalled", False),
        offered_rate=command.get("rate"),
        window=command.get("window"),
        expected=expected,
        deliveries=deliveries,
        # The headline: the schedule's rate at the fixed rate, the steady rate otherwise.
        deliveries_per_s=(steady_rate if phase != FIXED and steady_rate else whole_rate),
        whole_deliveries_per_s=whole_rate,
        steady_deliveries_per_s=steady_rate,
        lost=max(0, expected - unique) if expected is not None else None,
        duplicates=duplicates,
        out_of_order=sum(r["out_of_order"] for r in reports),
        p50_ms=percentile_ms(histogram, 50),
        p99_ms=percentile_ms(histogram, 99),
        max_ms=percentile_ms(histogram, 100),
        server_cpu_us_per_delivery=cpu / deliveries * 1e6 if deliveries else None,
        server_cpu_share=cpu / wall / 2,  # of the two workers together, 1.0 = both busy all the time
        redis_cpu_share=redis_cpu / wall,
        client_cpu_share=sum(r["cpu"] for r in reports) / wall,
        peak_rss_mb=peak[0] / 2**20,
        closed=sum(r["closed"] for r in reports),
        client_errors=merge_counts(r["errors"] for r in reports),
        unexpected_frames=sum(r["unexpected"] for r in reports),
        redis_buffer_limit_closes=redis.buffer_limit_closes() - buffer_closes0,
        loadavg_after=loadavg(),
        worker_log_lines=len(new_log_lines),
        worker_log_first=[line[:300] for line in new_log_lines[:5]],
    )
    log(
        f"{label}: {name}{(' window ' + str(command['window'])) if 'window' in command else ''}: "
        f"{published} messages, {deliveries} deliveries, "
        f"{result['deliveries_per_s']:.0f}/s, lost {result['lost']}, p99 {result['p99_ms'] or 0:.1f} ms"
    )
    return result
