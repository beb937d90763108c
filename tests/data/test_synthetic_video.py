"""The embedded synthetic video (`posesuite.data.sources.synthetic_video`): Penn Action's files,
determinism, coherent motion, occlusions that come and go, and reading back through the Penn
Action reader and `data=synthetic_video`."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.io import loadmat

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.sources.penn_action import (
    read_penn_action_ground_truth,
    read_penn_action_videos,
)
from posesuite.data.sources.synthetic_video import (
    MOTIONS,
    SyntheticVideoDataset,
    SyntheticVideoSpec,
    ensure_synthetic_video,
)
from posesuite.metrics.pck import evaluate_pck
from posesuite.paths import CONF_DIR
from posesuite.skeleton import load_skeleton

SMALL = SyntheticVideoSpec(num_train_videos=15, num_val_videos=6)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_video(tmp_path_factory.mktemp("synthetic_video"), SMALL)


def _labels(folder: Path) -> list[dict]:
    return [loadmat(str(path)) for path in sorted((folder / "labels").glob("*.mat"))]


def test_files_in_penn_actions_layout(small: Path) -> None:
    assert small.name == SMALL.digest()
    labels = _labels(small)
    assert len(labels) == SMALL.num_train_videos + SMALL.num_val_videos
    for number, label in enumerate(labels, start=1):
        frames = int(label["nframes"][0, 0])
        assert SMALL.min_frames <= frames <= SMALL.max_frames
        assert label["x"].shape == label["y"].shape == label["visibility"].shape == (frames, 13)
        assert label["bbox"].shape == (frames, 4)
        assert label["dimensions"].tolist() == [[SMALL.image_height, SMALL.image_width, frames]]
        assert label["train"].item() == (1 if number <= SMALL.num_train_videos else -1)
        assert str(label["action"][0]) in MOTIONS
        assert str(label["pose"][0]) in ("front", "side", "back")
        names = sorted(p.name for p in (small / "frames" / f"{number:04d}").iterdir())
        assert names == [f"{frame:06d}.jpg" for frame in range(1, frames + 1)]
    assert {str(label["action"][0]) for label in labels} == set(MOTIONS)


def test_same_spec_gives_identical_files(small: Path, tmp_path: Path) -> None:
    again = ensure_synthetic_video(tmp_path, SMALL)
    files = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (small / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_other_seeds_give_other_videos(small: Path, tmp_path: Path) -> None:
    other = ensure_synthetic_video(tmp_path, replace(SMALL, train_seed=7, val_seed=8))
    assert other.name != small.name
    frame = Path("frames") / "0001" / "000001.jpg"
    assert (other / frame).read_bytes() != (small / frame).read_bytes()


def test_motion_is_coherent(small: Path) -> None:
    """Joints move every video, by at most a fraction of the person's size a frame."""
    for video in read_penn_action_videos(small):
        label = loadmat(str(video.label_file))
        joints = np.stack([label["x"], label["y"]], axis=2)  # every joint, visible or not
        corners = label["bbox"]
        size = np.maximum(corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1])
        step = np.linalg.norm(np.diff(joints, axis=0), axis=2) / size[:-1, None]
        assert step.max() < 0.3, video.label_file
        assert step.max() > 0.01, video.label_file


def test_occlusions_come_and_go(small: Path) -> None:
    """Some joints are hidden in a frame and seen in the frames either side of it: what memory
    of the previous frames can help with. Hidden joints are a minority."""
    videos = read_penn_action_videos(small)
    visible = np.concatenate([video.visible for video in videos])
    assert 0.05 < 1 - visible.mean() < 0.4
    blinks = 0
    for video in videos:
        seen = video.visible
        blinks += int((seen[:-2] & ~seen[1:-1] & seen[2:]).sum())
    assert blinks >= 5


