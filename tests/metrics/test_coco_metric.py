"""COCO keypoint AP: `evaluate_coco_keypoints` against pycocotools, and the `COCOKeypointAP` metric
(oracle, rescoring + NMS before it, de-duplication of DDP padding, gathering)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posesuite.metrics import coco as coco_module
from posesuite.metrics.coco import COCOKeypointAP
from posesuite.metrics.coco_eval import COCO_KEYPOINT_STAT_NAMES, evaluate_coco_keypoints
from posesuite.metrics.predictions import People, coco_results
from posesuite.postprocess.pipeline import PostProcess
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")
SIGMAS = tuple(SKELETON.sigmas.tolist())


@pytest.fixture(scope="module")
def gt_file(coco_files) -> Path:
    return coco_files.annotations


@pytest.fixture(scope="module")
def people(gt_file: Path) -> list[dict]:
    """Ground-truth people with at least one labelled keypoint (COCOeval ignores the others)."""
    annotations = json.loads(gt_file.read_text())["annotations"]
    return [ann for ann in annotations if ann["num_keypoints"] > 0]


def pycocotools_stats(gt_file: Path, results: list[dict], sigmas=SIGMAS) -> list[float]:
    """pycocotools used directly, the way its README does."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(gt_file))
        evaluator = COCOeval(
            ground_truth, ground_truth.loadRes(copy.deepcopy(results)), "keypoints"
        )
        evaluator.params.kpt_oks_sigmas = np.array(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats.tolist()


def oracle_results(people: list[dict]) -> list[dict]:
    results = []
    for ann in people:
        keypoints = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        keypoints[:, 2] = keypoints[:, 2] > 0
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": keypoints.ravel().tolist(),
                "score": 1.0,
            }
        )
    return results


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
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": 1,
                    "keypoints": keypoints.ravel().tolist(),
                    "score": float(rng.uniform()),
                }
            )
    return results


def metric_inputs(people: list[dict], sample_ids: list[int] | None = None) -> dict:
    """`COCOKeypointAP.update` arguments for ground-truth people (box score 1, GT area)."""
    sample_ids = list(range(len(people))) if sample_ids is None else sample_ids
    chosen = [people[i] for i in sample_ids]
    keypoints = torch.tensor([ann["keypoints"] for ann in chosen], dtype=torch.float32)
    keypoints = keypoints.reshape(len(chosen), -1, 3)
    labelled = keypoints[..., 2] > 0
    keypoints[..., 2] = labelled.float()
    # A network places every joint somewhere in the box: unlabelled ones (GT at 0, 0) go along
    # the box's diagonal with score 0. Left at (0, 0) they would coincide across people, and
    # the parametric pose NMS counts coinciding joints as matches whatever their scores.
    boxes = torch.tensor([ann["bbox"] for ann in chosen], dtype=torch.float32)
    along = torch.linspace(0.1, 0.9, keypoints.shape[1])[None, :, None]
    diagonal = boxes[:, None, :2] + along * boxes[:, None, 2:]
    keypoints[..., :2] = torch.where(labelled[..., None], keypoints[..., :2], diagonal)
    return {
        "sample_ids": torch.tensor(sample_ids),
        "image_ids": torch.tensor([ann["image_id"] for ann in chosen]),
        "keypoints": keypoints,
        "box_scores": torch.ones(len(chosen)),
        "areas": torch.tensor([ann["area"] for ann in chosen]),
        "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in chosen)]),
    }


def noisy_inputs(people: list[dict], seed: int) -> dict:
    """Metric inputs with jittered keypoints and random scores, so AP is well below 1."""
    generator = torch.Generator().manual_seed(seed)
    inputs = metric_inputs(people)
    inputs["keypoints"][..., :2] += 4 * torch.randn(
        inputs["keypoints"][..., :2].shape, generator=generator
    )
    inputs["keypoints"][..., 2] = torch.rand(inputs["keypoints"][..., 2].shape, generator=generator)
    inputs["box_scores"] = torch.rand(len(people), generator=generator)
    return inputs


