"""`posesuite-eval --protocol pck`: the metric's own numbers from a results file whose records
carry image_id and annotation_id, as the runs' predictions files do, on an image range of
LSP's joints.mat; user errors exit 2 in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from posesuite.cli.evaluate import main
from posesuite.metrics.pck import PCKMetric
from posesuite.metrics.predictions import People, coco_results
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("lsp14")
STAT_NAMES = ("PCK", "PCK@0.1", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")


@pytest.fixture
def joints_mat(tmp_path) -> Path:
    """Six images in LSP's original layout (3, 14, 6), every joint visible (flag 0)."""
    joints = np.random.default_rng(1).uniform(20, 200, size=(6, 14, 2))
    path = tmp_path / "joints.mat"
    savemat(str(path), {"joints": np.concatenate([joints, np.zeros((6, 14, 1))], 2).T})
    return path


def predictions(gt: str, noise: float) -> People:
    """A prediction per ground-truth entry of ``gt``: its joints plus Gaussian noise (px)."""
    truth = PCKMetric(gt, SKELETON).ground_truth()
    noisy = truth.joints + np.random.default_rng(0).normal(0, noise, size=truth.joints.shape)
    count = len(truth)
    keypoints = torch.tensor(np.concatenate([noisy, np.ones((count, 14, 1))], axis=2))
    ids = torch.tensor(truth.image_ids)
    return People(ids, keypoints, torch.ones(count), torch.ones(count), torch.zeros(count, 4), ids)


def run_cli(gt: str, records: list[dict], tmp_path: Path, *extra: str) -> tuple[int, dict | None]:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    out = tmp_path / "metrics.json"
    argv = ["--protocol", "pck", "--gt", gt, "--results", str(results), "--out", str(out)]
    code = main([*argv, *extra])
    return code, json.loads(out.read_text()) if code == 0 else None


@pytest.mark.parametrize("reference", ["torso", "bbox"])
def test_ground_truth_in_gives_100(joints_mat, tmp_path, reference):
    gt = f"{joints_mat}#images=4-6"
    records = coco_results(predictions(gt, noise=0.0))
    assert [r["image_id"] for r in records] == [r["annotation_id"] for r in records] == [4, 5, 6]
    code, stats = run_cli(gt, records, tmp_path, "--reference", reference)
    assert code == 0 and stats == dict.fromkeys(STAT_NAMES, 100.0)


def test_results_file_gives_the_metric_values(joints_mat, tmp_path, capsys):
    gt = f"{joints_mat}#images=4-6"
    people = predictions(gt, noise=8.0)
    expected = PCKMetric(gt, SKELETON).evaluate(people)
    code, stats = run_cli(gt, coco_results(people), tmp_path)
    assert code == 0 and stats == pytest.approx(expected)
    assert 0 < expected["PCK"] < 100 and "PCK@0.1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop_image_id", r"results file .*: result #1 has no image_id: PCK matches each"),
        ("unknown_pair", r"prediction #2 \(image id 2, annotation id 2\) names no ground-truth"),
        ("not_mat", r"gt\.json: PCK ground truth is LSP's joints\.mat or a Penn Action"),
        ("bad_shape", r"joints\.mat: 'joints' has shape \[14, 14, 6\], expected"),
    ],
)
def test_bad_files_exit_2_in_one_line(joints_mat, tmp_path, capsys, change, message):
    gt = f"{joints_mat}#images=4-6"
    records = coco_results(predictions(gt, noise=0.0))
    if change == "drop_image_id":
        del records[1]["image_id"]
    elif change == "unknown_pair":
        records[2]["image_id"] = records[2]["annotation_id"] = 2  # outside the range 4-6
    elif change == "not_mat":
        gt = str(tmp_path / "gt.json")
        Path(gt).write_text("{}")
    else:
        savemat(str(joints_mat), {"joints": np.zeros((14, 14, 6))})
    code, _ = run_cli(gt, records, tmp_path)
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0
    assert error.startswith("posesuite-eval: error: ")
    assert re.search(message, error), error
