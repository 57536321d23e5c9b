"""The grain of the notebooks, as nbdev intends it: one definition per exported cell, each followed by a check.

For every `#| export` cell of `nbs/*.ipynb` (the imports cell excepted) it counts the top-level definitions (functions,
classes, and module constants in capitals), and looks at the next code cell: it is a check when it calls one of
fastcore's `test_*` functions or asserts. Prints the cells that break either rule and a summary; exits 1 if any does.
`--report` prints the summary only and exits 0.
"""
import ast
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = re.compile(r"\b(test_eq|test_close|test_fail|test_ne|test_is|test_shuffled|test_warns|assert)\b")


def cells(nb: Path) -> list[dict]:
    return [{**c, "src": "".join(c["source"]) if isinstance(c["source"], list) else c["source"]}
            for c in json.loads(nb.read_text())["cells"]]


def definitions(src: str) -> list[str]:
    body = "\n".join(l for l in src.splitlines() if not l.startswith("#|"))
    tree = ast.parse(body)
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()]
    return names


def check(nbs_dir: Path = ROOT / "nbs") -> tuple[list[str], list[int]]:
    problems, sizes = [], []
    for nb in sorted(nbs_dir.glob("*.ipynb")):
        cs = cells(nb)
        code = [c for c in cs if c["cell_type"] == "code"]
        for i, c in enumerate(code):
            src = c["src"]
            if not src.lstrip().startswith("#| export"): continue
            body = "\n".join(l for l in src.splitlines() if not l.startswith("#|"))
            if all(isinstance(n, (ast.Import, ast.ImportFrom)) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                   for n in ast.parse(body).body): continue  # the imports cell
            sizes.append(len([l for l in body.splitlines() if l.strip()]))
            names = definitions(src)
            where = f"{nb.name}: export cell {i} ({', '.join(names[:4]) or 'no public name'})"
            if len(names) > 1: problems.append(f"{where}: {len(names)} definitions in one cell")
            nxt = next((d for d in code[i + 1:] if not d["src"].lstrip().startswith("#| hide")), None)
            if nxt is None or nxt["src"].lstrip().startswith("#| export") or not CHECK.search(nxt["src"]):
                problems.append(f"{where}: not followed by a check")
    return problems, sizes


if __name__ == "__main__":
    problems, sizes = check()
    if "--report" not in sys.argv:
        for p in problems: print(p)
    print(f"{len(sizes)} exported cells; median {statistics.median(sizes):.0f} lines; {len(problems)} problems")
    sys.exit(1 if problems and "--report" not in sys.argv else 0)
