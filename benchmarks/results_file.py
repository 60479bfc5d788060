"""A benchmark's results: handed from a child process to its driver, and written as JSON.

Benchmarks measure in child processes (fresh graph, fresh thread pools). A
child prints its result as one `RESULT {json}` line (`hand_back`); the
driver runs it and reads that line (`from_child`).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

MARK = "RESULT "


def hand_back(result: dict) -> None:
    """In a child process: prints `result` as the line `from_child` reads."""
    print(MARK + json.dumps(result), flush=True)


def from_child(cmd, what: str, **run_kwargs) -> dict:
    """Runs `cmd` and returns the result it handed back; exits naming `what`, with the child's stderr, if it failed."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, **run_kwargs)
    lines = [line for line in out.stdout.splitlines() if line.startswith(MARK)]
    if out.returncode or not lines:
        sys.exit(f"{what} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def write(out, results) -> Path:
    """Writes `results` to `out`, stamped with the date and the command."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out.write_text(json.dumps({"date": stamp, "command": " ".join(sys.argv), "results": results}, indent=2))
    print(f"wrote {out}")
    return out
