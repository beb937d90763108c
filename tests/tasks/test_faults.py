"""Bad input and faults as a new user meets them (README, "Bad input"): each ends in a message
that names the cause, or is skipped and counted, and never in a traceback of library internals.

The runs are tiny (24 training / 6 validation images of the synthetic data, read as a COCO
dataset from a folder the tests damage on purpose)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch
from app_runs import APP_RUN_TIMEOUT_S
from test_config import compose_config

from posesuite.data.records import DataError
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.sources.synthetic import SyntheticCocoDataset
from posesuite.paths import CONF_DIR, REPO_ROOT

# The training image and the validation image whose files the tests make unreadable.
BROKEN_TRAIN_IMAGE, BROKEN_VAL_IMAGE = "000001.jpg", "000002.jpg"


def run(
    args: list[str], out_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python run.py`` as a user types it (warnings shown), into ``out_dir``."""
    command = [sys.executable, "run.py", *args, f"hydra.run.dir={out_dir}", "print_config=false"]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
        timeout=APP_RUN_TIMEOUT_S,
    )
    return result


def succeeded(result: subprocess.CompletedProcess) -> bool:
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return True


def last_error_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny COCO-format dataset with one unreadable training and one unreadable val image."""
    root = tmp_path_factory.mktemp("faults_data")
    train, val = SyntheticCocoDataset(root, num_train_images=24, num_val_images=6).prepare()
    (train.images / BROKEN_TRAIN_IMAGE).write_bytes(b"not an image")
    (val.images / BROKEN_VAL_IMAGE).write_bytes(b"not an image")
    return train.annotations.parent.parent


def coco_data(root: Path) -> list[str]:
    return [
        "data=coco",
        f"data.root={root}",
        "data.dataset.train_annotations=annotations/person_keypoints_train.json",
        "data.dataset.train_images=train",
        "data.dataset.val_annotations=annotations/person_keypoints_val.json",
        "data.dataset.val_images=val",
        "data.batch_size=8",
        "data.val_batch_size=16",
        "data.num_workers=0",
        "data.persistent_workers=false",
    ]


def people_in(annotations: Path, file_name: str) -> int:
    coco = json.loads(annotations.read_text())
    (image_id,) = [img["id"] for img in coco["images"] if img["file_name"] == file_name]
    return sum(a["image_id"] == image_id and a["num_keypoints"] > 0 for a in coco["annotations"])


@pytest.fixture(scope="module")
def wandb_run(dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two epochs with logger=wandb, no wandb key, setting or network: HOME is an empty folder
    (no ~/.netrc), WANDB_MODE and WANDB_API_KEY unset."""
    out = tmp_path_factory.mktemp("wandb_run")
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    command = [
        sys.executable,
        "run.py",
        *coco_data(dataset),
        "trainer.max_epochs=2",
        "logger=wandb",
        f"hydra.run.dir={out}",
        "print_config=false",
    ]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**env, "HOME": str(home), "WANDB_DISABLE_GIT": "true"},
        timeout=APP_RUN_TIMEOUT_S,
    )
    assert succeeded(result)
    return out, result


# --- 1. wandb without a login -------------------------------------------------------------------
def test_wandb_logs_offline_without_a_key_or_network(wandb_run):
    out, result = wandb_run
    assert "No API key" not in result.stderr
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


# --- 2 (counted in training and evaluation) and 6. skipped samples in the results ---------------
def test_metrics_json_counts_the_skipped_training_and_validation_samples(dataset, wandb_run):
    out, result = wandb_run
    metrics = json.loads((out / "metrics.json").read_text())
    val_people = people_in(dataset / "annotations/person_keypoints_val.json", BROKEN_VAL_IMAGE)
    train_people = people_in(
        dataset / "annotations/person_keypoints_train.json", BROKEN_TRAIN_IMAGE
    )
    assert metrics["skipped_val_samples"] == val_people > 0
    # Two epochs of shuffled batches without the incomplete last one: each epoch meets most of
    # the broken image's people, never more.
    assert 0 < metrics["skipped_train_samples"] <= 2 * train_people
    assert f"{val_people} of 12 evaluation samples skipped" in result.stdout


def test_evaluation_on_unreadable_images_says_so_next_to_the_ap(dataset, wandb_run, tmp_path):
    out, _ = wandb_run
    result = run(
        [*coco_data(dataset), "task=eval", f"ckpt_path={out / 'checkpoints/last.ckpt'}"], tmp_path
    )
    assert succeeded(result)
    line = next(x for x in result.stdout.splitlines() if "metrics: AP=" in x)
    assert re.search(r"AP=[\d.]+, .* -- \d+ of 12 evaluation samples skipped", line), line
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["skipped_val_samples"] > 0 and metrics["skipped_train_samples"] == 0
    # 7: an evaluation writes no checkpoint and warns about no checkpoint folder
    assert "dirpath" not in result.stderr and not (tmp_path / "checkpoints").exists()


# --- 7. log hygiene -----------------------------------------------------------------------------
def test_lightning_info_lines_are_printed_once(wandb_run):
    _, result = wandb_run
    output = result.stdout + result.stderr
    assert output.count("Seed set to 42") == 1
    assert output.count("`Trainer.fit` stopped") == 1


def test_the_val_log_line_names_the_detections_file(dataset, caplog):
    det_file = dataset / "annotations/person_detections_val.json"
    cfg = compose_config([*coco_data(dataset), f"data.det_file={det_file}"])
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="partial")
    with caplog.at_level(logging.INFO, logger="posesuite.data.datamodule"):
        datamodule.setup("validate")
    assert re.search(
        rf"val: \d+ detections boxes from {re.escape(str(det_file))}$", caplog.text, re.M
    )


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb", "many"])
def test_every_logger_choice_keeps_the_csv_logger(logger):
    assert "csv" in compose_config([f"logger={logger}"]).logger


