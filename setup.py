"Packaging for cai-repro. Every setting lives in settings.ini (nbdev 2's config); edit it there, not here."
import shutil
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py

config = ConfigParser(delimiters=["="])
config.read("settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

# The data that ships inside the package, as `cai_repro/_data/<folder>` (see `cai_repro.artifacts.bundled_dir`): a
# checkout reads these folders in place; an installed package reads its copies, from any working directory.
BUNDLED = ["constitutions", "profiles", "data/prompts", "data/refusals", "nbs", "accelerate"]


class BuildWithData(build_py):
    "build_py that also copies the bundled folders into the package."
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False): return  # an editable install reads the checkout's folders
        root = Path(__file__).resolve().parent
        for rel in BUNDLED:
            dest = Path(self.build_lib) / cfg["lib_path"] / "_data" / rel
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(root / rel, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.tmp-*"))


setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    keywords=cfg["keywords"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    license="Apache-2.0",
    url=cfg["git_url"],
    packages=setuptools.find_packages(include=[cfg["lib_path"], cfg["lib_path"] + ".*"]),
    include_package_data=True,
    install_requires=cfg.get("requirements", "").split(),
    # dev, and the optional extras settings.ini lists in `extras` (server, vllm, deepspeed, quantize, notebooks, tracking),
    # each from `<extra>_requirements`
    extras_require={extra: cfg.get(f"{extra}_requirements", "").split() for extra in ["dev", *cfg.get("extras", "").split()]},
    python_requires=">=" + cfg["min_python"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    zip_safe=False,
    cmdclass={"build_py": BuildWithData},
    # Enables the Jupyter server extension `cai_repro.artifacts` (its pre-save hook cleans this project's source
    # notebooks, whatever `jupyter lab` the environment starts). pip installs data_files from a wheel, not for an
    # editable install: there the Makefile's install step copies the file.
    data_files=[("etc/jupyter/jupyter_server_config.d", ["jupyter-config/jupyter_server_config.d/cai_repro.artifacts.json"])],
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d'],
    },
)
