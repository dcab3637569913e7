"""The table of a benchmark run: medians, spreads, ratios within rounds, targets."""

from __future__ import annotations

import os
import platform
import statistics
import typing as t

from .groups import SERVERS, Row


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
