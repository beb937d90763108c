"""Decoding only the part of a JPEG a crop reads (`posesuite.data._jpeg_region`): the decoded
pixels are the full decode's on every pixel the warp reads, the crops equal the full decode's
crops, and truncated or corrupt files are still refused."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from posesuite.data import decoding
from posesuite.data.decoding import (
    decode_for_crop,
    decode_reduction,
    read_image,
    reduced_to_original,
)
from posesuite.data.geometry import apply_affine, invert_affine
from posesuite.data.records import PersonRecord
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.sources.synthetic import SyntheticSpec, ensure_synthetic_coco
from posesuite.data.transforms import Augmentation, TopDownTransform
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")
# Rotation and scale as in training, and shifts and zooms that push crops past the border.
AUGMENTATION = Augmentation(photometric=False, scale_factor=0.4, shift_factor=0.4)
INPUT_SIZES = [(192, 256), (96, 128), (48, 64), (24, 32)]  # the small ones decode at 1/2-1/8
SAMPLINGS = {
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
}


@pytest.fixture(scope="module")
def decode_region():
    if decoding.decode_region is None:
        pytest.skip(
            "posesuite.data._jpeg_region is not built, so frames are decoded whole: `make setup` "
            "builds it (it needs a C compiler, the Python headers and libjpeg-turbo's headers)"
        )
    return decoding.decode_region


def seeded(transform: TopDownTransform, seed: int) -> TopDownTransform:
    transform._rng = np.random.default_rng(seed)
    transform._rng_pid = os.getpid()
    return transform


def test_the_extension_is_built_and_used(decode_region, tmp_path):
    from posesuite.data._jpeg_region import decode_region as extension

    assert decode_region is extension
    path = tmp_path / "scene.jpg"
    path.write_bytes(encode(scene(240, 320)))
    matrix = matrix_for((100.0, 100, 40, 60))
    frame = decode_for_crop(str(path), matrix, (48, 64), reduce=False)
    assert frame.pixels.shape[0] < 240 and frame.pixels.shape[1] < 320


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with sharp-edged coloured boxes: chroma detail at every scale."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(1, width // 3 + 2), rng.integers(1, height // 3 + 2)
        image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    return image


def encode(image: np.ndarray, sampling: str = "420", restart: int = 0) -> bytes:
    """JPEG bytes with that chroma subsampling and a restart marker every ``restart`` MCUs."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLINGS[sampling]]
    ok, encoded = cv2.imencode(".jpg", image, [*params, cv2.IMWRITE_JPEG_RST_INTERVAL, restart])
    assert ok
    return encoded.tobytes()


# (name, (height, width), subsampling, restart interval): odd sizes, one a single column.
VARIANTS = [
    (f"{sampling}-{height}x{width}{'-rst' if restart else ''}", (height, width), sampling, restart)
    for sampling in SAMPLINGS
    for height, width in [(256, 320), (333, 517), (31, 1)]
    for restart in (0, 3)
]


def full_decode(data: bytes, reduction: int) -> np.ndarray:
    pixels, used = decoding._decode_whole(np.frombuffer(data, np.uint8), reduction)
    assert used == reduction
    return pixels


@pytest.mark.parametrize(("name", "size", "sampling", "restart"), VARIANTS)
def test_region_pixels_are_the_full_decodes(decode_region, name, size, sampling, restart):
    """Random regions, many past the border: every column but the region's first and last is
    the full decode's; those two are too where they are the image's edges or chroma is not
    subsampled horizontally (fancy upsampling treats a region's edges as the image's)."""
    data = encode(scene(*size), sampling, restart)
    rng = np.random.default_rng(0)
    for reduction in (1, 2, 4, 8):
        full = full_decode(data, reduction)
        height, width = full.shape[:2]
        for _ in range(40):
            x0, x1 = np.sort(rng.integers(-8, width + 8, 2))
            y0, y1 = np.sort(rng.integers(-8, height + 8, 2))
            buffer, w, h, x, y = decode_region(data, x0, y0, x1 + 1, y1 + 1, reduction)
            if min(x1, width - 1) < max(x0, 0) or min(y1, height - 1) < max(y0, 0):
                assert (w, h) == (0, 0)
                continue
            # Only x moves, left to an iMCU boundary (16 pixels at most); the rest is as asked.
            assert max(x0, 0) - 16 < x <= max(x0, 0) and y == max(y0, 0)
            assert x + w == min(x1 + 1, width) and y + h == min(y1 + 1, height)
            region = np.frombuffer(buffer, np.uint8).reshape(h, w, 3)
            expected = full[y : y + h, x : x + w]
            np.testing.assert_array_equal(region[:, 1:-1], expected[:, 1:-1], err_msg=name)
            for column, at_image_edge in ((0, x == 0), (-1, x + w == width)):
                if at_image_edge or sampling == "444":
                    np.testing.assert_array_equal(region[:, column], expected[:, column])


