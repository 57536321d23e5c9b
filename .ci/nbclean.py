"""The committed form of a notebook: nbdev's clean, plus the kernelspec that the installed ipykernel advertises.

nbdev 2.4.14's `clean_nb` sets the kernelspec's `display_name` to its `name` ("python3"), and no setting turns that
off. The kernel that ipykernel installs advertises "Python 3 (ipykernel)", so JupyterLab rewrites the one into the other
as soon as it opens a notebook and autosaves it: a browse dirtied the tree. We store what the kernel advertises instead
(`tests/test_jupyter.py` checks `KERNELSPEC` against a running server's `/api/kernelspecs`).

Three ways in:
- `python .ci/nbclean.py [NOTEBOOK ...]` cleans `nbs/` (or the given notebooks) in place, writing only what changes.
  `make export`, `.ci/check_sync.py` and the notebook sync script run it in place of `nbdev_clean`.
- `clean(nb)` cleans a notebook dict in place.
- `python .ci/nbclean.py --git-filter` reads a notebook on stdin and writes its committed form, outputs dropped, on
  stdout: git's clean filter for `nbs/*.ipynb` (`.gitattributes`; `make lab` registers it in the checkout's git
  config), so that outputs made by running cells in Lab do not show in `git status` or reach a commit.
- `pre_save_hook` is a Jupyter contents-manager hook: `.ci/jupyter_server_config.py` (which `make lab` passes) installs
  it, so that a save in JupyterLab writes a source notebook in its committed form (no `language_info`, no execution
  counts, no cell metadata but `tags`; outputs are kept, as `nbdev_clean` keeps them).
"""
import os
import sys
import tempfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent

# What `jupyter kernelspec list --json` (and a server's GET /api/kernelspecs) reports for ipykernel's kernel, reduced
# to the three keys a notebook stores.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _settings():
    from nbdev.config import get_config
    return get_config(path=ROOT)


def clean(nb: dict) -> dict:
    "Clean `nb` (a notebook as a dict) in place as `nbdev_clean` does with settings.ini's options; store `KERNELSPEC`."
    from nbdev.clean import clean_nb
    cfg = _settings()
    clean_nb(nb, cfg.clear_all, cfg.get("allowed_metadata_keys").split(), cfg.get("allowed_cell_metadata_keys").split(),
             cfg.clean_ids)
    nb.setdefault("metadata", {})["kernelspec"] = dict(KERNELSPEC)
    return nb


def clean_text(text: str) -> str:
    "A notebook file's text, cleaned, serialized as `nbdev_clean` (and Jupyter's contents manager) write it."
    import json
    from execnb.nbio import nb2str
    return nb2str(clean(json.loads(text)))


def clean_file(path: Path) -> bool:
    "Clean one notebook file in place (atomically, only if it changes); True if it changed."
    old = path.read_text(encoding="utf-8")
    new = clean_text(old)
    if new == old: return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp-clean")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f: f.write(new)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def source_notebooks(nbs: Path | None = None) -> list[Path]:
    "The notebooks `nbdev_clean` would clean: under `nbs_path`, skipping folders that start with `_` or `.`."
    nbs = nbs or Path(_settings().nbs_path)  # nbdev's config gives it as an absolute path
    return sorted(p for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parent.parts))


def pre_save_hook(model, path, contents_manager=None, **kwargs):
    "Jupyter's pre-save hook: clean a source notebook (`<nbs_path>/...` under the server's root) before it is written."
    if model.get("type") != "notebook" or model.get("content", {}).get("nbformat") != 4: return
    parts = PurePosixPath(path.strip("/")).parts
    if len(parts) < 2 or parts[0] != Path(_settings().nbs_path).name: return
    if any(p.startswith(("_", ".")) for p in parts[1:-1]): return
    clean(model["content"])


def git_filter(text: str) -> str:
    "The committed form of a notebook, outputs and execution counts dropped (what git stores for `nbs/*.ipynb`)."
    import json
    from execnb.nbio import nb2str
    nb = clean(json.loads(text))
    for c in nb["cells"]:
        if c["cell_type"] == "code": c["outputs"], c["execution_count"] = [], None
    return nb2str(nb)


def main(argv: list[str]) -> int:
    if argv == ["--git-filter"]:
        sys.stdout.write(git_filter(sys.stdin.read()))
        return 0
    paths = [Path(a) for a in argv] or source_notebooks()
    changed = [p for p in paths if clean_file(p)]
    for p in changed: print(f"cleaned {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
