"""`posesuite-eval --protocol pckh`: the metric's own numbers from a results file whose records
carry annotation_id, as the runs' predictions files do; user errors exit 2 in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from posesuite.cli.evaluate import main
from posesuite.metrics.pck import PCKhMetric
from posesuite.metrics.predictions import People, coco_results
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("mpii16")


@pytest.fixture
def gt_file(tmp_path) -> Path:
    """Four people in the mpii_gt_val.mat layout, head sizes 0.6 x 50 = 30 px."""
    rng = np.random.default_rng(1)
    joints = rng.uniform(60, 300, size=(4, 16, 2))
    boxes = np.tile(np.array([[10.0, 10.0], [40.0, 50.0]]), (4, 1, 1))
    path = tmp_path / "mpii_gt_val.mat"
    savemat(
        str(path),
        {
            "pos_gt_src": joints.transpose(1, 2, 0),
            "jnt_missing": np.zeros((16, 4)),
            "headboxes_src": boxes.transpose(1, 2, 0),
        },
    )
    return path


def predictions(gt_file: Path, seed: int) -> People:
    joints = PCKhMetric(gt_file, SKELETON).ground_truth().joints
    noisy = joints + np.random.default_rng(seed).normal(0, 10, size=joints.shape)
    keypoints = torch.tensor(np.concatenate([noisy, np.ones((4, 16, 1))], axis=2))
    return People(
        torch.arange(4), keypoints, torch.ones(4), torch.ones(4), torch.zeros(4, 4), torch.arange(4)
    )


def test_results_file_gives_the_metric_values(gt_file, tmp_path, capsys):
    people = predictions(gt_file, seed=0)
    expected = PCKhMetric(gt_file, SKELETON).evaluate(people)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(coco_results(people)))
    out = tmp_path / "metrics.json"
    argv = ["--protocol", "pckh", "--gt", str(gt_file), "--results", str(results)]
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == pytest.approx(expected)
    assert 0 < expected["PCKh"] < 100 and "PCKh@0.1" in capsys.readouterr().out


def test_results_without_annotation_ids_exit_2(gt_file, tmp_path, capsys):
    records = coco_results(predictions(gt_file, seed=0))
    del records[2]["annotation_id"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    assert main(["--protocol", "pckh", "--gt", str(gt_file), "--results", str(results)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert (
        error.startswith("posesuite-eval: error: results file")
        and "#2 has no annotation_id" in error
    )


def test_json_ground_truth_needs_head_size_joints(real_data_dir, tmp_path, capsys):
    gt = real_data_dir / "mpii" / "test_mpii.json"
    entries = json.loads(gt.read_text())
    records = [
        {
            "image_id": index,
            "category_id": 1,
            "keypoints": [v for x, y in e["joints"] for v in (x - 1, y - 1, 1.0)],
            "score": 1.0,
            "annotation_id": index,
        }
        for index, e in enumerate(entries)
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    argv = ["--protocol", "pckh", "--gt", str(gt), "--results", str(results)]
    assert main(argv) == 2
    assert "official PCKh needs the annotated head boxes" in capsys.readouterr().err
    out = tmp_path / "metrics.json"
    assert main([*argv, "--head-size", "joints", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["PCKh"] == 100.0
