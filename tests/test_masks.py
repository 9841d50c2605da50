"""Masks are read as their authors meant (issue 14 item 3): {0,1} masks, alpha-only masks, EXIF orientation,
and the counts of empty / all-foreground / mostly-foreground masks in the manifest and the log."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from siamdiff.data import images as im
from siamdiff.data.sources import ingest
from test_data_ingest import make_folder


def _disc(value=1, dtype=np.uint8, h=48, w=64):
    mask = np.zeros((h, w), dtype)
    cv2.circle(mask, (w // 2, h // 2), 14, int(value), -1)
    return mask


def _encode(arr, ext, **kw):
    ok, buf = cv2.imencode(ext, arr, [cv2.IMWRITE_JPEG_QUALITY, kw["quality"]] if "quality" in kw else [])
    assert ok
    return buf.tobytes()


def _pil(arr, fmt, **kw):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt, **kw)
    return b.getvalue()


def _ingest(tmp_path, root):
    return ingest({"sources": [{"type": "folder", "path": str(root), "dataset": "a"}]},
                  raw_dir=tmp_path / "raw", plot_path=None)


def _raw_mask(tmp_path, stem):
    return cv2.imread(str(tmp_path / "raw" / f"a/mask/a-{stem}-0_mask.png"), cv2.IMREAD_GRAYSCALE) > 0


@pytest.mark.parametrize("kind", ["png8", "png16", "tif8", "tif16", "bmp"])
def test_lossless_01_masks_keep_their_foreground(kind):
    fmt, bits = kind[:3], kind[3:]
    mask = _disc(1, np.uint16 if bits == "16" else np.uint8)
    out = im.decode_mask(_encode(mask, "." + fmt), f"m.{fmt}")
    assert (out == mask).all()


@pytest.mark.parametrize("writer", ["cv2-q95", "cv2-q75", "pil-q75"])
def test_jpeg_01_masks_keep_their_foreground(writer):
    mask = _disc(1)
    data = _pil(mask, "JPEG", quality=75) if writer == "pil-q75" else _encode(mask, ".jpg", quality=int(writer[-2:]))
    out = im.decode_mask(data, "m.jpg")
    iou = (out & mask).sum() / (out | mask).sum()   # JPEG ringing moves the edge by a pixel or two
    assert iou > 0.8 and out[mask == 1].mean() > 0.95, iou   # was 0: an empty mask


@pytest.mark.parametrize("values,dtype", [((0, 255), np.uint8), ((0, 65535), np.uint16), ((0, 255), np.uint16)])
def test_full_range_masks_unchanged(values, dtype):
    mask = _disc(values[1], dtype)
    for ext in (".png", ".tif"):
        assert (im.decode_mask(_encode(mask, ext), "m" + ext) == (mask > 0)).all()


def test_real_masks_coverage_unchanged(polyps_dir):
    """Kvasir-SEG JPEG (0/255 + noise) and CVC-ClinicDB TIFF (0/255 + noise 8-14): the old rule, 128."""
    files = sorted((polyps_dir / "Kvasir-SEG" / "masks").glob("*.jpg"))[::150]
    files += sorted((polyps_dir / "CVC-ClinicDB" / "Ground Truth").glob("*.tif"))[::110]
    for p in files:
        raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        raw = raw.max(axis=2) if raw.ndim == 3 else raw
        assert (im.decode_mask(p.read_bytes(), str(p)) == (raw >= 128)).all(), p


def test_01_tiff_set_ingests_with_its_foreground(tmp_path):
    """The reported case: a CVC-style set of {0,1} TIFF masks used to ingest as empty masks."""
    root = tmp_path / "src"
    make_folder(root, n=3, img_ext=".tif", mask_ext=".tif")
    for i in range(3):
        cv2.imwrite(str(root / "mask" / f"case{i}.tif"), _disc(1))
    m = _ingest(tmp_path, root)
    assert m["counts"]["empty_masks"] == 0
    for i in range(3):
        assert (_raw_mask(tmp_path, f"case{i}") == (_disc(1) > 0)).all()


@pytest.mark.parametrize("colour", [0, 255])
def test_alpha_only_mask_is_used_and_logged(tmp_path, capfd, colour):
    root = tmp_path / "src"
    make_folder(root, n=2)
    rgba = np.dstack([np.full((48, 64, 3), colour, np.uint8), _disc(255)])
    path = root / "mask" / "case1.png"
    cv2.imwrite(str(path), rgba)
    m = _ingest(tmp_path, root)
    assert (_raw_mask(tmp_path, "case1") == (_disc(1) > 0)).all()
    note = "mask: foreground taken from the alpha channel (colour channels blank)"
    assert m["counts"]["datasets"]["a"]["converted"] == {note: 1}
    assert f"{path}: {note}" in capfd.readouterr().err


def test_opaque_alpha_still_uses_the_colour():
    rgba = np.dstack([np.dstack([_disc(255)] * 3), np.full((48, 64), 255, np.uint8)])
    notes = []
    assert (im.decode_mask(_encode(rgba, ".png"), "m.png", notes) == (_disc(1) > 0)).all() and notes == []


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_turns_match_pil(orientation):
    a = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _pil(a, "PNG", exif=exif)
    assert im.exif_orientation(data) == orientation
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    out, _ = im.decode_image(data, "a.png")
    assert out.shape == ref.shape and (out == ref).all()


@pytest.mark.parametrize("fmt,mask_too", [("JPEG", False), ("JPEG", True), ("TIFF", False)])
def test_exif_rotated_pair_stays_aligned(tmp_path, fmt, mask_too):
    """A square image stored sideways with EXIF orientation 6 and its mask drawn on the upright picture."""
    upright = np.full((64, 64, 3), 40, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    cv2.rectangle(mask, (4, 6), (30, 20), 255, -1)   # an off-centre lesion, so that any turn misplaces it
    upright[mask > 0] = 220
    exif = Image.Exif()
    exif[0x0112] = 6                                # display = stored turned 90 degrees clockwise
    root = tmp_path / "src"
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    ext = ".jpg" if fmt == "JPEG" else ".tif"
    kw = {"quality": 95} if fmt == "JPEG" else {}
    (root / "img" / f"case0{ext}").write_bytes(_pil(np.rot90(upright), fmt, exif=exif, **kw))
    if mask_too:
        (root / "mask" / "case0.jpg").write_bytes(_pil(np.rot90(mask), "JPEG", exif=exif, quality=95))
    else:
        cv2.imwrite(str(root / "mask" / "case0.png"), mask)
    m = _ingest(tmp_path, root)
    image = cv2.imread(str(tmp_path / "raw" / "a/img/a-case0-0.png"))
    got = _raw_mask(tmp_path, "case0")
    assert abs(int(got.sum()) - int((mask > 0).sum())) <= 30
    assert image[got].mean() > 200 and image[~got].mean() < 60     # the lesion lies under its mask
    conv = m["counts"]["datasets"]["a"]["converted"]
    assert conv.get("EXIF orientation 6 applied", 0) == (fmt == "JPEG")
    assert conv.get("mask: EXIF orientation 6 applied", 0) == mask_too


def test_unusual_masks_counted_in_manifest_and_log(tmp_path, capfd):
    root = tmp_path / "src"
    make_folder(root, n=5)
    mostly = np.full((48, 64), 255, np.uint8)
    mostly[:4, :16] = 0                                  # 97.9% foreground
    for i, mask in ((1, np.zeros((48, 64), np.uint8)), (2, np.full((48, 64), 255, np.uint8)), (3, mostly)):
        cv2.imwrite(str(root / "mask" / f"case{i}.png"), mask)
    m = _ingest(tmp_path, root)
    tallies = {"empty_masks": 1, "full_masks": 1, "mostly_foreground_masks": 1}
    assert {k: m["counts"][k] for k in tallies} == tallies
    assert {k: m["counts"]["datasets"]["a"][k] for k in tallies} == tallies
    assert m["sources"][0]["counts"] == {"items": 5, **tallies}
    err = capfd.readouterr().err
    assert "ingest.sources[0] (folder): 5 pairs; masks: 1 empty, 1 all foreground, 1 mostly foreground (> 90%)" in err
    assert f"{root / 'mask' / 'case2.png'}: mask is 100.0% foreground (counted in full_masks)" in err
    assert f"{root / 'mask' / 'case3.png'}: mask is 97.9% foreground (counted in mostly_foreground_masks)" in err
