"""Render README.md from nbs/index.ipynb with nbconvert (nbdev's own README command needs quarto).

Cells marked `#| hide` are dropped and other `#|` directives are stripped; links to `../figures/` (right from `nbs/`)
become `figures/` (right from the README). `--check` writes nothing and exits 1 if
README.md is out of date.
"""
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent


def render() -> str:
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    cells = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code" and any(l.strip().startswith("#| hide") for l in lines):
            continue
        cell.source = "\n".join(l for l in lines if not l.strip().startswith("#|")).strip("\n")
        if cell.cell_type == "markdown": cell.source = cell.source.replace("](../figures/", "](figures/")
        if cell.cell_type == "code": cell.outputs = []
        cells.append(cell)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    note = "<!-- Generated from nbs/index.ipynb by `make readme`; edit the notebook, not this file. -->\n\n"
    return note + body.strip() + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date with nbs/index.ipynb: run `make readme`", file=sys.stderr)
            sys.exit(1)
    else:
        readme.write_text(text, encoding="utf-8")
