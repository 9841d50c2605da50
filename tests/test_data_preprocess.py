"""Preprocess: lesion centre kept inside the square, resizing, colour spaces, the stage's files."""
import csv
import json

import cv2
import numpy as np
import pytest

from siamdiff.data import color
from siamdiff.data.prep import load_split, read_index
from siamdiff.data.preprocess import check_params, lesion_center, preprocess_pair, run, to_square
from siamdiff.data.sources import ingest
from siamdiff.utils import SiamdiffError


def test_lesion_center_is_inside_even_for_concave_lesions():
    mask = np.zeros((100, 140), np.uint8)
    cv2.ellipse(mask, (70, 50), (40, 30), 0, 0, 300, 1, 12)  # an open ring: its centre of mass is outside it
    r, c = lesion_center(mask)
    assert mask[r, c] == 1
    ys, xs = np.nonzero(mask)
    assert mask[int(ys.mean()), int(xs.mean())] == 0  # the naive centroid would have been outside
    assert lesion_center(np.zeros((10, 20), np.uint8)) == (5, 10)


@pytest.mark.parametrize("fit", ["crop", "pad"])
@pytest.mark.parametrize("shape", [(288, 384), (576, 768), (1070, 1348), (400, 300)])
def test_centroid_kept_inside_the_square(fit, shape):
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    for _ in range(10):
        mask = np.zeros(shape, np.uint8)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))  # anywhere, also at the very edge
        cv2.circle(mask, (x, y), int(rng.integers(3, min(h, w) // 4)), 1, -1)
        image = np.dstack([mask * 200] * 3).astype(np.uint8)
        r, c = lesion_center(mask)
        sq_img, sq_mask, (sr, sc) = to_square(image, mask, fit)
        side = sq_mask.shape[0]
        assert sq_mask.shape == (side, side) and sq_img.shape == (side, side, 3)
        assert side == (min(h, w) if fit == "crop" else max(h, w))
        assert 0 <= sr < side and 0 <= sc < side
        assert sq_mask[sr, sc] == 1 and sq_img[sr, sc, 0] == 200  # the same pixel, moved with the square


def test_preprocess_pair_resizes_and_rebinarises():
    mask = np.zeros((288, 384), np.uint8)
    cv2.circle(mask, (200, 140), 60, 1, -1)
    image = np.full((288, 384, 3), 90, np.uint8)
    image[mask > 0] = (220, 40, 40)
    img, msk = preprocess_pair(image, mask, 64)
    assert img.shape == (64, 64, 3) and msk.shape == (64, 64) and set(np.unique(msk)) <= {0, 1}
    assert abs(msk.mean() - mask[:, 48:336].mean()) < 0.01
    assert np.abs(img[msk > 0].astype(int).mean(0) - (220, 40, 40)).max() < 25  # aligned image and mask


def test_fit_resize_is_the_released_geometry():
    """`fit: resize` (the released code): the whole frame stretched anisotropically to size x size with
    bilinear interpolation (cv2.resize's default), the mask through the same mapping, re-binarised."""
    from siamdiff.data.preprocess import FITS

    assert FITS == ("crop", "pad", "resize") and check_params({"size": 64, "fit": "resize"})[2] == "resize"
    h, w, size = 288, 384, 64
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (372, 140), 40, 1, -1)          # at the right edge: a lesion-centred crop would move it
    cv2.rectangle(mask, (0, 0), (47, 35), 1, -1)     # top-left corner block: 48 x 36 px -> 8 x 8 px exactly
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img, msk = preprocess_pair(image, mask, size, "resize")
    assert img.shape == (size, size, 3) and img.dtype == np.uint8 and msk.shape == (size, size)
    assert set(np.unique(msk)) == {0, 1} and msk.dtype == np.uint8
    assert np.array_equal(img, cv2.resize(image, (size, size)))                       # bilinear, whole frame
    assert np.array_equal(img, cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR))
    assert not np.array_equal(img, cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    # the whole frame is kept: the corner block maps to the corner (anisotropic: 48/6 x 36/4.5 = 8 x 8)
    assert msk[:7, :7].all() and not msk[:7, 9:20].any() and not msk[9:20, :7].any()
    # the mask went through the same (bilinear) mapping, thresholded at half its range
    soft = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(msk, (soft >= 0.5).astype(np.uint8))
    assert abs(msk.mean() - mask.mean()) < 0.01                                       # coverage kept (no crop)
    # a crop would have cut the frame; resize differs from both square fits
    for other in ("crop", "pad"):
        assert not np.array_equal(preprocess_pair(image, mask, size, other)[1], msk)
    # image and mask stay aligned: a flat-coloured lesion keeps its colour under the resized mask
    flat = np.full((h, w, 3), 90, np.uint8)
    flat[mask > 0] = (220, 40, 40)
    img2, msk2 = preprocess_pair(flat, mask, size, "resize")
    assert np.abs(img2[msk2 > 0].astype(int).mean(0) - (220, 40, 40)).max() < 25
    with pytest.raises(ValueError):
        to_square(image, mask, "resize")


@pytest.mark.parametrize("bad", [{"size": -3}, {"size": 0}, {"size": "64"}, {"size": 64, "color_space": "hsv"},
                                 {"size": 64, "fit": "stretch"}])
def test_bad_params(bad):
    with pytest.raises(SiamdiffError, match="params.yaml: preprocess"):
        check_params(bad)


def test_lab_matches_skimage_and_round_trips():
    skcolor = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(0)
    rgb = np.concatenate([rng.integers(0, 256, (20000, 3)), np.repeat(np.arange(256)[:, None], 3, 1),
                          np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]])]).astype(np.uint8)
    lab = color.rgb_to_lab(rgb.astype(np.float64) / 255)
    assert np.abs(lab - skcolor.rgb2lab(rgb[None].astype(np.float64) / 255)[0]).max() < 0.05
    stats = {"space": "lab", "a_mean": 12.0, "a_std": 9.0, "b_mean": 8.0, "b_std": 7.0}
    x = color.to_working(rgb.reshape(1, -1, 1, 3), stats)
    assert x.shape == (1, 3, len(rgb), 1) and x.dtype == np.float32
    assert -1.0001 <= x[:, 0].min() and x[:, 0].max() <= 1.0001  # L -> [-1, 1]
    back = color.from_working(x, stats).reshape(-1, 3)
    assert np.abs(back.astype(int) - rgb).max() <= 1