def test_read_back_as_clips(small: Path) -> None:
    dataset = SyntheticVideoDataset(small.parent, clip_length=4, clip_stride=2, **asdict(SMALL))
    train, val = dataset.prepare()
    assert train.root == val.root == small
    records = train.read_people(13)
    videos = {video.number: video for video in read_penn_action_videos(small)}
    expected = sum((video.num_frames - 4) // 2 + 1 for video in videos.values() if video.training)
    assert len(records) == expected
    for record in records:
        assert record.num_frames == 4 and all(Path(frame).is_file() for frame in record.frames)
        # Visible 2, hidden (the occluder, the figure itself) but in the frame 1, outside 0.
        assert set(np.unique(record.keypoints[..., 2])) <= {0.0, 1.0, 2.0}
        # One box for the clip, around every visible joint of every frame.
        points = record.keypoints[record.keypoints[..., 2] == 2][:, :2]
        x, y, w, h = record.bbox
        assert (points >= [x - 0.5, y - 0.5]).all() and (points <= [x + w, y + h]).all()
    assert {r.annotation_id for r in val.read_people(13)} == {
        number for number, video in videos.items() if not video.training
    }


def test_ground_truth_covers_every_val_frame_once(small: Path) -> None:
    _, val = SyntheticVideoDataset(small.parent, **asdict(SMALL)).prepare()
    truth = read_penn_action_ground_truth(val.annotations)
    videos = [video for video in read_penn_action_videos(small) if not video.training]
    assert len(truth) == sum(video.num_frames for video in videos)
    assert len(set(truth.image_ids.tolist())) == len(truth)
    predicted = {frame for record in val.read_people(13) for frame in record.frame_ids}
    assert predicted == set(truth.image_ids.tolist())
    assert set(truth.annotation_ids.tolist()) == {video.number for video in videos}


def test_ground_truth_fed_back_scores_pck_100(small: Path) -> None:
    """The val clips' keypoints as predictions, every frame of the overlapping last clips
    included, through Penn Action's PCK (the box's size)."""
    _, val = SyntheticVideoDataset(small.parent, **asdict(SMALL)).prepare()
    records = val.read_people(13)
    values, counts = evaluate_pck(
        read_penn_action_ground_truth(val.annotations),
        np.concatenate([r.keypoints for r in records]),
        np.concatenate([r.frame_ids for r in records]),
        np.concatenate([[r.annotation_id] * r.num_frames for r in records]),
        np.ones(sum(r.num_frames for r in records)),
        load_skeleton("penn13"),
        reference="bbox",
    )
    assert counts.labelled.sum() > 0
    assert all(value == 100.0 for value in values.values()), values


def test_second_call_reuses_the_cache(small: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*")}
    assert ensure_synthetic_video(small.parent, SMALL) == small
    assert {p: p.stat().st_mtime_ns for p in small.rglob("*")} == before


def test_incomplete_folders_and_bad_specs_are_reported(tmp_path: Path) -> None:
    tiny = replace(SMALL, num_train_videos=1, num_val_videos=1)
    (tmp_path / tiny.digest() / "labels").mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"incomplete \(0 of 2 label files\)"):
        ensure_synthetic_video(tmp_path, tiny)
    with pytest.raises(ValueError, match="clip_length 6 exceeds min_frames 5"):
        SyntheticVideoDataset(tmp_path, clip_length=6)
    for change in ({"val_seed": 0}, {"min_frames": 6, "max_frames": 5}, {"num_val_videos": 0}):
        with pytest.raises(ValueError):
            replace(SMALL, **change)


def test_data_synthetic_video_serves_clips(tmp_path: Path) -> None:
    overrides = [
        "data=synthetic_video",
        f"data.root={tmp_path}",
        "data.num_workers=0",
        "data.dataset.num_train_videos=2",
        "data.dataset.num_val_videos=2",
        "data.val_batch_size=2",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.skeleton.name == "penn13" and cfg.metric.primary == "PCK"
    assert cfg.metric.reference == "bbox"
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    width, height = cfg.model.input_size
    assert batch["image"].shape == (2, 5, 3, height, width)
    assert batch["image_id"].shape == (2, 5)
    assert (datamodule.val_annotations / "labels").is_dir()
