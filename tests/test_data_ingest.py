"""Ingest: the folder/kvasir/cvc adapters, every bad input's error, and nothing half-written."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from siamdiff.data import images as im
from siamdiff.data import manifest as mf
from siamdiff.data.sources import CVC_SEQUENCES, cvc_items, ingest, iter_source, kvasir_items, parse_cvc_readme
from siamdiff.utils import SiamdiffError


def _pair(rng, h=48, w=64, cover=True):
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if cover:
        cv2.circle(mask, (w // 2, h // 2), min(h, w) // 4, 255, -1)
    return img, mask


def make_folder(root: Path, n=3, layout="split", img_ext=".png", mask_ext=".png", seed=0):
    """A `folder` source with n pairs: root/img + root/mask (layout 'split') or root/*_mask (layout 'flat')."""
    rng = np.random.default_rng(seed)
    img_dir = root / "img" if layout == "split" else root
    mask_dir = root / "mask" if layout == "split" else root
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, mask = _pair(rng)
        cv2.imwrite(str(img_dir / f"case{i}{img_ext}"), img)
        cv2.imwrite(str(mask_dir / f"case{i}{'_mask' if layout == 'flat' else ''}{mask_ext}"), mask)
    return img_dir, mask_dir


def run(tmp_path, sources):
    return ingest({"sources": sources}, raw_dir=tmp_path / "raw", plot_path=tmp_path / "plots" / "examples.png")


def expect_error(tmp_path, sources, match, file_part=None):
    raw = tmp_path / "raw"
    before = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) if raw.exists() else None
    with pytest.raises(SiamdiffError, match=match) as e:
        run(tmp_path, sources)
    if file_part:
        assert file_part in str(e.value)
    after = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) if raw.exists() else None
    assert after == before, "ingest left a half-written data/raw behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")], "temporary folder left behind"
    return str(e.value)


def test_folder_source_layouts_and_manifest(tmp_path):
    make_folder(tmp_path / "a", n=3, layout="split")
    make_folder(tmp_path / "b", n=2, layout="flat", img_ext=".jpg", mask_ext=".jpg")
    m = run(tmp_path, [{"type": "folder", "path": str(tmp_path / "a"), "dataset": "set-a"},
                       {"type": "folder", "path": str(tmp_path / "b"), "dataset": "set-b"}])
    assert m["counts"]["items"] == 5
    assert m["counts"]["datasets"]["set-a"]["items"] == 3
    ids = [r["id"] for r in m["items"]]
    assert "set-a-case0-0" in ids and "set-b-case1-0" in ids
    r = m["items"][0]
    raw = tmp_path / "raw"
    assert (raw / r["image"]).is_file() and r["image"] == "set-a/img/set-a-case0-0.png"
    assert r["mask"] == "set-a/mask/set-a-case0-0_mask.png"
    mask = cv2.imread(str(raw / r["mask"]), cv2.IMREAD_UNCHANGED)
    assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
    on_disk = json.loads((raw / mf.MANIFEST_NAME).read_text())
    assert on_disk == m and m["manifest_version"].startswith("1.")
    assert (tmp_path / "plots" / "examples.png").is_file()
    mf.verify(raw)


def test_patient_pattern(tmp_path):
    root = tmp_path / "seq"
    make_folder(root, n=3)
    for i, p in enumerate(sorted((root / "img").iterdir())):
        p.rename(p.with_name(f"pat{i // 2}_f{i}.png"))
    for i, p in enumerate(sorted((root / "mask").iterdir())):
        p.rename(p.with_name(f"pat{i // 2}_f{i}.png"))
    items = list(iter_source({"type": "folder", "path": str(root), "dataset": "x",
                              "patient_pattern": r"(?P<patient>pat\d+)_f(?P<frame>\d+)"}, "s"))
    assert [(it.patient, it.frame) for it in items] == [("pat0", "0"), ("pat0", "1"), ("pat1", "2")]


def test_grayscale_and_rgba_converted_and_counted(tmp_path):
    root = tmp_path / "a"
    make_folder(root, n=3)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(root / "img" / "case0.png"), rng.integers(0, 256, (48, 64), dtype=np.uint8))
    rgba = np.dstack([rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), np.full((48, 64), 255, np.uint8)])
    cv2.imwrite(str(root / "img" / "case1.png"), rgba)
    m = run(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}])
    conv = m["counts"]["datasets"]["a"]["converted"]
    assert conv == {"grayscale converted to RGB": 1, "RGBA converted to RGB (opaque alpha dropped)": 1}
    img = cv2.imread(str(tmp_path / "raw" / "a/img/a-case0-0.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 64, 3) and (img[..., 0] == img[..., 1]).all()


def test_empty_masks_kept_and_counted(tmp_path):
    root = tmp_path / "a"
    make_folder(root, n=3)
    cv2.imwrite(str(root / "mask" / "case2.png"), np.zeros((48, 64), np.uint8))
    m = run(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}])
    assert m["counts"]["empty_masks"] == 1 and m["counts"]["datasets"]["a"]["empty_masks"] == 1
    assert [r["empty_mask"] for r in m["items"]] == [False, False, True]


def test_masks_binarised_at_half_range():
    row = np.array([[0, 127, 128, 255] + [0] * 98 + [255] * 98], np.uint8)  # 1% ambiguous: tolerated
    assert im.binarise_mask(row, "m", lossy=True)[0, :4].tolist() == [0, 0, 1, 1]
    assert im.binarise_mask(np.array([[0, 1, 1, 0]], np.uint8), "m").tolist() == [[0, 1, 1, 0]]  # 0/1 mask
    assert im.binarise_mask(np.array([[0, 65535, 0, 65535]], np.uint16), "m").tolist() == [[0, 1, 0, 1]]
    # JPEG compression noise around the edges of a real mask is fine
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (32, 32), 15, 255, -1)
    ok, buf = cv2.imencode(".jpg", mask, [cv2.IMWRITE_JPEG_QUALITY, 75])
    out = im.decode_mask(buf.tobytes(), "m.jpg")
    assert abs(int(out.sum()) - int((mask > 0).sum())) < 40


@pytest.mark.parametrize("case", ["truncated_jpeg", "truncated_png", "truncated_tiff", "garbage", "zero_bytes"])
def test_unreadable_or_truncated_image(tmp_path, case):
    root = tmp_path / "a"
    ext = {"truncated_jpeg": ".jpg", "truncated_tiff": ".tif"}.get(case, ".png")
    make_folder(root, n=3, img_ext=ext)
    bad = root / "img" / f"case1{ext}"
    data = bad.read_bytes()
    bad.write_bytes(b"not an image at all" * 10 if case == "garbage" else b"" if case == "zero_bytes"
                    else data[: len(data) // 2])
    msg = expect_error(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}],
                       "truncated|unreadable|empty file", file_part=str(bad))
    assert "case1" in msg


def test_errors_leave_previous_raw_untouched(tmp_path):
    root = tmp_path / "a"
    make_folder(root, n=2)
    run(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}])
    (root / "mask" / "case1.png").unlink()
    expect_error(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}], "image without a mask")
    mf.verify(tmp_path / "raw")


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = tmp_path / "a"
    make_folder(root, n=3)
    (root / "mask" / "case1.png").unlink()
    expect_error(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}], "image without a mask",
                 file_part="case1.png")
    make_folder(root, n=3)
    (root / "img" / "case2.png").unlink()
    expect_error(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}], "mask without an image",
                 file_part="case2.png")


def test_size_mismatch(tmp_path):
    root = tmp_path / "a"
    make_folder(root, n=2)
    cv2.imwrite(str(root / "mask" / "case0.png"), np.zeros((40, 64), np.uint8))
    expect_error(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}], "same size",
                 file_part="case0.png")


@pytest.mark.parametrize("values", [[0, 1, 2], "gradient"])
def test_non_binary_mask(tmp_path, values):
    root = tmp_path / "a"
    make_folder(root, n=2)
    if values == "gradient":
        mask = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    else:
        mask = np.repeat(np.array(values, np.uint8), 16 * 64).reshape(48, 64)
    cv2.imwrite(str(root / "mask" / "case1.png"), mask)
    expect_error(tmp_path, [{"type": "folder", "path": str(root), "dataset": "a"}], "non-binary mask",
                 file_part="case1.png")


def test_duplicate_ids(tmp_path):
    make_folder(tmp_path / "a", n=2)
    make_folder(tmp_path / "b", n=2, seed=1)
    msg = expect_error(tmp_path, [{"type": "folder", "path": str(tmp_path / "a"), "dataset": "same"},
                                  {"type": "folder", "path": str(tmp_path / "b"), "dataset": "same"}],
                       "duplicate id 'same-case0-0'")
    assert str(tmp_path / "a") in msg and str(tmp_path / "b") in msg


def test_unknown_missing_or_empty_source(tmp_path):
    expect_error(tmp_path, [{"type": "nosuch"}], "unknown")
    expect_error(tmp_path, [{"type": "folder", "path": str(tmp_path / "missing"), "dataset": "a"}],
                 "source folder not found", file_part="missing")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path, [{"type": "folder", "path": str(tmp_path / "empty"), "dataset": "a"}], "empty")
    expect_error(tmp_path, [], "non-empty list")
    expect_error(tmp_path, [{"type": "kvasir-seg", "path": str(tmp_path / "empty")}], "folder not found")


def test_cvc_readme_table_matches_embedded_copy(polyps_dir):
    text = (polyps_dir / "CVC-ClinicDB" / "README.txt").read_text(errors="replace")
    assert parse_cvc_readme(text) == CVC_SEQUENCES


def test_real_counts_per_dataset(polyps_dir):
    kv = list(kvasir_items({"path": str(polyps_dir / "Kvasir-SEG")}))
    cvc = list(cvc_items({"path": str(polyps_dir / "CVC-ClinicDB")}))
    assert len(kv) == 900 and len(cvc) == 550
    assert len({it.patient for it in kv}) == 900  # each Kvasir image its own patient
    seqs = {it.patient for it in cvc}
    assert seqs <= {f"seq{s:02d}" for s in range(1, 30)} and len(seqs) >= 25
    assert cvc[0].id == "cvc-clinicdb-seq01-0001"


def test_real_files_decode(polyps_dir):
    """A sample of the real JPEG/TIFF pairs: RGB images, masks binarised, sizes match."""
    kv = list(kvasir_items({"path": str(polyps_dir / "Kvasir-SEG")}))[::90]
    cvc = list(cvc_items({"path": str(polyps_dir / "CVC-ClinicDB")}))[::55]
    for it in kv + cvc:
        img, _ = im.decode_image(im.read_bytes(it.image), it.image_name)
        mask = im.decode_mask(im.read_bytes(it.mask), it.mask_name)
        im.check_pair(img, mask, it.image_name, it.mask_name)
        assert 0 < mask.mean() < 0.9