def test_max_steps_is_a_trainer_setting():
    assert compose_config([]).trainer.max_steps == -1
    assert compose_config(["trainer.max_steps=5"]).trainer.max_steps == 5


# --- 8. checkpoint sizes ------------------------------------------------------------------------
def test_only_the_resume_checkpoint_keeps_the_optimizer_state(wandb_run):
    out, _ = wandb_run
    folder = out / "checkpoints"
    (best,) = folder.glob("best-*.ckpt")
    (latest,) = folder.glob("epoch*.ckpt")  # the previous epoch's file was deleted
    assert (folder / "last.ckpt").resolve() == latest.resolve()
    best_content = torch.load(best, map_location="cpu", weights_only=False)
    latest_content = torch.load(latest, map_location="cpu", weights_only=False)
    assert "optimizer_states" not in best_content and latest_content["optimizer_states"]
    assert best.stat().st_size < 0.4 * latest.stat().st_size


# --- 5. a checkpoint of another model -----------------------------------------------------------
def test_checkpoint_records_its_model_and_skeleton(wandb_run):
    out, _ = wandb_run
    content = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    description = content["posesuite"]
    assert description["model"]["name"] == "simplebaseline_res18"
    assert description["skeleton"]["name"] == "coco17"
    assert len(description["skeleton"]["keypoints"]) == 17


def test_checkpoint_of_another_model_is_one_line_naming_both(dataset, wandb_run, tmp_path):
    out, _ = wandb_run
    checkpoint = out / "checkpoints/last.ckpt"
    result = run(
        [*coco_data(dataset), "task=eval", f"ckpt_path={checkpoint}", "model=simplebaseline"],
        tmp_path,
    )
    assert result.returncode == 2
    assert "size mismatch" not in result.stderr and "Traceback" not in result.stderr
    line = last_error_line(result)
    assert line.startswith(f"run.py: error: {checkpoint} holds model simplebaseline_res18")
    assert "the config builds model simplebaseline_res50" in line
    assert line.count("skeleton coco17 (17 keypoints)") == 2


# --- 3. divergence ------------------------------------------------------------------------------
def test_nan_weights_at_evaluation_are_an_error_naming_the_cause(dataset, wandb_run, tmp_path):
    out, _ = wandb_run
    content = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    for value in content["state_dict"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    broken = tmp_path / "nan.ckpt"
    torch.save(content, broken)
    result = run([*coco_data(dataset), "task=eval", f"ckpt_path={broken}"], tmp_path / "eval")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = last_error_line(result)
    assert "the network predicted NaN or infinite keypoints" in line
    assert f"weight tensors of {broken} hold NaN or inf" in line
    assert "results" not in line  # no longer the results validator's message about scores


def test_a_diverging_loss_stops_the_run_without_saving_its_weights(dataset, tmp_path):
    # lr=1e6 only reaches losses of 1e19 in this tiny run's few steps (finite); 1e30 breaks the
    # weights in the first update, during the warm-up.
    result = run(
        [*coco_data(dataset), "trainer.max_epochs=2", "model.module.optimizer.lr=1e30"], tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = last_error_line(result)
    assert re.fullmatch(
        r"run\.py: error: training diverged (at|after) step \d+: .* \(learning rate \S+, "
        r"scheduled from 1e\+30; "
        r"(last finite loss \S+ at step \d+|no finite loss before)\); stopped without saving "
        r"these weights, last good checkpoint: (\S+|none saved yet)",
        line,
    ), line
    for checkpoint in (tmp_path / "checkpoints").glob("*.ckpt"):
        weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


# --- 4. an empty dataset ------------------------------------------------------------------------
@pytest.fixture
def one_image(tmp_path) -> tuple[Path, dict]:
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((40, 30, 3), np.uint8))
    person = {
        "id": 5,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [2, 2, 20, 30],
        "keypoints": [10, 10, 2] * 17,
        "num_keypoints": 17,
    }
    return tmp_path, {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [person]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"drop": True}, "no annotations"),
        ({"iscrowd": 1}, "1 annotations: 1 crowd"),
        ({"keypoints": [0, 0, 0] * 17}, "1 annotations: 1 without labelled keypoints"),
    ],
)
def test_a_file_without_usable_people_says_which_and_why(one_image, change, reason):
    root, coco = one_image
    if change.pop("drop", False):
        coco["annotations"] = []
    coco["annotations"] = [{**a, **change} for a in coco["annotations"]]
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=rf"ann\.json: no usable people .*: {reason}$"):
        read_coco_keypoints(ann_file, root, 17)


# --- 9. bad input in one line -------------------------------------------------------------------
def test_bad_input_is_one_line_and_the_traceback_is_opt_in(dataset, tmp_path):
    args = [*coco_data(dataset), "data.dataset.val_annotations=annotations/missing.json"]
    result = run(args, tmp_path / "short")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_error_line(result) == (
        f"run.py: error: file not found: {dataset / 'annotations/missing.json'}"
    )
    full = run(args, tmp_path / "full", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_help_lists_only_choosable_configs(tmp_path):
    result = run(["--help"], tmp_path)
    assert succeeded(result)
    data_line = next(x for x in result.stdout.splitlines() if x.startswith("data:"))
    # The data group's own configs, not the shared base conf/_topdown.yaml.
    choices = sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml"))
    assert data_line == f"data: {', '.join(choices)}" and "synthetic" in choices
