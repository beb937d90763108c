"""RMPE's pose-guided proposals: the fit recovers a known per-pose mixture of box offsets, atoms
are deterministic under a seed, the artifact round-trips, proposals follow the person's atom,
every box source's crops hold the person, and task=fit_pgpg writes what training reads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from posesuite.data.boxes import BoxSource, match_pairs
from posesuite.data.pgpg import (
    PoseGuidedProposals,
    edge_offsets,
    fit_proposals,
    offset_box,
)
from posesuite.data.records import DataError, PersonRecord
from posesuite.data.sources.coco import CocoSplit, read_coco_keypoints, read_detections
from posesuite.data.transforms import TopDownTransform
from posesuite.paths import REPO_ROOT
from posesuite.skeleton import load_skeleton

NAMES = tuple(f"joint{i}" for i in range(6))
# Two pose types in their box's frame: upright (joints along y) and lying (joints along x).
UPRIGHT = np.array([[0.0, -0.4], [0.0, -0.2], [-0.2, 0.0], [0.2, 0.0], [-0.1, 0.4], [0.1, 0.4]])
LYING = UPRIGHT[:, ::-1].copy()
# Their detectors' offsets (x_min, y_min, x_max, y_max over the box size): upright people get
# one of two modes, lying ones a single, wider one.
UPRIGHT_MEANS = np.array([[-0.05, -0.10, 0.05, 0.02], [0.08, 0.05, -0.06, -0.08]])
UPRIGHT_WEIGHTS = np.array([0.7, 0.3])
LYING_MEAN = np.array([0.0, 0.12, 0.0, -0.12])
SPREAD = 0.015


def person(pose: np.ndarray, rng: np.random.Generator, index: int) -> PersonRecord:
    box = np.array([*rng.uniform(0, 400, 2), *rng.uniform(60, 160, 2)])
    noisy = pose + rng.normal(0, 0.02, pose.shape)
    points = box[:2] + (noisy + 0.5) * box[2:]
    keypoints = np.concatenate([points, np.full((len(pose), 1), 2.0)], axis=1)
    return PersonRecord(index, ("unused.jpg",), box, keypoints, annotation_id=index)


def detection_of(record: PersonRecord, offsets: np.ndarray) -> PersonRecord:
    box = offset_box(record.bbox, offsets)
    return PersonRecord(record.image_id, record.frames, box, np.zeros((6, 3)), box_score=0.9)


def known_mixture_data(seed: int = 0, count: int = 3000):
    rng = np.random.default_rng(seed)
    people, pairs = [], []
    for index in range(count):
        upright = index % 2 == 0
        record = person(UPRIGHT if upright else LYING, rng, index)
        mean = UPRIGHT_MEANS[rng.choice(2, p=UPRIGHT_WEIGHTS)] if upright else LYING_MEAN
        offsets = mean + rng.normal(0, SPREAD, 4)
        people.append(record)
        pairs.append((record, detection_of(record, offsets)))
    return people, pairs


def fit(seed: int = 0, **options):
    people, pairs = known_mixture_data()
    settings = {"num_atoms": 2, "components": 2, "min_keypoints": 4, "seed": seed, **options}
    return fit_proposals(people, pairs, NAMES, **settings)


def test_offsets_and_boxes_are_inverse():
    truth = np.array([[10.0, 20.0, 100.0, 200.0]])
    offsets = np.array([0.1, -0.05, 0.02, 0.3])
    moved = offset_box(truth[0], offsets)
    np.testing.assert_allclose(edge_offsets(moved[None], truth)[0], offsets, atol=1e-12)


def test_the_fit_recovers_each_atoms_mixture_of_offsets():
    proposals, report = fit()
    assert report["matched_pairs"] == 3000
    example = person(UPRIGHT, np.random.default_rng(9), 0)
    upright = proposals.assign(example.keypoints[0], example.bbox)
    lying = 1 - upright
    # The atoms are the two pose types (in their box's frame).
    np.testing.assert_allclose(proposals.atoms[upright], UPRIGHT, atol=0.01)
    np.testing.assert_allclose(proposals.atoms[lying], LYING, atol=0.01)
    assert list(proposals.poses_per_atom) == [1500, 1500]
    mixture = proposals.mixtures[upright]
    order = np.argsort(-mixture.weights)
    np.testing.assert_allclose(mixture.weights[order], UPRIGHT_WEIGHTS, atol=0.03)
    np.testing.assert_allclose(mixture.means[order], UPRIGHT_MEANS, atol=0.005)
    np.testing.assert_allclose(
        np.sqrt(np.diagonal(mixture.covariances[order], axis1=1, axis2=2)), SPREAD, rtol=0.15
    )
    # One mode fitted with two components: both sit on it.
    lying_mixture = proposals.mixtures[lying]
    np.testing.assert_allclose(lying_mixture.weights @ lying_mixture.means, LYING_MEAN, atol=0.005)


def test_proposals_follow_the_persons_atom():
    proposals, _ = fit()
    rng = np.random.default_rng(1)
    record = person(LYING, rng, 0)
    offsets = np.stack(
        [
            edge_offsets(proposals.propose(record, rng)[None], record.bbox[None])[0]
            for _ in range(400)
        ]
    )
    np.testing.assert_allclose(offsets.mean(0), LYING_MEAN, atol=0.01)


def test_atoms_are_deterministic_under_a_seed_and_the_artifact_round_trips(tmp_path):
    first, report = fit(seed=3)
    second, _ = fit(seed=3)
    np.testing.assert_array_equal(first.atoms, second.atoms)
    np.testing.assert_array_equal(first.mixtures[0].means, second.mixtures[0].means)
    first.save(tmp_path / "pgpg.json", report)
    loaded = PoseGuidedProposals.load(tmp_path / "pgpg.json")
    np.testing.assert_array_equal(loaded.atoms, first.atoms)
    record = person(UPRIGHT, np.random.default_rng(0), 0)
    np.testing.assert_array_equal(
        loaded.propose(record, np.random.default_rng(5)),
        first.propose(record, np.random.default_rng(5)),
    )
    assert json.loads((tmp_path / "pgpg.json").read_text())["report"]["matched_pairs"] == 3000


def test_atoms_with_too_few_pairs_share_the_mixture_of_all():
    proposals, report = fit(min_pairs=2000)  # each atom has 1500
    assert proposals.shared == (True, True) and report["atoms_on_shared_mixture"] == 2
    np.testing.assert_array_equal(proposals.mixtures[0].means, proposals.mixtures[1].means)


def test_bad_inputs_are_named(tmp_path):
    people, pairs = known_mixture_data(count=100)
    with pytest.raises(DataError, match=r"pgpg\.min_pairs=500"):
        fit_proposals(people, pairs, NAMES, num_atoms=2, min_keypoints=4, min_pairs=500)
    with pytest.raises(DataError, match=r"pgpg\.num_atoms=200"):
        fit_proposals(people, pairs, NAMES, num_atoms=200, min_keypoints=4)
    proposals, _ = fit()
    proposals.save(tmp_path / "pgpg.json")
    with pytest.raises(DataError, match=r"pgpg\.json was fitted for the keypoints"):
        PoseGuidedProposals.load(tmp_path / "pgpg.json").check_keypoints(
            ("nose",) * 6, tmp_path / "pgpg.json"
        )
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match=r"bad\.json: PGPG artifact version None"):
        PoseGuidedProposals.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="needs the proposals fitted by"):
        BoxSource("pgpg")


@pytest.mark.parametrize("kind", ["gt", "jitter", "detections", "pgpg"])
def test_every_box_source_gives_crops_that_hold_the_person(synthetic_coco, kind):
    """Most labelled joints lie inside the crop made from each source's box (the padded crop,
    1.25), for every person the source serves."""
    skeleton = load_skeleton("coco17")
    people = read_coco_keypoints(synthetic_coco.annotations, synthetic_coco.images, 17)
    detections = read_detections(
        synthetic_coco.detections, synthetic_coco.annotations, synthetic_coco.images, 17
    )
    proposals = None
    if kind == "pgpg":
        pairs = match_pairs(detections, people, 0.5)
        proposals, _ = fit_proposals(
            people, pairs, skeleton.keypoints, num_atoms=2, min_keypoints=4, min_pairs=4
        )
    source = BoxSource(kind, synthetic_coco.detections, proposals=proposals)

    split = CocoSplit(synthetic_coco.annotations, synthetic_coco.images)
    records = source.records(split, 17, training=True)
    transform = TopDownTransform(skeleton, (96, 128))
    rng = np.random.default_rng(0)
    inside = []
    for record in records:
        drawn = source.draw(record, rng)
        targets = transform.crop_targets(drawn, transform.plan(drawn))
        labelled = record.keypoints[0, :, 2] > 0
        if labelled.any():
            inside.append(targets["keypoint_weight"][0][labelled].mean())
    assert len(inside) >= 8
    assert np.mean(inside) > 0.9


def test_fit_pgpg_writes_the_artifact_that_training_reads(tmp_path):
    data = [
        f"data.root={tmp_path / 'data'}",
        "data.dataset.num_train_images=40",
        "data.dataset.num_val_images=4",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "print_config=false",
    ]
    fit_dir = tmp_path / "fit"
    command = [sys.executable, "run.py", "task=fit_pgpg", *data, "pgpg.num_atoms=3"]
    subprocess.run(
        [*command, "pgpg.min_pairs=10", f"hydra.run.dir={fit_dir}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    artifact = json.loads((fit_dir / "pgpg.json").read_text())
    assert len(artifact["atoms"]) == 3 and artifact["report"]["matched_pairs"] > 50
    assert (fit_dir / "pgpg.png").stat().st_size > 10_000
    train = [
        sys.executable,
        "run.py",
        *data,
        "data.train_box_source=pgpg",
        f"data.pgpg_file={fit_dir / 'pgpg.json'}",
        "debug=fdr",
        f"hydra.run.dir={tmp_path / 'train'}",
    ]
    result = subprocess.run(train, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pgpg boxes from" in (tmp_path / "train" / "train.log").read_text()