def as_floats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: value.item() for name, value in stats.items()}


# --- evaluate_coco_keypoints ---------------------------------------------------------------


def test_ground_truth_as_results_scores_one(gt_file, people):
    stats = evaluate_coco_keypoints(gt_file, oracle_results(people), SIGMAS)
    assert list(stats) == list(COCO_KEYPOINT_STAT_NAMES)
    assert stats == dict.fromkeys(COCO_KEYPOINT_STAT_NAMES, 1.0)


def test_matches_pycocotools_and_leaves_results_untouched(gt_file, people, tmp_path):
    results = perturbed_results(people, seed=0)
    snapshot = copy.deepcopy(results)
    stats = evaluate_coco_keypoints(gt_file, results, SIGMAS)
    assert results == snapshot
    assert list(stats.values()) == pycocotools_stats(gt_file, results)
    assert 0.1 < stats["AP"] < 0.99
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    assert evaluate_coco_keypoints(str(gt_file), results_file, SIGMAS) == stats


def test_reuses_a_loaded_ground_truth_and_defaults_to_coco_sigmas(gt_file, people):
    results = perturbed_results(people, seed=1)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(gt_file))
    first = evaluate_coco_keypoints(ground_truth, results)
    assert evaluate_coco_keypoints(ground_truth, results) == first
    assert first == evaluate_coco_keypoints(gt_file, results, SIGMAS)


def test_quiet_unless_verbose(gt_file, people, capsys):
    evaluate_coco_keypoints(gt_file, oracle_results(people), SIGMAS)
    assert capsys.readouterr().out == ""
    evaluate_coco_keypoints(gt_file, oracle_results(people), SIGMAS, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_empty_results_give_zeros_and_a_warning(gt_file, caplog):
    with caplog.at_level(logging.WARNING, logger="posesuite.metrics.coco"):
        stats = evaluate_coco_keypoints(gt_file, [], SIGMAS)
    assert stats == dict.fromkeys(COCO_KEYPOINT_STAT_NAMES, 0.0)
    assert "no results" in caplog.text


def test_malformed_results_file_is_named(gt_file, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 785,')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        evaluate_coco_keypoints(gt_file, broken, SIGMAS)


def test_wrong_keypoint_count_names_the_record(gt_file, people, tmp_path):
    results = oracle_results(people)
    results[3]["keypoints"] = results[3]["keypoints"][:-3]
    results_file = tmp_path / "short.json"
    results_file.write_text(json.dumps(results))
    image_id = results[3]["image_id"]
    pattern = rf"short\.json: result #3 \(image_id {image_id}\): keypoints has 48 values, expected"
    with pytest.raises(ValueError, match=pattern):
        evaluate_coco_keypoints(gt_file, results_file, SIGMAS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"image_id": 123456},
            r"result #0 \(image_id 123456\): image_id is not in the ground truth",
        ),
        ({"category_id": 7}, r"category_id 7 is not in the ground truth"),
        ({"score": "high"}, r"score 'high' is not a number"),
        ({"keypoints": ["x"] * 51}, r"keypoints is not a flat list of numbers"),
    ],
)
def test_bad_records_are_rejected_before_pycocotools(gt_file, people, change, message):
    results = oracle_results(people)
    results[0].update(change)
    with pytest.raises(ValueError, match=message):
        evaluate_coco_keypoints(gt_file, results, SIGMAS)


def test_missing_key_and_sigma_count_mismatch(gt_file, people):
    results = oracle_results(people)
    del results[2]["score"]
    with pytest.raises(ValueError, match=r"result #2 \(image_id \d+\) lacks 'score'"):
        evaluate_coco_keypoints(gt_file, results, SIGMAS)
    with pytest.raises(ValueError, match=r"16 OKS sigmas given but .*'person' has 17 keypoints"):
        evaluate_coco_keypoints(gt_file, oracle_results(people), SIGMAS[:16])


