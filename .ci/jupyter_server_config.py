# Jupyter server configuration for `make lab` (passed with --config; it adds to, and overrides, ~/.jupyter's files).
#
# A save of a source notebook (nbs/*.ipynb under the server's root) writes it in its committed form: the pre-save hook
# cleans it as `.ci/nbclean.py` does (nbdev's clean with settings.ini's options, and the kernelspec ipykernel
# advertises). JupyterLab adds `language_info`, execution counts and cell metadata on open and on a run; without the
# hook, opening a notebook and letting Lab autosave it dirtied the tree. Outputs are kept, as nbdev_clean keeps them.
import importlib.util
import warnings
from pathlib import Path

_spec = importlib.util.spec_from_file_location("cai_repro_nbclean", Path(__file__).resolve().with_name("nbclean.py"))
_nbclean = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_nbclean)

# FileContentsManager rather than ContentsManager: the more specific section wins over a hook that
# `nbdev_install_hooks` may have put in ~/.jupyter (which would store display_name "python3").
c.FileContentsManager.pre_save_hook = _nbclean.pre_save_hook  # noqa: F821 (`c` is the config object Jupyter passes)
# The server applies its config to the contents manager again after loading its extensions; traitlets then warns that
# the hook "overrides" itself.
warnings.filterwarnings("ignore", message=r"Overriding existing pre_save_hook \(pre_save_hook\)", category=UserWarning)
