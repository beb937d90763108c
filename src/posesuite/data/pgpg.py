"""RMPE's pose-guided proposal generator (PGPG; Fang et al., ICCV 2017, section 3.3).

A detector's box misses the true box by an offset whose distribution depends on the pose: a
person with raised arms or a crouching one is boxed differently from a standing one. PGPG
learns that dependence from training data and uses it to augment training:

1. *Atomic poses.* Every training pose is normalised by its ground-truth box (centre at 0, the
   box [-0.5, 0.5] on both axes) and the poses are clustered by k-means into ``num_atoms``
   atomic poses (unlabelled joints take the joint's mean normalised position while clustering;
   a pose is later assigned to the atom nearest over its labelled joints alone).
2. *Offsets per atom.* The training split's detections are matched to its people (greedy by
   score at IoU >= ``match_iou``, as evaluation matches). Each pair's offset is the detection's
   edges minus the true box's, over the true box's width (x edges) or height (y edges): the
   parameterisation of DPG's fixed jitter (`posesuite.data.boxes.BoxJitter`). Per atom, a
   Gaussian mixture of ``components`` full-covariance components is fitted to its offsets;
   atoms with fewer than ``min_pairs`` pairs use the mixture of all pairs.
3. *Proposals.* In training, each sample of a person gets a box drawn from its atom's mixture
   around its ground-truth box (``data.train_box_source=pgpg``); at evaluation
   (``data.box_source=pgpg``), one fixed draw per record, as for the other sources.

`fit_proposals` fits; `PoseGuidedProposals` holds the result, is saved as a small json artifact
(`save`, `load`) and draws boxes (`propose`). ``python run.py task=fit_pgpg`` runs the fit on a
dataset's training split (`posesuite.tasks.fit_pgpg`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posesuite.data.records import DataError, PersonRecord

EDGES = ("x_min", "y_min", "x_max", "y_max")
MIN_BOX_SIZE = 2.0  # pixels: a drawn box keeps at least this width and height
POSE_RANGE = 1.0  # normalised poses are clipped to [-1, 1] box sizes
ARTIFACT_VERSION = 1


def normalised_poses(keypoints: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 3) image keypoints and (N, 4) [x, y, w, h] boxes -> (N, K, 2) poses in their box's
    frame (the box is [-0.5, 0.5] on both axes: x over its width, y over its height, the frame
    the edge offsets are measured in), and (N, K) labelled flags."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = boxes[:, :2] + 0.5 * boxes[:, 2:]
    size = np.maximum(boxes[:, 2:], 1e-6)
    points = (np.asarray(keypoints, dtype=np.float64)[..., :2] - centre[:, None]) / size[:, None]
    # Joints far outside their box (a person boxed by the visible part of a truncated body) are
    # held at one box size from its centre, so that a few such poses do not claim atoms.
    return points.clip(-POSE_RANGE, POSE_RANGE), np.asarray(keypoints)[..., 2] > 0


def edge_offsets(detections: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """(N, 4) offsets of [x, y, w, h] detection boxes from true boxes: each edge's shift over the
    true box's width (x edges) or height (y edges), in `EDGES` order."""
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    true = np.asarray(truths, dtype=np.float64).reshape(-1, 4)
    det_edges = np.concatenate([det[:, :2], det[:, :2] + det[:, 2:]], axis=1)
    true_edges = np.concatenate([true[:, :2], true[:, :2] + true[:, 2:]], axis=1)
    size = np.concatenate([true[:, 2:], true[:, 2:]], axis=1)
    return (det_edges - true_edges) / np.maximum(size, 1e-6)


