"""The output a test reads from a server process is what the process printed, in order."""

from __future__ import annotations

import sys

from support.servers import ServerProcess

LINES = 20_000
PRINTER = f"""
import sys
for n in range({LINES}):
    sys.stdout.write(f"line {{n}}\\n")
    sys.stdout.flush()
"""


def test_reading_the_output_while_the_process_prints_loses_nothing() -> None:
    """Reading must not move the file offset the process writes at: if it did, a
    line printed during a read would overwrite the start of the output."""
    printed = "".join(f"line {n}\n" for n in range(LINES))
    with ServerProcess([sys.executable, "-c", PRINTER], name="printer") as printer:
        assert printer.proc is not None
        reads_while_printing = 0
        while printer.proc.poll() is None:
            so_far = printer.output
            assert printed.startswith(so_far[: so_far.rfind("\n") + 1])
            reads_while_printing += 0 < len(so_far) < len(printed)
        printer.proc.wait()
        assert reads_while_printing > 10, "the printer finished before its output was read while it printed"
        assert printer.output == printed
