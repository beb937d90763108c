"""CPN's loss: online hard keypoint mining on hand-computed examples, and the combined loss."""

from __future__ import annotations

import pytest
import torch

from posesuite.losses import CPNLoss, ohkm_loss


def test_ohkm_keeps_exactly_the_top_m_keypoints_of_each_sample():
    per_keypoint = torch.tensor([[1.0, 5.0, 3.0, 2.0], [4.0, 0.0, 6.0, 1.0]], requires_grad=True)
    loss = ohkm_loss(per_keypoint, top_k=2)
    # Sample 0 keeps 5 and 3 (mean 4), sample 1 keeps 6 and 4 (mean 5).
    assert loss.item() == pytest.approx(4.5)
    loss.backward()
    kept = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(per_keypoint.grad, kept / (2 * 2))  # 1 / (batch x top_k)


def test_ohkm_over_all_keypoints_is_the_plain_mean():
    per_keypoint = torch.rand(3, 17, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ohkm_loss(per_keypoint, top_k=17), per_keypoint.mean())


@pytest.mark.parametrize("top_k", [0, 18])
def test_ohkm_refuses_impossible_selections(top_k):
    with pytest.raises(ValueError, match="top_k"):
        ohkm_loss(torch.rand(2, 17), top_k)


def random_maps(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_cpn_loss_matches_its_definition_on_a_small_example():
    batch, levels, keypoints, h, w = 2, 4, 5, 6, 4
    targets = {
        "heatmaps": random_maps(batch, keypoints, h, w, seed=0),
        "global_heatmaps": random_maps(batch, levels, keypoints, h, w, seed=1),
        "target_weight": torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]]),
    }
    outputs = {
        "heatmaps": random_maps(batch, keypoints, h, w, seed=2),
        "global_heatmaps": random_maps(batch, levels, keypoints, h, w, seed=3),
    }
    losses = CPNLoss(top_k=2, global_rule="masked")(outputs, targets)

    mask = targets["target_weight"]
    global_terms = [
        ((outputs["global_heatmaps"][:, level] - targets["global_heatmaps"][:, level]) ** 2)
        * mask[..., None, None]
        for level in range(levels)
    ]
    expected_global = 0.5 * torch.stack([t.mean() for t in global_terms]).mean()
    per_keypoint = ((outputs["heatmaps"] - targets["heatmaps"]) ** 2).mean(dim=(-2, -1)) * mask
    expected_refine = torch.stack(
        [row.sort(descending=True).values[:2].mean() for row in per_keypoint]
    ).mean()
    torch.testing.assert_close(losses["loss_global"], expected_global)
    torch.testing.assert_close(losses["loss_refine"], expected_refine)
    torch.testing.assert_close(losses["loss"], expected_global + expected_refine)


def test_cpn_loss_official_global_rule_zeroes_the_targets_of_joints_not_visible():
    """tf-cpn: GlobalNet targets are kept only for visible joints (v = 2); the prediction is not
    masked, so occluded, unlabelled and out-of-crop joints are pulled toward empty maps."""
    batch, levels, keypoints, h, w = 1, 2, 4, 5, 3
    targets = {
        "heatmaps": random_maps(batch, keypoints, h, w, seed=0),
        # the codec zeroes the targets of joints with weight 0 (unlabelled or outside the crop)
        "global_heatmaps": random_maps(batch, levels, keypoints, h, w, seed=1)
        * torch.tensor([1.0, 1.0, 0.0, 0.0])[None, None, :, None, None],
        "target_weight": torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
        "visibility": torch.tensor([[2, 1, 0, 2]], dtype=torch.uint8),  # joint 3: out of crop
    }
    outputs = {
        "heatmaps": random_maps(batch, keypoints, h, w, seed=2),
        "global_heatmaps": random_maps(batch, levels, keypoints, h, w, seed=3),
    }
    losses = CPNLoss(top_k=keypoints)(outputs, targets)
    visible_target = targets["global_heatmaps"].clone()
    visible_target[:, :, 1:] = 0  # only joint 0 is visible and labelled in the crop
    expected_global = 0.5 * ((outputs["global_heatmaps"] - visible_target) ** 2).mean()
    torch.testing.assert_close(losses["loss_global"], expected_global)
    # The RefineNet term is the same under both rules: v = 1 counts as labelled there.
    masked = CPNLoss(top_k=keypoints, global_rule="masked")(outputs, targets)
    torch.testing.assert_close(losses["loss_refine"], masked["loss_refine"])
    assert not torch.isclose(losses["loss_global"], masked["loss_global"])


@pytest.mark.parametrize("global_rule", ["official", "masked"])
def test_cpn_loss_ignores_unlabelled_keypoints_and_weights_its_terms(global_rule):
    outputs = {"heatmaps": torch.zeros(1, 3, 4, 4), "global_heatmaps": torch.zeros(1, 2, 3, 4, 4)}
    targets = {
        "heatmaps": torch.ones(1, 3, 4, 4),
        "global_heatmaps": torch.ones(1, 2, 3, 4, 4),
        "target_weight": torch.tensor([[1.0, 1.0, 0.0]]),
        "visibility": torch.tensor([[2, 2, 0]], dtype=torch.uint8),
    }
    loss = CPNLoss(top_k=3, global_rule=global_rule)
    base = loss(outputs, targets)
    outputs["heatmaps"][:, 2] = 7.0  # anything at all where the keypoint is unlabelled
    assert loss(outputs, targets)["loss"] == base["loss"]
    outputs["global_heatmaps"][:, :, 2] = -3.0
    # The official rule pulls the unlabelled joint's GlobalNet maps toward 0; masked ignores them.
    changed = loss(outputs, targets)["loss"] != base["loss"]
    assert changed == (global_rule == "official")
    weighted = CPNLoss(top_k=3, global_weight=2.0, refine_weight=0.0, global_rule=global_rule)
    assert weighted(outputs, targets)["loss"] == pytest.approx(
        2 * loss(outputs, targets)["loss_global"].item()
    )


def test_cpn_loss_refuses_an_unknown_global_rule():
    with pytest.raises(ValueError, match="global_rule"):
        CPNLoss(global_rule="visible")


def test_cpn_official_rule_leaves_joints_the_source_does_not_annotate_alone():
    """A joint outside the source's keypoint set is not "not visible": no target pulls it."""
    outputs = {"heatmaps": torch.zeros(1, 3, 4, 4), "global_heatmaps": torch.zeros(1, 2, 3, 4, 4)}
    targets = {
        "heatmaps": torch.zeros(1, 3, 4, 4),
        "global_heatmaps": torch.zeros(1, 2, 3, 4, 4),
        "target_weight": torch.tensor([[1.0, 0.0, 0.0]]),
        "visibility": torch.tensor([[2, 0, 0]], dtype=torch.uint8),
        "keypoint_mask": torch.tensor([[True, True, False]]),
    }
    loss = CPNLoss(top_k=3)
    base = loss(outputs, targets)["loss"]
    outputs["global_heatmaps"][:, :, 2] = 5.0  # not annotated by the source: ignored
    assert loss(outputs, targets)["loss"] == base
    outputs["global_heatmaps"][:, :, 1] = 5.0  # annotated as unlabelled: pulled toward 0
    assert loss(outputs, targets)["loss"] > base
