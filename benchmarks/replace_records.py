"""Replace a sweep's records by re-measured ones of the same configuration (issue 12):

    python3 benchmarks/replace_records.py benchmarks/results/h100-sweep.jsonl NEW.jsonl

Every measured record of NEW.jsonl takes the place of the sweep's record with the same
configuration (kvsim.calibrate.config_key: model, layers, method, params, batch, context,
dtypes), keeping the replaced one's step and eager latency under ``replaced``; a new record
whose configuration the sweep lacks is refused. The file is rewritten whole (kvsim.outfile).
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.errors import KvsimError  # noqa: E402
from kvsim.records import read_jsonl, write_whole  # noqa: E402
from kvsim.runtime.sweep_process import replaced  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: replace_records.py SWEEP.jsonl NEW.jsonl", file=sys.stderr)
        return 2
    try:
        sweep, new = (list(read_jsonl(path)) for path in sys.argv[1:])
        records = replaced(sweep, new)
    except KvsimError as exc:
        print(f"replace_records: {exc}", file=sys.stderr)
        return 2
    write_whole(sys.argv[1], "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    print(f"{sum(r.get('source') == 'measured' for r in new)} records replaced in {sys.argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
