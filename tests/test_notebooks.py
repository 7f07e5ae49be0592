"""Every notebook runs top to bottom on data_samples/ (committed without outputs)."""
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), \
        f"{path.name} has outputs: clear them before committing"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # One run directory for all notebooks: each notebook makes what it needs if it is missing
    # (so it also runs alone), and reuses what an earlier notebook made.
    return tmp_path_factory.mktemp("notebook-run")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, run_dir, monkeypatch):
    monkeypatch.setenv("SLEEPFM_RUN", str(run_dir))
    monkeypatch.setenv("SLEEPFM_DATA", str(ROOT / "data_samples"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
