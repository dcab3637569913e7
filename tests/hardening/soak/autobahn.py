"""Autobahn TestSuite cases against the soak app's echo routes under hypercorn.

The test suite runs cases 1-7, 9.1, 9.2 and a subset of the permessage-deflate
cases (12, 13); this runs any selection, by default all of 12 and 13, and
prints the verdicts per category as JSON.

Run: ``python tests/hardening/soak/autobahn.py [ROUTE] [CASE ...]`` (defaults ``/echo``,
``12.* 13.*``; ROUTE ``/aecho`` is the async handler).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import kosoku  # noqa: E402
from hardening.soak import APP  # noqa: E402
from support.servers import SocketServer  # noqa: E402


def main(route: str = "/echo", *cases: str) -> None:
    selection = list(cases) or ["12.*", "13.*"]
    with SocketServer("hypercorn", APP) as server:
        started = time.monotonic()
        try:
            results = asyncio.run(kosoku.run_fuzzingclient(server.ws_url + route, selection, concurrency=4))
        except kosoku.FailureError as failure:
            results = failure.results
        seconds = time.monotonic() - started
    not_passed = [f"{r.case_id}: {r.behavior.value}/{r.behavior_close.value}" for r in results if not r.passed]
    categories: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for result in results:
        categories[".".join(result.case_id.split(".")[:2])][result.behavior.value] += 1
    print(
        json.dumps(
            {
                "route": route,
                "cases": len(results),
                "seconds": round(seconds, 1),
                "categories": {name: dict(counts) for name, counts in categories.items()},
                "not_passed": not_passed,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
