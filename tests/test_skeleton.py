import numpy as np
import pytest

from posesuite.skeleton import Skeleton, SkeletonError, available_skeletons, load_skeleton


@pytest.mark.parametrize("name", available_skeletons())
def test_flip_pairs_form_an_involution(name):
    skeleton = load_skeleton(name)
    flip = skeleton.flip_index
    assert sorted(flip) == list(range(skeleton.num_keypoints))
    np.testing.assert_array_equal(flip[flip], np.arange(skeleton.num_keypoints))


@pytest.mark.parametrize("name", available_skeletons())
def test_flip_pairs_map_left_names_to_right_names(name):
    skeleton = load_skeleton(name)
    for i, j in enumerate(skeleton.flip_index):
        a, b = skeleton.keypoints[i], skeleton.keypoints[j]
        if i != j:
            assert a.replace("left", "right") == b or a.replace("right", "left") == b, (a, b)


def test_coco17_facts():
    skeleton = load_skeleton("coco17")
    assert skeleton.num_keypoints == 17
    assert skeleton.keypoints[0] == "nose" and skeleton.keypoints[16] == "right_ankle"
    np.testing.assert_allclose(skeleton.sigmas[[0, 5, 11, 15]], [0.026, 0.079, 0.107, 0.089])
    assert skeleton.joint_weights[skeleton.index("left_wrist")] == 1.5
    assert skeleton.joint_weights[skeleton.index("right_knee")] == 1.2
    assert set(skeleton.upper_body).isdisjoint(skeleton.lower_body)


def test_unknown_skeleton_lists_the_available_ones():
    with pytest.raises(SkeletonError, match="coco17"):
        load_skeleton("no_such_skeleton")


def test_inconsistent_files_are_rejected_with_the_key_named():
    base = {"name": "t", "keypoints": ["a", "b"], "sigmas": [0.1, 0.1]}
    with pytest.raises(SkeletonError, match="flip_pairs refers to unknown keypoint 'c'"):
        Skeleton.from_config({**base, "flip_pairs": [["a", "c"]]})
    with pytest.raises(SkeletonError, match="sigmas has 3 values for 2 keypoints"):
        Skeleton.from_config({**base, "sigmas": [0.1, 0.1, 0.1]})
    with pytest.raises(SkeletonError, match="more than one flip pair"):
        Skeleton.from_config({**base, "flip_pairs": [["a", "b"], ["b", "a"]]})
