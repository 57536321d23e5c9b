"""Render every reading cell of nbs/*.ipynb from the committed record (report/summary.json); see nbs/record.ipynb.

`check_sync.py` runs it, so `make test` fails when a committed reading differs from what the record renders.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cai_repro.record import is_reading, load_record, render_readings  # noqa: E402


def main() -> int:
    summary = load_record(ROOT / "report")
    notebooks = sorted((ROOT / "nbs").glob("*.ipynb"))
    if summary is None:
        import json
        has = [nb.name for nb in notebooks if any(c["cell_type"] == "markdown" and is_reading("".join(c["source"]))
                                                   for c in json.loads(nb.read_text())["cells"])]
        if has: print(f"report/summary.json is missing but these notebooks have readings: {', '.join(has)}", file=sys.stderr)
        return 1 if has else 0
    for nb in notebooks:
        if render_readings(nb, summary): print(f"rendered readings in {nb.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