def test_torch_working_space_round_trip():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    rgb = torch.from_numpy(rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    for stats in ({"space": "rgb"}, None,
                  {"space": "lab", "a_mean": 20.0, "a_std": 10.0, "b_mean": 15.0, "b_std": 8.0}):
        x = color.to_working(rgb, stats)
        assert isinstance(x, torch.Tensor) and x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
        back = color.from_working(x, stats)
        assert back.dtype == torch.uint8 and back.shape == rgb.shape
        assert (back.int() - rgb.int()).abs().max() <= 1
        # numpy and torch agree
        xn = color.to_working(rgb.numpy(), stats)
        assert np.abs(xn - x.numpy()).max() < 1e-4
    assert color.to_working(rgb, {"space": "rgb"}).min() >= -1 and color.to_working(rgb, None).max() <= 1


def test_load_stats_validates(tmp_path):
    p = tmp_path / "color_stats.json"
    p.write_text(json.dumps({"space": "lab", "a_mean": 1.0}))
    with pytest.raises(SiamdiffError, match="a_std"):
        color.load_stats(p)
    with pytest.raises(SiamdiffError, match="not found"):
        color.load_stats(tmp_path / "none.json")


def _split_csv(path, manifest):
    """A hand-made split (train/val/test by patient order) so this test does not depend on the split stage."""
    patients = sorted({(r["dataset"], r["patient"]) for r in manifest["items"]})
    part = {p: "val" if i == 1 else "test" if i == 3 else "train" for i, p in enumerate(patients)}
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "dataset", "patient", "frame", "split"])
        for r in manifest["items"]:
            w.writerow([r["id"], r["dataset"], r["patient"], r["frame"], part[(r["dataset"], r["patient"])]])


