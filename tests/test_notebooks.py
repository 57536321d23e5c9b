"The notebooks as a reproduction: consistent parameters across notebooks, and profiles that name real parameters."
from pathlib import Path

import pytest

from cai_repro.reproduce import declared_parameters, load_profile, notebook_parameters, stage_notebooks

NOTEBOOKS = stage_notebooks()


def test_shared_parameters_have_one_default():
    "A parameter declared by several notebooks (e.g. the `cr` dict) must default to the same value everywhere,"
    "or a downstream notebook run on its own would look for a different upstream stage than the one built."
    defaults: dict[str, dict[str, str]] = {}
    for nb in NOTEBOOKS:
        for name, default in declared_parameters(nb).items():
            defaults.setdefault(name, {})[nb.stem] = " ".join(default.split())
    assert "cr" in defaults and len(defaults["cr"]) >= 3  # the stage dicts are seen, not skipped
    conflicts = {k: v for k, v in defaults.items() if len(set(v.values())) > 1}
    assert not conflicts, conflicts


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_profiles_name_declared_parameters(profile, tmp_path):
    prof = load_profile(profile)
    for nb in NOTEBOOKS:
        notebook_parameters(prof, nb, tmp_path)  # raises InputError on a key the notebook does not declare


def test_every_stage_notebook_has_a_parameters_cell():
    import nbformat
    for nb in NOTEBOOKS:
        cells = nbformat.read(nb, as_version=4).cells
        code = [c for c in cells if c.cell_type == "code"]
        if not code: continue  # a placeholder holds text only
        assert any("parameters" in c.metadata.get("tags", []) for c in code), nb.name
