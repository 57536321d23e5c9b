"""The notebooks as JupyterLab meets them, through a real Jupyter server on 127.0.0.1.

- Every committed notebook stores the kernelspec the server advertises, so a frontend has nothing to rewrite on open.
- A save round-trip through the contents API (with `make lab`'s clean-on-save config) leaves every notebook's bytes as
  committed, also after the edits Lab makes on open and on a run (`language_info`, execution counts, cell metadata).
- A numbered notebook runs through the server's kernel (REST session + websocket channels, as Lab runs it, not
  nbconvert): no cell fails, its first output is the banner naming the smoke profile and the tiny model, and nothing
  before or in the banner cell writes to stderr (no TqdmWarning, no library warning).

The server serves a temporary copy of `nbs/` with its own Jupyter config, runtime and cai-repro cache directories, so
the test writes nothing into the repository.
"""
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".ci" / "jupyter_server_config.py"
NOTEBOOK = "02_red_team_prompts.ipynb"  # numbered, quick in smoke, and it shows a progress bar (few-shot generation)
CELL_TIMEOUT = 300

pytest.importorskip("jupyter_server", reason="jupyter_server is not installed (it comes with the dev extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    "A `jupyter server` subprocess and a small client for its REST API."

    def __init__(self, root: Path, work: Path):
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "server.log"
        env = {**os.environ,
               "JUPYTER_CONFIG_DIR": str(work / "config"),  # not ~/.jupyter: only the config `make lab` passes
               "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
               "IPYTHONDIR": str(work / "ipython"),
               "CAI_REPRO_CACHE": str(work / "cache"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--config={CONFIG}",
               f"--ServerApp.root_dir={root}", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
               f"--IdentityProvider.token={self.token}", "--allow-root"]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, method: str, path: str, body=None, timeout: float = 60):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
        return json.loads(data) if data else None

    def wait_ready(self, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.api("GET", "/api/status", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyter server did not answer within {timeout} s:\n{self.log()}")

    def stop(self):
        try:
            if self.proc.poll() is None:
                for s in self.api("GET", "/api/sessions", timeout=10):
                    self.api("DELETE", f"/api/sessions/{s['id']}", timeout=30)
                for k in self.api("GET", "/api/kernels", timeout=10):
                    self.api("DELETE", f"/api/kernels/{k['id']}", timeout=30)
                self.api("POST", "/api/shutdown", timeout=10)
                self.proc.wait(timeout=30)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("jupyter")
    root = work / "root"
    (root / "nbs").mkdir(parents=True)
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        shutil.copy2(nb, root / "nbs" / nb.name)
    srv = Server(root, work)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _committed_notebooks() -> list[Path]:
    nbs = sorted((ROOT / "nbs").glob("*.ipynb"))
    assert len(nbs) >= 20
    return nbs


def _advertised(server) -> dict:
    "The kernelspec the server offers a new notebook, reduced to the keys a notebook stores."
    specs = server.api("GET", "/api/kernelspecs")
    spec = specs["kernelspecs"][specs["default"]]["spec"]
    return {"name": specs["default"], "display_name": spec["display_name"], "language": spec["language"]}


def test_notebooks_store_the_kernelspec_the_server_advertises(server):
    advertised = _advertised(server)
    wrong = {nb.name: json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("kernelspec")
             for nb in _committed_notebooks()}
    wrong = {k: v for k, v in wrong.items() if v != advertised}
    assert not wrong, f"the server advertises {advertised}; these notebooks store something else: {wrong}"
    spec = importlib.util.spec_from_file_location("nbclean", ROOT / ".ci" / "nbclean.py")
    nbclean = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nbclean)
    assert nbclean.KERNELSPEC == advertised, "update KERNELSPEC in .ci/nbclean.py and run `make export`"


def _as_lab_saves(content: dict, advertised: dict) -> dict:
    "What JupyterLab adds to a notebook it has opened and run: language_info, counts, cell metadata."
    content["metadata"]["kernelspec"] = dict(advertised)
    content["metadata"]["language_info"] = {"name": "python", "version": sys.version.split()[0],
                                            "mimetype": "text/x-python", "file_extension": ".py"}
    for i, cell in enumerate(content["cells"]):
        if cell["cell_type"] == "code":
            cell["execution_count"] = i + 1
            cell["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        cell["metadata"]["scrolled"] = True
    return content


def test_save_round_trip_leaves_every_notebook_as_committed(server):
    "GET then PUT each notebook through the contents API, as is and with Lab's edits: the bytes on disk stay."
    advertised = _advertised(server)
    changed = {}
    copies = sorted((server.root / "nbs").glob("*.ipynb"))  # the committed notebooks, as copied for the server
    assert len(copies) >= 20
    for nb in copies:
        path, committed = f"/api/contents/nbs/{nb.name}", nb.read_bytes()
        for how in ("as opened", "as Lab saves it"):
            model = server.api("GET", path + "?content=1&type=notebook")
            content = model["content"] if how == "as opened" else _as_lab_saves(model["content"], advertised)
            server.api("PUT", path, {"type": "notebook", "format": "json", "content": content})
            if nb.read_bytes() != committed:
                changed.setdefault(nb.name, []).append(how)
                nb.write_bytes(committed)
    assert not changed, f"a save through the server changed these notebooks: {changed}\n{server.log()}"


class Kernel:
    "A kernel of a server session, driven over its websocket channels as a frontend drives it."

    def __init__(self, server, notebook_path: str):
        import websocket  # websocket-client, a dependency of jupyter_server
        self.server = server
        self.session = server.api("POST", "/api/sessions", {"path": notebook_path, "type": "notebook", "name": "",
                                                            "kernel": {"name": _advertised(server)["name"]}})
        kid, self.client_session = self.session["kernel"]["id"], uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kid}/channels?session_id={self.client_session}",
            header=[f"Authorization: token {server.token}"], timeout=CELL_TIMEOUT)

    def execute(self, code: str) -> tuple[str, list[dict]]:
        "Run `code`; return the reply's status and the iopub outputs it produced, in order."
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": self.client_session, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        status, outputs, idle = None, [], False
        while status is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id: continue
            kind = msg["header"]["msg_type"]
            if msg["channel"] == "shell" and kind == "execute_reply": status = msg["content"]["status"]
            elif kind == "status": idle = msg["content"]["execution_state"] == "idle"
            elif kind in ("stream", "error", "display_data", "execute_result"): outputs.append(msg)
        return status, outputs

    def close(self):
        try:
            self.ws.close()
        finally:
            self.server.api("DELETE", f"/api/sessions/{self.session['id']}", timeout=30)


def _text(msg: dict) -> str:
    c = msg["content"]
    if msg["header"]["msg_type"] == "stream": return c["text"]
    if msg["header"]["msg_type"] == "error": return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(c["traceback"]))
    return c.get("data", {}).get("text/plain", "")


