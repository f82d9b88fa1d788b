"""One "host" of the two-host test: provision virtual boards in this process against a ledger.

    python3 host_runner.py WORKDIR LEDGER_URL STATION SERIAL...

Prints one JSON object: the exit status and each board's serial, result and unit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provision_support import board, run_virtual  # noqa: E402


def main() -> None:
    work, ledger, station, *serials = sys.argv[1:]
    root = Path(work)
    pis = [board("2711", port, serial, root / f"{station}-{serial}.img", 64 << 20)
           for port, serial in enumerate(serials, start=1)]
    run = run_virtual(root, Path(work).parent / "p.toml", pis, ledger=ledger, station=station,
                      gather=0.5, timeout=60.0)
    if run.error is not None:
        print(json.dumps({"error": str(run.error)}))
        return
    print(json.dumps({"exit_code": int(run.outcome.exit_code),
                      "boards": [{"serial": b.serial, "result": b.result, "unit": b.unit}
                                 for b in run.outcome.boards],
                      "schema_problems": run.schema_problems()}))


if __name__ == "__main__":
    main()