def test_missing_ground_truth_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ground-truth annotation file not found: .*nope"):
        evaluate_coco_keypoints(tmp_path / "nope.json", [], SIGMAS)


# --- COCOKeypointAP ------------------------------------------------------------------------


def post_processed(metric: COCOKeypointAP, nms: str = "oks") -> People:
    """The module's pipeline: gathered people -> rescoring + NMS."""
    return PostProcess(nms=nms).bind(SIGMAS)(metric.people())


@pytest.mark.parametrize("nms", ["oks", "soft_oks", "parametric", "none"])
def test_metric_oracle_scores_one(gt_file, people, nms):
    metric = COCOKeypointAP(gt_file, SKELETON)
    metric.update(**metric_inputs(people))
    kept = post_processed(metric, nms)
    assert metric.evaluate(kept) == dict.fromkeys(COCO_KEYPOINT_STAT_NAMES, 1.0)
    assert len(kept) == len(people)
    stats = metric.compute()  # the plain torchmetrics path: no post-processing, same here
    assert all(isinstance(value, torch.Tensor) and value.ndim == 0 for value in stats.values())
    assert as_floats(stats) == dict.fromkeys(COCO_KEYPOINT_STAT_NAMES, 1.0)


def test_metric_equals_evaluating_its_own_results(gt_file, people):
    metric = COCOKeypointAP(gt_file, SKELETON)
    metric.update(**noisy_inputs(people, seed=0))
    kept = post_processed(metric)
    stats = metric.evaluate(kept)
    results = coco_results(kept)
    assert {record["category_id"] for record in results} == {1}
    assert all(len(record["keypoints"]) == 3 * len(SIGMAS) for record in results)
    expected = pycocotools_stats(gt_file, results)
    assert list(stats.values()) == pytest.approx(expected, abs=1e-6)
    assert 0.1 < stats["AP"] < 0.99


@pytest.mark.parametrize("nms", ["oks", "parametric"])
def test_metric_rescores_and_suppresses_duplicates(gt_file, people, nms):
    """Every person twice: the copy 0.5 px off with half the box score. Rescoring gives it
    score 0.5 (its keypoint scores are 0 or 1); OKS-NMS removes it, parametric pose NMS merges
    it into its pick (both have keypoint scores 1, so the merged pose lies half-way)."""
    duplicates = metric_inputs(people)
    duplicates["sample_ids"] += len(people)
    duplicates["keypoints"][..., :2] += 0.5
    duplicates["box_scores"] *= 0.5
    metric = COCOKeypointAP(gt_file, SKELETON)
    metric.update(**metric_inputs(people))
    metric.update(**duplicates)
    with_nms = post_processed(metric, nms)
    assert metric.evaluate(with_nms)["AP"] == 1.0
    assert sorted(with_nms.scores.tolist()) == [1.0] * len(people)
    without_nms = post_processed(metric, "none")
    assert sorted(without_nms.scores.tolist()) == [0.5] * len(people) + [1.0] * len(people)


def test_repeated_samples_are_counted_once(gt_file, people):
    once = COCOKeypointAP(gt_file, SKELETON)
    twice = COCOKeypointAP(gt_file, SKELETON)
    once.update(**noisy_inputs(people, seed=1))
    twice.update(**noisy_inputs(people, seed=1))
    twice.update(**noisy_inputs(people, seed=1))
    assert as_floats(twice.compute()) == as_floats(once.compute())
    assert_same_people(twice.people(), once.people())


def assert_same_people(actual: People, expected: People) -> None:
    for name, values in expected.as_dict().items():
        torch.testing.assert_close(getattr(actual, name), values, rtol=0, atol=0)