def test_a_numbered_notebook_runs_through_the_servers_kernel(server):
    nb = json.loads((server.root / "nbs" / NOTEBOOK).read_text(encoding="utf-8"))
    cells = [("".join(c["source"]), c["metadata"].get("tags", [])) for c in nb["cells"] if c["cell_type"] == "code"]
    banner_at = next(i for i, (src, _) in enumerate(cells) if "print(banner(" in src)
    assert "parameters" in cells[banner_at - 1][1], "the banner cell follows the parameters cell"
    kernel = Kernel(server, f"nbs/{NOTEBOOK}")
    try:
        ran = []
        for i, (src, _) in enumerate(cells):
            status, outputs = kernel.execute(src)
            ran.append(outputs)
            errors = [_text(o) for o in outputs if o["header"]["msg_type"] == "error"]
            assert status == "ok" and not errors, f"code cell {i} of {NOTEBOOK} failed:\n{src}\n{''.join(errors)}"
    finally:
        kernel.close()
    early_stderr = [(i, o["content"]["text"]) for i, outs in enumerate(ran[:banner_at + 1]) for o in outs
                    if o["header"]["msg_type"] == "stream" and o["content"]["name"] == "stderr"]
    assert not early_stderr, f"written to stderr before the first line a reader sees: {early_stderr}"
    first = next(_text(o) for outs in ran for o in outs)
    assert first.startswith("profile smoke") and "tiny random model" in first and 'profile = "cpu"' in first, first
    everything = "".join(_text(o) for outs in ran for o in outs)
    assert "TqdmWarning" not in everything and "IProgress not found" not in everything


def test_git_filter_drops_what_running_cells_adds():
    "git's clean filter for nbs/*.ipynb (.gitattributes) gives back the committed file from one that was run in Lab."
    import json, subprocess, sys
    path = ROOT / "nbs" / "01_constitution.ipynb"
    committed = path.read_text(encoding="utf-8")
    nb = json.loads(committed)
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ran\n"]}]
    code["execution_count"] = 7
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11"}
    run = subprocess.run([sys.executable, str(ROOT / ".ci" / "nbclean.py"), "--git-filter"], input=json.dumps(nb),
                         capture_output=True, text=True, check=True)
    assert run.stdout == committed
    assert "filter=cai-nbclean" in (ROOT / ".gitattributes").read_text()


ENV_CONFIG = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "cai_repro.artifacts.json"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (a real browser runs JupyterLab)")
def test_plain_jupyter_lab_saves_a_notebook_as_committed(tmp_path):
    """`jupyter lab` as a user types it (no --config), in a real headless browser, on a copy of the checkout: Lab's
    autosave (set to 5 s here instead of 120 s) writes the opened notebook, and the bytes stay as committed, because the
    install enabled the server extension `cai_repro.artifacts` in this environment's Jupyter config."""
    assert ENV_CONFIG.is_file(), f"{ENV_CONFIG} is missing: `make install` puts it there (an editable pip install does not)"
    root = tmp_path / "checkout"
    (root / ".ci").mkdir(parents=True)
    shutil.copytree(ROOT / "nbs", root / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for f in ("settings.ini", ".ci/nbclean.py"): shutil.copy2(ROOT / f, root / f)
    name = "05_sl_cai_analysis.ipynb"
    committed = (root / "nbs" / name).read_bytes()
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosaveInterval": 5}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "IPYTHONDIR": str(tmp_path / "ipython"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if os.environ.get("PYTHONPATH"):  # the server runs in the copy: keep a relative PYTHONPATH pointing where it did
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)
    log_path = tmp_path / "lab.log"
    with log_path.open("w") as log:
        lab = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
                                "--ip=127.0.0.1", f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}"],
                               cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
            browser = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                        f"--user-data-dir={tmp_path / 'chromium'}",
                                        f"http://127.0.0.1:{port}/lab/tree/nbs/{name}?token={token}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                saving = f"Saving file at /nbs/{name}"
                deadline = time.monotonic() + 120
                while saving not in log_path.read_text(errors="replace") and time.monotonic() < deadline: time.sleep(1)
                time.sleep(8)  # and one more autosave
            finally:
                browser.terminate()
                browser.wait(timeout=30)
        finally:
            lab.terminate()
            lab.wait(timeout=60)
    text = log_path.read_text(errors="replace")
    assert "cai_repro.artifacts | extension was successfully loaded" in text, text[-3000:]
    assert saving in text, f"Lab never saved {name}:\n{text[-3000:]}"
    assert (root / "nbs" / name).read_bytes() == committed, "the save changed the notebook"
