"The notebooks as a reproduction: consistent parameters across notebooks, and profiles that every notebook can take."
import ast

import nbformat
import pytest

from cai_repro.artifacts import InputError
from cai_repro.config import load_params
from cai_repro.reproduce import PARAMETERS, declared_parameters, reproduce, stage_notebooks

NOTEBOOKS = stage_notebooks()


def _parameter_defaults(nb) -> dict[str, str]:
    "The source text of each value the notebook's `parameters` cell assigns."
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    tree = ast.parse(cell.source)
    return {t.id: ast.get_source_segment(cell.source, node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def test_shared_parameters_have_one_default():
    "Every numbered notebook declares exactly `profile` and `run_dir`, with the same defaults everywhere,"
    "or a notebook run on its own would look for a different upstream stage than the one its predecessors built."
    assert len(NOTEBOOKS) >= 15 and {"00a_dialogue", "00b_scoring", "02a_monitors", "06a_hhh_evals", "07a_reward"} <= {
        nb.stem for nb in NOTEBOOKS}
    defaults: dict[str, dict[str, str]] = {}
    for nb in NOTEBOOKS:
        assert declared_parameters(nb) == list(PARAMETERS), nb.name
        for name, default in _parameter_defaults(nb).items():
            defaults.setdefault(name, {})[nb.stem] = " ".join(default.split())
    assert set(defaults) == set(PARAMETERS) and all(len(v) == len(NOTEBOOKS) for v in defaults.values())
    conflicts = {k: v for k, v in defaults.items() if len(set(v.values())) > 1}
    assert not conflicts, conflicts
    assert load_params(ast.literal_eval(defaults["profile"][NOTEBOOKS[0].stem])).run.model == "tiny-random"  # smoke


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_profiles_load_for_every_notebook(profile):
    "A profile is checked strictly when it loads; what a notebook receives is its path and the run directory."
    P = load_params(profile)
    assert P.name == profile and P.source.endswith(f"{profile}.yaml")
    for nb in NOTEBOOKS:
        assert declared_parameters(nb) == list(PARAMETERS), nb.name


def test_reproduce_refuses_a_notebook_with_other_parameters(tmp_path):
    "A numbered notebook whose parameters cell declares anything else is refused before any notebook runs."
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "smoke"\nrun_dir = "runs"\ncr = {"revisions": 2}',
                                          metadata={"tags": ["parameters"]})]
    nbformat.write(nb, nbs / "03_extra.ipynb")
    with pytest.raises(InputError, match="must declare exactly profile, run_dir"):
        reproduce("smoke", out=tmp_path / "run", nbs_dir=nbs)
    assert not (tmp_path / "run").exists()


def test_every_stage_notebook_has_a_parameters_cell():
    for nb in NOTEBOOKS:
        cells = nbformat.read(nb, as_version=4).cells
        code = [c for c in cells if c.cell_type == "code"]
        if not code: continue  # a placeholder holds text only
        assert any("parameters" in c.metadata.get("tags", []) for c in code), nb.name
