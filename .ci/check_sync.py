"""Fail if `nbdev_export`, the notebook clean (`.ci/nbclean.py`) or the README render would change any file.

It runs them for real (so a failing check leaves the tree fixed, ready to commit) and compares file hashes before and
after, so it works on a dirty working tree as well as on a clean clone.
"""
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def snapshot() -> dict:
    files = [*ROOT.glob("cai_repro/**/*.py"), *ROOT.glob("nbs/**/*.ipynb"), ROOT / "README.md"]
    return {str(f.relative_to(ROOT)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files if f.is_file() and ".ipynb_checkpoints" not in f.parts}


def main() -> int:
    before = snapshot()
    # .ci/nbclean.py is nbdev_clean plus the kernelspec that ipykernel advertises (nbdev_clean would store "python3").
    # .ci/render_readings.py renders the notebooks' readings from the committed record (report/summary.json).
    for cmd in ([sys.executable, ROOT / ".ci/render_readings.py"], [BIN / "nbdev_export"],
                [sys.executable, ROOT / ".ci/nbclean.py"], [sys.executable, ROOT / ".ci/render_readme.py"]):
        subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print("These files changed when regenerated from the notebooks (now fixed in your tree; commit them):", file=sys.stderr)
        for f in changed: print("  " + f, file=sys.stderr)
        return 1
    print(f"in sync: {len(after)} files (cai_repro/, nbs/, README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
