"""The table of a fan-out run (``render``), from the results ``run_system`` returns."""

from __future__ import annotations

import typing as t

NAMES = {"asyncws": "flask-asyncws", "channels": "Channels", "socketio": "python-socketio"}


def label(result: dict[str, t.Any]) -> str:
    return f"{NAMES.get(result['system'], result['system'])} ({result['server']})"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render(results: list[dict[str, t.Any]]) -> str:
    lines = [
        "| system | members | phase | msg/s published | deliveries/s | p50 ms | p99 ms | lost | dup | out of order "
        "| server CPU µs/delivery | workers' CPU | client CPU | Redis CPU | RSS KiB/member | peak RSS MB | notes |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        if "failed" in r and not r.get("phases"):
            lines.append(f"| {label(r)} | {r['members']:,} | - | | | | | | | | | | | | | | failed: {r['failed']} |")
            continue
        for name, p in r["phases"].items():
            notes = []
            if p.get("window"):
                notes.append(f"window {p['window']} messages")
            if p.get("aborted"):
                notes.append(p["aborted"])
            if p.get("cut"):
                notes.append("cut: deliveries still arriving at the end of --drain")
            if (p.get("settled_before") or 0) > 2:
                notes.append(f"waited {p['settled_before']:.0f} s for the previous backlog")
            if p.get("stalled"):
                notes.append("stalled")
            if p.get("closed"):
                notes.append(f"{p['closed']} members closed")
            if p.get("redis_buffer_limit_closes"):
                notes.append(f"Redis closed {p['redis_buffer_limit_closes']} subscriber(s) at the output-buffer limit")
            if p.get("worker_log_lines"):
                notes.append(f"{p['worker_log_lines']} worker log lines")
            if p.get("publish_errors"):
                notes.append(f"publish errors {sum(p['publish_errors'].values())}")
            if p.get("offered_rate"):
                published = p["offered_rate"]
            elif p.get("published") and p["publish_seconds"]:
                published = p["published"] / p["publish_seconds"]
            else:
                published = None
            lines.append(
                "| "
                + " | ".join(
                    [
                        label(r),
                        f"{r['members']:,}",
                        name,
                        _num(published, 1),
                        _num(p["deliveries_per_s"]),
                        _num(p["p50_ms"], 1),
                        _num(p["p99_ms"], 1),
                        _num(p["lost"]),
                        _num(p["duplicates"]),
                        _num(p["out_of_order"]),
                        _num(p["server_cpu_us_per_delivery"], 1),
                        f"{p['server_cpu_share']:.0%}",
                        f"{p['client_cpu_share']:.0%}",
                        f"{p['redis_cpu_share']:.0%}",
                        _num(r.get("rss_per_member_kib"), 1),
                        _num(p["peak_rss_mb"]),
                        "; ".join(notes),
                    ]
                )
                + " |"
            )
        if "failed" in r:
            lines.append(f"| {label(r)} | {r['members']:,} | - | | | | | | | | | | | | | | failed: {r['failed']} |")
    return "\n".join(lines)


def ratios(results: list[dict[str, t.Any]]) -> str:
    """flask-asyncws against each peer at the same size: max-rate deliveries/s and fixed-rate p99."""
    out = []
    by = {(r["system"], r["server"], r["members"]): r for r in results if r.get("phases")}
    for (system, _server, members), r in sorted(by.items()):
        if system != "asyncws":
            continue
        for peer in ("socketio", "channels"):
            other = by.get((peer, "uvicorn", members))
            if other is None:
                continue
            try:
                rate = r["phases"]["max"]["deliveries_per_s"] / other["phases"]["max"]["deliveries_per_s"]
                p99 = r["phases"]["fixed"]["p99_ms"] / other["phases"]["fixed"]["p99_ms"]
            except (KeyError, TypeError, ZeroDivisionError):
                continue
            line = (
                f"- {label(r)} at {members:,} members: max-rate deliveries/s {rate:.2f}× {NAMES[peer]}'s, "
                f"fixed-rate p99 {p99:.2f}× its"
            )
            if peer == "socketio" and members >= 10000:
                # The targets of the groups work: at 10,000 members, 2x python-socketio's rate and half its p99.
                line += (
                    f" (targets ≥ 2.00: {'PASS' if rate >= 2 else 'MISS'}; ≤ 0.50: {'PASS' if p99 <= 0.5 else 'MISS'})"
                )
            out.append(line)
    return "\n".join(out)