def offset_box(box: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The [x, y, w, h] box moved by (4,) edge offsets (the inverse of `edge_offsets`)."""
    x, y, w, h = (float(v) for v in box)
    x0, y0, x1, y1 = np.array([x, y, x + w, y + h]) + np.asarray(offsets) * [w, h, w, h]
    x1, y1 = max(x1, x0 + MIN_BOX_SIZE), max(y1, y0 + MIN_BOX_SIZE)
    return np.array([x0, y0, x1 - x0, y1 - y0])


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture over the four edge offsets."""

    weights: np.ndarray  # (C,)
    means: np.ndarray  # (C, 4)
    covariances: np.ndarray  # (C, 4, 4)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        component = rng.choice(len(self.weights), p=self.weights / self.weights.sum())
        return rng.multivariate_normal(self.means[component], self.covariances[component])

    def to_json(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("weights", "means", "covariances")}

    @classmethod
    def from_json(cls, data: dict) -> Mixture:
        return cls(
            *(np.asarray(data[k], dtype=np.float64) for k in ("weights", "means", "covariances"))
        )


@dataclass(frozen=True)
class PoseGuidedProposals:
    """Fitted PGPG: ``atoms`` (A, K, 2) normalised atomic poses, one offset mixture per atom, the
    keypoint names they were fitted for, and how many training poses / matched pairs each atom
    got."""

    keypoints: tuple[str, ...]
    atoms: np.ndarray
    mixtures: tuple[Mixture, ...]
    poses_per_atom: np.ndarray  # (A,)
    pairs_per_atom: np.ndarray  # (A,)
    shared: tuple[bool, ...]  # per atom: uses the mixture of all pairs (too few of its own)

    def assign(self, keypoints: np.ndarray, box: np.ndarray) -> int:
        """The atom nearest to one person's (K, 3) pose over its labelled joints (the most
        populous atom for a person with fewer than two)."""
        points, labelled = normalised_poses(keypoints[None], np.asarray(box)[None])
        if labelled[0].sum() < 2:
            return int(np.argmax(self.poses_per_atom))
        squared = ((self.atoms - points[0][None]) ** 2).sum(-1)  # (A, K)
        return int(np.argmin((squared * labelled[0][None]).sum(-1)))

    def propose(self, record: PersonRecord, rng: np.random.Generator) -> np.ndarray:
        """A proposal box [x, y, w, h] for ``record``, drawn from its atom's mixture around its
        ground-truth box (the first frame's pose chooses the atom)."""
        atom = self.assign(record.keypoints[0], record.bbox)
        return offset_box(record.bbox, self.mixtures[atom].sample(rng))

    def check_keypoints(self, names: Sequence[str], path: str | Path) -> None:
        if tuple(names) != self.keypoints:
            raise DataError(
                f"{path} was fitted for the keypoints {list(self.keypoints)[:4]}... "
                f"({len(self.keypoints)}), the skeleton has {list(names)[:4]}... ({len(names)}): "
                f"refit it (python run.py task=fit_pgpg) for this skeleton"
            )

    # --- the artifact ------------------------------------------------------------------------
    def save(self, path: str | Path, report: dict | None = None) -> None:
        data = {
            "version": ARTIFACT_VERSION,
            "edges": list(EDGES),
            "keypoints": list(self.keypoints),
            "atoms": self.atoms.tolist(),
            "mixtures": [mixture.to_json() for mixture in self.mixtures],
            "poses_per_atom": self.poses_per_atom.tolist(),
            "pairs_per_atom": self.pairs_per_atom.tolist(),
            "shared": list(self.shared),
            "report": report or {},
        }
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> PoseGuidedProposals:
        try:
            data = json.loads(Path(path).read_text())
            if data.get("version") != ARTIFACT_VERSION:
                raise DataError(
                    f"{path}: PGPG artifact version {data.get('version')}, this posesuite reads "
                    f"version {ARTIFACT_VERSION}: refit it with python run.py task=fit_pgpg"
                )
            return cls(
                keypoints=tuple(data["keypoints"]),
                atoms=np.asarray(data["atoms"], dtype=np.float64),
                mixtures=tuple(Mixture.from_json(m) for m in data["mixtures"]),
                poses_per_atom=np.asarray(data["poses_per_atom"]),
                pairs_per_atom=np.asarray(data["pairs_per_atom"]),
                shared=tuple(bool(s) for s in data["shared"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path} is not a PGPG artifact of task=fit_pgpg: {err!r}") from err


def fit_mixture(offsets: np.ndarray, components: int, seed: int) -> Mixture:
    from sklearn.mixture import GaussianMixture

    count = min(components, max(1, len(offsets) // 20))  # 20 pairs per component at least
    model = GaussianMixture(count, covariance_type="full", random_state=seed, reg_covar=1e-6)
    model.fit(offsets)
    return Mixture(model.weights_, model.means_, model.covariances_)


def fit_proposals(
    people: Sequence[PersonRecord],
    pairs: Sequence[tuple[PersonRecord, PersonRecord]],
    keypoint_names: Sequence[str],
    num_atoms: int = 12,
    components: int = 3,
    min_keypoints: int = 8,
    min_pairs: int = 60,
    seed: int = 0,
) -> tuple[PoseGuidedProposals, dict]:
    """Fit PGPG on ground-truth ``people`` (their poses make the atoms) and (person, matched
    detection) ``pairs`` (their offsets make the mixtures); returns it and a report."""
    from sklearn.cluster import KMeans

    keypoints = np.stack([p.keypoints[0] for p in people]) if people else np.zeros((0, 0, 3))
    boxes = np.stack([p.bbox for p in people]) if people else np.zeros((0, 4))
    points, labelled = normalised_poses(keypoints, boxes)
    usable = labelled.sum(axis=1) >= min_keypoints
    if usable.sum() < num_atoms:
        raise DataError(
            f"PGPG needs at least pgpg.num_atoms={num_atoms} people with >= "
            f"pgpg.min_keypoints={min_keypoints} labelled joints; the split has {int(usable.sum())}"
        )
    if len(pairs) < min_pairs:
        raise DataError(
            f"PGPG needs at least pgpg.min_pairs={min_pairs} detections matched to people; "
            f"{len(pairs)} matched: detections of another split, or data.box_match_iou too high?"
        )
    poses, flags = points[usable], labelled[usable]
    # Unlabelled joints take the joint's mean position, so that k-means sees whole poses.
    joint_mean = (poses * flags[..., None]).sum(0) / np.maximum(flags.sum(0), 1)[:, None]
    filled = np.where(flags[..., None], poses, joint_mean[None])
    kmeans = KMeans(num_atoms, n_init=10, random_state=seed).fit(filled.reshape(len(filled), -1))
    atoms = kmeans.cluster_centers_.reshape(num_atoms, -1, 2)
    poses_per_atom = np.bincount(kmeans.labels_, minlength=num_atoms)

    draft = PoseGuidedProposals(
        tuple(keypoint_names), atoms, (), poses_per_atom, np.zeros(num_atoms, int), ()
    )
    offsets = edge_offsets(
        np.stack([detection.bbox for _, detection in pairs]),
        np.stack([person.bbox for person, _ in pairs]),
    )
    pair_atoms = np.array([draft.assign(person.keypoints[0], person.bbox) for person, _ in pairs])
    pairs_per_atom = np.bincount(pair_atoms, minlength=num_atoms)
    everything = fit_mixture(offsets, components, seed)
    mixtures, shared = [], []
    for atom in range(num_atoms):
        own = offsets[pair_atoms == atom]
        shared.append(len(own) < min_pairs)
        mixtures.append(everything if shared[-1] else fit_mixture(own, components, seed))
    proposals = PoseGuidedProposals(
        tuple(keypoint_names), atoms, tuple(mixtures), poses_per_atom, pairs_per_atom, tuple(shared)
    )
    report = {
        "people": len(people),
        "people_clustered": int(usable.sum()),
        "matched_pairs": len(pairs),
        "num_atoms": num_atoms,
        "components": components,
        "seed": seed,
        "offset_mean": dict(zip(EDGES, offsets.mean(0).round(4).tolist(), strict=True)),
        "offset_std": dict(zip(EDGES, offsets.std(0).round(4).tolist(), strict=True)),
        "atoms_on_shared_mixture": int(sum(shared)),
    }
    return proposals, report


def plot_proposals(
    proposals: PoseGuidedProposals,
    limbs: Sequence[Sequence[int]],
    path: str | Path,
    boxes_per_atom: int = 40,
    seed: int = 0,
) -> None:
    """One panel per atom: the atomic pose in its unit box (black) and boxes drawn from the
    atom's fitted offsets (blue), so the spread of proposals per pose reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(proposals.atoms)
    columns = min(count, 6)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows), squeeze=False)
    rng = np.random.default_rng(seed)
    scale = 100.0  # a box of 100 pixels, far above MIN_BOX_SIZE
    unit = np.array([-0.5, -0.5, 1.0, 1.0]) * scale
    for atom, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if atom >= count:
            continue
        for _ in range(boxes_per_atom):
            x, y, w, h = offset_box(unit, proposals.mixtures[atom].sample(rng)) / scale
            axis.add_patch(
                plt.Rectangle((x, y), w, h, fill=False, lw=0.4, color="tab:blue", alpha=0.5)
            )
        axis.add_patch(plt.Rectangle((-0.5, -0.5), 1, 1, fill=False, lw=1.2, color="black"))
        pose = proposals.atoms[atom]
        for a, b in limbs:
            axis.plot(pose[[a, b], 0], pose[[a, b], 1], color="black", lw=1)
        axis.set_xlim(-0.9, 0.9)
        axis.set_ylim(0.9, -0.9)
        axis.set_aspect("equal")
        shared = " (shared)" if proposals.shared[atom] else ""
        axis.set_title(
            f"atom {atom}: {proposals.poses_per_atom[atom]} poses,\n"
            f"{proposals.pairs_per_atom[atom]} pairs{shared}",
            fontsize=7,
        )
    figure.suptitle("PGPG: atomic poses and proposals drawn from their offsets", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
