"""Every notebook runs top to bottom on a small synthetic run, so none of them rots."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from posesuite.data.sources.synthetic import SyntheticSpec, ensure_synthetic_coco
from posesuite.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as `python run.py` writes it, with predictions = ground truth + noise."""
    root = tmp_path_factory.mktemp("notebook_run")
    paths = ensure_synthetic_coco(
        root / "data", SyntheticSpec(num_train_images=2, num_val_images=6)
    )
    coco = json.loads(paths.val_annotations.read_text())
    rng = np.random.default_rng(0)
    results = []
    for ann in coco["annotations"]:
        keypoints = np.reshape(ann["keypoints"], (-1, 3)).astype(float)
        keypoints[:, :2] += rng.normal(0, 2, (len(keypoints), 2))
        keypoints[:, 2] = rng.uniform(0.3, 1.0, len(keypoints))
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": keypoints.ravel().tolist(),
                "score": float(rng.uniform(0.5, 1)),
            }
        )
    run = root / "run"
    run.mkdir()
    (run / "predictions_val.json").write_text(json.dumps(results))
    (run / "metrics.json").write_text(
        json.dumps(
            {"val_annotations": str(paths.val_annotations), "val_images": str(paths.val_images)}
        )
    )
    return run


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, run_dir, monkeypatch):
    monkeypatch.setenv("POSESUITE_RUN", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO_ROOT)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "AP " in text  # the COCO stats were printed