def test_split_batches_equal_one_update(gt_file, people):
    inputs = noisy_inputs(people, seed=2)
    whole = COCOKeypointAP(gt_file, SKELETON)
    whole.update(**inputs)
    batched = COCOKeypointAP(gt_file, SKELETON)
    for batch in torch.arange(len(people)).flip(0).split(5):  # reversed order too
        batched.update(**{name: values[batch] for name, values in inputs.items()})
    assert as_floats(batched.compute()) == as_floats(whole.compute())
    assert_same_people(batched.people(), whole.people())


def test_gathering_padded_ranks_counts_each_sample_once(gt_file, people):
    """Five ranks as DistributedSampler splits the people (interleaved, padded with repeats);
    the all-gather is stood in for by a function that returns every rank's state."""
    inputs = noisy_inputs(people, seed=3)
    world_size = 5
    padded_length = -(-len(people) // world_size) * world_size
    padded = (list(range(len(people))) * 2)[:padded_length]
    ranks = [COCOKeypointAP(gt_file, SKELETON) for _ in range(world_size)]
    for rank, metric in enumerate(ranks):
        samples = padded[rank::world_size]
        metric.update(**{name: values[samples] for name, values in inputs.items()})

    def other_ranks_states():
        return iter(
            [
                [torch.cat(getattr(metric, name)) for metric in ranks[1:]]
                for name in ranks[0].metric_state
            ]
        )

    states = other_ranks_states()

    def gather_all_ranks(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, *next(states)]

    rank_zero = ranks[0]
    rank_zero.dist_sync_fn = gather_all_ranks
    rank_zero.distributed_available_fn = lambda: True
    single_process = COCOKeypointAP(gt_file, SKELETON)
    single_process.update(**inputs)
    assert_same_people(rank_zero.people(), single_process.people())
    assert len(rank_zero.sample_ids) == 1  # local state restored after the gathered people()
    states = other_ranks_states()
    assert as_floats(rank_zero.compute()) == as_floats(single_process.compute())


def test_ground_truth_is_read_once_per_metric(gt_file, people, monkeypatch):
    loads = []
    real_load = coco_module.load_coco_ground_truth
    monkeypatch.setattr(
        coco_module, "load_coco_ground_truth", lambda path: loads.append(path) or real_load(path)
    )
    metric = COCOKeypointAP(gt_file, SKELETON)
    metric.update(**metric_inputs(people, sample_ids=[0, 1, 2]))
    first = metric.evaluate(metric.people())
    metric.reset()
    metric.update(**metric_inputs(people, sample_ids=[0, 1, 2]))
    assert metric.evaluate(metric.people()) == first
    assert len(metric.reports(metric.people())) == 2
    assert len(loads) == 1


def test_compute_without_updates_gives_zeros(gt_file):
    metric = COCOKeypointAP(gt_file, SKELETON)
    with pytest.warns(UserWarning, match="before the ``update``"):
        stats = metric.compute()
    assert as_floats(stats) == dict.fromkeys(COCO_KEYPOINT_STAT_NAMES, 0.0)
    assert len(metric.people()) == 0


def test_update_rejects_wrong_shapes(gt_file, people):
    metric = COCOKeypointAP(gt_file, SKELETON)
    inputs = metric_inputs(people)
    count = len(people)
    with pytest.raises(ValueError, match=rf"keypoints must have shape \({count}, 17, 3\)"):
        metric.update(**{**inputs, "keypoints": inputs["keypoints"][:, :16]})
    with pytest.raises(ValueError, match=rf"areas must have shape \({count},\)"):
        metric.update(**{**inputs, "areas": inputs["areas"][:3]})


def test_primary_value_must_be_one_of_the_metric_values(gt_file):
    assert COCOKeypointAP(gt_file, SKELETON, primary="AP50").primary == "AP50"
    with pytest.raises(ValueError, match=r"metric.primary='PCKh' is not one of .*AP50"):
        COCOKeypointAP(gt_file, SKELETON, primary="PCKh")
