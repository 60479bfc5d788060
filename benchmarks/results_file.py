"""Writes a benchmark's results as JSON, stamped with the date and the command."""

import json
import sys
import time
from pathlib import Path


def write(out, results) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out.write_text(json.dumps({"date": stamp, "command": " ".join(sys.argv), "results": results}, indent=2))
    print(f"wrote {out}")
    return out