def test_stage_outputs_follow_the_contract(tmp_path):
    torch = pytest.importorskip("torch")
    manifest = ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": 5, "frames_per_patient": 2,
                                    "datasets": ["synth-b"]}]}, raw_dir=tmp_path / "raw", plot_path=None)
    _split_csv(tmp_path / "split.csv", manifest)
    stats = run({"size": 32, "color_space": "lab"}, raw_dir=tmp_path / "raw", split_csv=tmp_path / "split.csv",
                out_dir=tmp_path / "prep")
    prep = tmp_path / "prep"
    assert sorted(p.name for p in prep.iterdir()) == ["color_stats.json", "index.csv", "test.safetensors",
                                                      "train.safetensors", "val.safetensors"]
    assert color.load_stats(prep / "color_stats.json") == stats and stats["space"] == "lab"
    header = (prep / "index.csv").read_text().splitlines()[0]
    assert header == "id,split,dataset,patient,frame,row,coverage,image_sha256"
    index = read_index(prep)
    assert len(index) == 10
    sha = {r["id"]: r["image_sha256"] for r in manifest["items"]}
    total = 0
    for split in ("train", "val", "test"):
        rows, rgb, mask = load_split(prep, split)
        assert isinstance(rgb, torch.Tensor) and rgb.dtype == torch.uint8 and rgb.shape == (len(rows), 32, 32, 3)
        assert mask.shape == (len(rows), 32, 32) and int(mask.max()) <= 1
        for i, r in enumerate(rows):
            assert r["row"] == i and r["split"] == split and r["image_sha256"] == sha[r["id"]]
            assert abs(r["coverage"] - float(mask[i].float().mean())) < 1e-5
        total += len(rows)
    assert total == 10
    # colour statistics come from the train split only
    _, rgb_train, _ = load_split(prep, "train", as_numpy=True)
    assert color.compute_stats(rgb_train, "lab") == stats
    # a stale split.csv is refused
    lines = (tmp_path / "split.csv").read_text().splitlines()
    (tmp_path / "split.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(SiamdiffError, match="does not match"):
        run({"size": 32}, raw_dir=tmp_path / "raw", split_csv=tmp_path / "split.csv", out_dir=tmp_path / "prep")


def test_rerun_writes_byte_identical_files(tmp_path):
    """The same inputs and params give the same bytes (so the same DVC hash) on every run: safetensors writes
    a metadata mapping of several keys in a random order per call, so the metadata goes in as one entry."""
    import json

    from safetensors import safe_open

    from siamdiff.data.preprocess import run
    from siamdiff.data.sources import ingest
    from siamdiff.utils import sha256_tree

    manifest = ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": 4, "frames_per_patient": 1,
                                    "datasets": ["synth-b"]}]}, raw_dir=tmp_path / "raw", plot_path=None)
    _split_csv(tmp_path / "split.csv", manifest)
    hashes = set()
    for i in range(6):  # 4 metadata keys: 24 orders, so 6 runs in one order by chance is ~1e-7
        run({"size": 16}, raw_dir=tmp_path / "raw", split_csv=tmp_path / "split.csv", out_dir=tmp_path / f"prep{i}")
        hashes.add(sha256_tree(tmp_path / f"prep{i}"))
    assert len(hashes) == 1
    with safe_open(str(tmp_path / "prep0" / "train.safetensors"), "np") as f:
        assert json.loads(f.metadata()["siamdiff"])["split"] == "train"