def test_greyscale_and_progressive_jpegs(decode_region):
    image = scene(125, 203)
    grey = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[1].tobytes()
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    for data in (grey, progressive):
        for reduction in (1, 2):
            full = full_decode(data, reduction)
            buffer, w, h, x, y = decode_region(data, 21, 17, 80, 50, reduction)
            region = np.frombuffer(buffer, np.uint8).reshape(h, w, 3)
            np.testing.assert_array_equal(region[:, 1:-1], full[y : y + h, x + 1 : x + w - 1])


def region_and_full_crops(transform, record, plan, reduce):
    """The crop from a region decode, and from the full decode at the same scale, the full
    decode's both as a whole and cut to the region (the same pixels and map as the region's)."""
    frame = decode_for_crop(record.image_path, plan.matrix, transform.input_size, reduce)
    reduction = round(frame.to_original[0, 0])
    assert reduction == (decode_reduction(plan.matrix) if reduce else 1)
    full = read_image(record.image_path, reduction)
    whole = transform(record, [full], plan, [reduced_to_original(reduction)])["image"]
    x, y = (frame.to_original[:2, 2] - (reduction - 1) / 2) / reduction
    height, width = frame.pixels.shape[:2]
    if x < 0:  # the crop lies outside the image: nothing was decoded
        cut = np.zeros_like(frame.pixels)
    else:
        cut = full[round(y) : round(y) + height, round(x) : round(x) + width]
    region = transform(record, [frame.pixels], plan, [frame.to_original])["image"]
    as_cut = transform(record, [np.ascontiguousarray(cut)], plan, [frame.to_original])["image"]
    return region, as_cut, whole, reduction


def check_crops(records, seeds, image_sizes):
    """Region-decoded crops of augmented plans against full-decode crops, at every input size,
    at full resolution and at the plan's reduction. Returns the reductions met and the share of
    crops reaching past the image border."""
    reductions, past_border, compared, differing = set(), 0, 0, 0
    for input_size in INPUT_SIZES:
        for seed in seeds:
            transform = seeded(TopDownTransform(SKELETON, input_size, 1.25, AUGMENTATION), seed)
            for record in records:
                plan = transform.plan(record)
                width, height = image_sizes[record.image_path]
                last = np.array(input_size) - 1
                corners = apply_affine(
                    np.array([[0, 0], [0, 1], [1, 0], [1, 1]]) * last, invert_affine(plan.matrix)
                )
                past_border += bool(
                    (corners < -0.5).any() or (corners > np.array([width, height]) - 0.5).any()
                )
                for reduce in (False, True):
                    region, as_cut, whole, reduction = region_and_full_crops(
                        transform, record, plan, reduce
                    )
                    reductions.add(reduction)
                    # The warp reads the same pixels through the same map: the same crop.
                    np.testing.assert_array_equal(region, as_cut)
                    # Against the full frame, OpenCV 5.0's warpAffine rounds a few sample
                    # positions of the matrix shifted by the region's offset the other way:
                    # measured, 1 level on 1.2-1.4e-4 of the values, none more (the same when
                    # warping a cut of one decoded array).
                    difference = np.abs(region.astype(int) - whole.astype(int))
                    assert difference.max() <= 1
                    compared += difference.size
                    differing += np.count_nonzero(difference)
    assert differing / compared < 5e-4, differing / compared
    return reductions, past_border / (len(INPUT_SIZES) * len(seeds) * len(records))


def image_sizes_of(records):
    sizes = {}
    for record in records:
        height, width = cv2.imread(record.image_path).shape[:2]
        sizes[record.image_path] = (width, height)
    return sizes


@pytest.fixture(scope="module")
def synthetic_records(tmp_path_factory):
    spec = SyntheticSpec(num_train_images=1, num_val_images=4)
    paths = ensure_synthetic_coco(tmp_path_factory.mktemp("synthetic"), spec)
    return read_coco_keypoints(paths.val_annotations, paths.val_images, 17)


@pytest.mark.parametrize(("sampling", "restart"), [("420", 0), ("422", 0), ("444", 0), ("420", 5)])
def test_region_crops_equal_full_crops_on_synthetic_jpegs(
    decode_region, synthetic_records, tmp_path, sampling, restart
):
    """The synthetic images re-encoded with each chroma subsampling, with restart markers."""
    records = []
    for record in synthetic_records:
        path = tmp_path / os.path.basename(record.image_path)
        if not path.exists():
            path.write_bytes(encode(cv2.imread(record.image_path), sampling, restart))
        records.append(PersonRecord(record.image_id, (str(path),), record.bbox, record.keypoints))
    reductions, past_border = check_crops(records, range(3), image_sizes_of(records))
    assert reductions >= {1, 2, 4} and past_border > 0.2, (reductions, past_border)


def test_region_crops_equal_full_crops_on_real_images(decode_region, real_data_dir):
    coco_dir = real_data_dir / "coco"
    records = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    reductions, past_border = check_crops(records, range(4), image_sizes_of(records))
    assert reductions >= {1, 2, 4} and past_border > 0.2, (reductions, past_border)


