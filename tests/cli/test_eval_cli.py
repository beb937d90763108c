"""`posesuite-eval`: the numbers it writes are pycocotools' own; user errors exit 2 in one line."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posesuite.cli.evaluate import main
from posesuite.skeleton import load_skeleton

STAT_NAMES = ["AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L"]


@pytest.fixture(scope="module")
def gt_file(coco_files) -> Path:
    return coco_files.annotations


@pytest.fixture(scope="module")
def people(gt_file: Path) -> list[dict]:
    annotations = json.loads(gt_file.read_text())["annotations"]
    return [ann for ann in annotations if ann["num_keypoints"] > 0]


def pycocotools_stats(gt_file: Path, results_file: Path) -> list[float]:
    """pycocotools run directly on the same files, with the skeleton's sigmas."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(gt_file))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(results_file)), "keypoints")
        evaluator.params.kpt_oks_sigmas = np.array(load_skeleton("coco17").sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats.tolist()


def result(image_id: int, keypoints: np.ndarray, score: float) -> dict:
    return {
        "image_id": image_id,
        "category_id": 1,
        "keypoints": keypoints.ravel().tolist(),
        "score": score,
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def perturbed_results(people: list[dict], seed: int) -> list[dict]:
    """Ground truth with a few px of noise, random scores, dropped people and duplicates."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in people:
        if rng.random() < 0.2:
            continue
        for _ in range(2 if rng.random() < 0.3 else 1):
            keypoints = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            keypoints[:, :2] += rng.normal(0.0, 3.0, size=(len(keypoints), 2))
            keypoints[:, 2] = rng.uniform(size=len(keypoints))
            results.append(result(ann["image_id"], keypoints, float(rng.uniform())))
    return results


def box_iou(box: list[float], other: list[float]) -> float:
    """IoU of two COCO [x, y, w, h] boxes."""
    width = min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0])
    height = min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1])
    overlap = max(width, 0.0) * max(height, 0.0)
    return overlap / (box[2] * box[3] + other[2] * other[3] - overlap)


def detection_results(detections: list[dict], people: list[dict], seed: int) -> list[dict]:
    """Per detector box: the best-overlapping person's pose, jittered, with the box's score."""
    rng = np.random.default_rng(seed)
    results = []
    for detection in detections:
        candidates = [ann for ann in people if ann["image_id"] == detection["image_id"]]
        best = max(candidates, key=lambda ann: box_iou(detection["bbox"], ann["bbox"]))
        keypoints = np.array(best["keypoints"], dtype=np.float64).reshape(-1, 3)
        keypoints[:, :2] += rng.normal(0.0, 2.0 + 10.0 * (1.0 - detection["score"]), (17, 2))
        keypoints[:, 2] = rng.uniform(0.3, 1.0, size=17)
        results.append(result(detection["image_id"], keypoints, detection["score"]))
    return results


def test_ground_truth_as_results_scores_one(gt_file, people, tmp_path, capsys):
    oracle = []
    for ann in people:
        keypoints = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        keypoints[:, 2] = keypoints[:, 2] > 0
        oracle.append(result(ann["image_id"], keypoints, 1.0))
    results_file = write_json(tmp_path / "oracle.json", oracle)
    out = tmp_path / "metrics" / "oracle_metrics.json"
    assert main(["--gt", str(gt_file), "--results", str(results_file), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == dict.fromkeys(STAT_NAMES, 1.0)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["AP", "1.000"]
    assert [line.split()[0] for line in printed] == STAT_NAMES


def test_writes_exactly_pycocotools_numbers(gt_file, people, tmp_path):
    results_file = write_json(tmp_path / "perturbed.json", perturbed_results(people, seed=7))
    out = tmp_path / "perturbed_metrics.json"
    argv = ["--gt", str(gt_file), "--results", str(results_file), "--skeleton", "coco17"]
    assert main([*argv, "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert list(written) == STAT_NAMES
    assert list(written.values()) == pycocotools_stats(gt_file, results_file)
    assert 0.1 < written["AP"] < 0.99


def test_console_script_matches_pycocotools(gt_file, people, tmp_path):
    console_script = Path(sys.executable).with_name("posesuite-eval")
    if not console_script.exists():
        pytest.skip(f"{console_script} is not installed (pip install -e . --no-deps)")
    results_file = write_json(tmp_path / "perturbed.json", perturbed_results(people, seed=8))
    out = tmp_path / "metrics.json"
    completed = subprocess.run(
        [console_script, "--gt", gt_file, "--results", results_file, "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "AP_M" in completed.stdout
    assert list(json.loads(out.read_text()).values()) == pycocotools_stats(gt_file, results_file)


def test_detection_scenario_matches_pycocotools(coco_files, gt_file, people, tmp_path):
    detections = json.loads(coco_files.detections.read_text())
    results = detection_results(detections, people, seed=9)
    results_file = write_json(tmp_path / "detections.json", results)
    out = tmp_path / "detections_metrics.json"
    assert main(["--gt", str(gt_file), "--results", str(results_file), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert list(written.values()) == pycocotools_stats(gt_file, results_file)
    assert 0.1 < written["AP"] < 0.99


def run_expecting_user_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posesuite-eval: error: ")
    return lines[0]


def test_unknown_skeleton_lists_the_available_ones(gt_file, people, tmp_path, capsys):
    results_file = write_json(tmp_path / "results.json", perturbed_results(people, seed=1))
    argv = ["--gt", str(gt_file), "--results", str(results_file), "--skeleton", "coco99"]
    message = run_expecting_user_error(argv, capsys)
    assert "coco99" in message and "available: " in message and "coco17" in message


def test_malformed_results_file(gt_file, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    message = run_expecting_user_error(["--gt", str(gt_file), "--results", str(broken)], capsys)
    assert "broken.json is not valid JSON" in message


def test_wrong_keypoint_count_names_the_image(gt_file, people, tmp_path, capsys):
    results = perturbed_results(people, seed=2)
    results[1]["keypoints"] = results[1]["keypoints"][:34]
    results_file = write_json(tmp_path / "short.json", results)
    message = run_expecting_user_error(
        ["--gt", str(gt_file), "--results", str(results_file)], capsys
    )
    assert f"result #1 (image_id {results[1]['image_id']})" in message
    assert "keypoints has 34 values, expected 3 × 17 = 51" in message


def test_unknown_image_id(gt_file, people, tmp_path, capsys):
    results = perturbed_results(people, seed=3)
    results[0]["image_id"] = 999
    results_file = write_json(tmp_path / "stray.json", results)
    message = run_expecting_user_error(
        ["--gt", str(gt_file), "--results", str(results_file)], capsys
    )
    assert "stray.json: result #0 (image_id 999): image_id is not in the ground truth" in message


def test_missing_ground_truth_file(tmp_path, capsys):
    results_file = write_json(tmp_path / "results.json", [])
    missing = tmp_path / "missing_gt.json"
    message = run_expecting_user_error(
        ["--gt", str(missing), "--results", str(results_file)], capsys
    )
    assert f"ground-truth annotation file not found: {missing}" in message


@pytest.mark.filterwarnings("ignore:'posesuite.cli.evaluate' found in sys.modules:RuntimeWarning")
def test_runs_as_a_module(gt_file, monkeypatch, capsys):
    # In-process stand-in for `python -m posesuite.cli.evaluate` (a subprocess costs seconds of
    # torch imports; the console-script test above already covers a real process).
    argv = ["evaluate.py", "--gt", str(gt_file), "--results", "none.json"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("posesuite.cli.evaluate", run_name="__main__")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "posesuite-eval: error: results file not found: none.json"
    )