def test_a_crop_outside_the_image_is_black(decode_region, tmp_path):
    path = tmp_path / "scene.jpg"
    path.write_bytes(encode(scene(200, 300)))
    record = PersonRecord(0, (str(path),), np.array([500.0, 40, 60, 120]), np.zeros((17, 3)))
    transform = TopDownTransform(SKELETON, (48, 64))
    plan = transform.plan(record)
    frame = decode_for_crop(str(path), plan.matrix, transform.input_size)
    assert frame.pixels.shape == (1, 1, 3)
    crop = transform(record, [frame.pixels], plan, [frame.to_original])["image"]
    assert not crop.any()


@pytest.fixture
def jpeg_file(tmp_path):
    path = tmp_path / "scene.jpg"
    path.write_bytes(encode(scene(240, 320)))
    return path


def matrix_for(box: tuple[float, float, float, float], input_size=(48, 64)) -> np.ndarray:
    record = PersonRecord(0, ("unused",), np.array(box), np.zeros((17, 3)))
    return TopDownTransform(SKELETON, input_size).plan(record).matrix


TOP, BOTTOM = (100.0, 10, 40, 60), (100.0, 170, 40, 60)  # boxes in the image's top and bottom


@pytest.mark.parametrize("kept", [0.4, 0.7, 0.95])
@pytest.mark.parametrize("box", [TOP, BOTTOM])
def test_truncated_files_are_refused_wherever_the_crop_is(decode_region, jpeg_file, kept, box):
    """Also where the crop lies above the cut: a region decode stops before reaching it, but the
    file's EOI marker is missing."""
    data = jpeg_file.read_bytes()
    jpeg_file.write_bytes(data[: int(len(data) * kept)])
    assert decode_for_crop(str(jpeg_file), matrix_for(box), (48, 64)) is None
    assert decode_for_crop(str(jpeg_file), matrix_for(box), (48, 64), reduce=False) is None


def test_a_file_without_its_end_marker_is_refused(decode_region, jpeg_file):
    data = jpeg_file.read_bytes()
    assert data.endswith(b"\xff\xd9")
    jpeg_file.write_bytes(data[:-2])
    assert decode_for_crop(str(jpeg_file), matrix_for(TOP), (48, 64)) is None
    jpeg_file.write_bytes(data + b"\x00" * 16)  # trailing padding is fine, as in `read_image`
    assert decode_for_crop(str(jpeg_file), matrix_for(TOP), (48, 64)) is not None


def test_corrupt_data_above_or_in_the_region_is_refused(decode_region, jpeg_file):
    """A marker in the middle of the entropy-coded data: libjpeg's warning is an error."""
    data = bytearray(jpeg_file.read_bytes())
    start = data.index(b"\xff\xda")  # start of scan
    middle = start + (len(data) - start) // 3
    data[middle : middle + 2] = b"\xff\xd9"
    jpeg_file.write_bytes(bytes(data))
    assert read_image(str(jpeg_file)) is None
    assert decode_for_crop(str(jpeg_file), matrix_for(BOTTOM), (48, 64)) is None
    (jpeg_file.parent / "noise.jpg").write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    assert decode_for_crop(str(jpeg_file.parent / "noise.jpg"), matrix_for(TOP), (48, 64)) is None
    assert decode_for_crop(str(jpeg_file.parent / "absent.jpg"), matrix_for(TOP), (48, 64)) is None


def test_other_formats_and_cmyk_jpegs_are_decoded_whole(tmp_path):
    image = cv2.cvtColor(scene(120, 160), cv2.COLOR_BGR2RGB)
    png = tmp_path / "scene.jpg"  # a PNG by its content, whatever its name
    cv2.imwrite(str(tmp_path / "scene.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    png.write_bytes((tmp_path / "scene.png").read_bytes())
    frame = decode_for_crop(str(png), matrix_for((60.0, 30, 20, 40), (24, 32)), (24, 32))
    np.testing.assert_array_equal(frame.pixels, image)
    np.testing.assert_array_equal(frame.to_original, np.eye(3))
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the CMYK JPEG")
    cmyk = tmp_path / "cmyk.jpg"
    pil.fromarray(image).convert("CMYK").save(cmyk, quality=95)
    frame = decode_for_crop(str(cmyk), matrix_for((60.0, 30, 20, 40), (24, 32)), (24, 32))
    np.testing.assert_array_equal(frame.pixels, read_image(str(cmyk)))
    np.testing.assert_array_equal(frame.to_original, np.eye(3))


def test_without_the_extension_frames_are_decoded_whole(monkeypatch, jpeg_file):
    monkeypatch.setattr(decoding, "decode_region", None)
    matrix = matrix_for(TOP, (24, 32))
    reduction = decode_reduction(matrix)
    assert reduction > 1
    frame = decode_for_crop(str(jpeg_file), matrix, (24, 32))
    np.testing.assert_array_equal(frame.pixels, read_image(str(jpeg_file), reduction))
    np.testing.assert_array_equal(frame.to_original, reduced_to_original(reduction))
