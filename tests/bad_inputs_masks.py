"""Bad-input cases of issue 14 item 3, "Masks are read as their authors meant": what is ambiguous is refused.

Masks whose foreground level cannot be told from their values, unsupported image formats, and a source with
no image files left after filtering each give one line naming the file (or the source) and what to do.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from bad_input_registry import case
from test_data_ingest import make_folder


def _folder(tmp, n=3):
    from siamdiff.data.sources import ingest

    root = tmp / "src"
    make_folder(root, n=n)
    call = lambda: ingest({"sources": [{"type": "folder", "path": str(root), "dataset": "a"}]},  # noqa: E731
                          raw_dir=tmp / "data/raw", plot_path=None)
    return root, call


def _disc(value, dtype=np.uint8):
    mask = np.zeros((48, 64), dtype)
    cv2.circle(mask, (32, 24), 14, int(value), -1)
    return mask


def _replace_mask(root, mask, ext, stem="case1"):
    (root / "mask" / f"{stem}.png").unlink()
    path = root / "mask" / f"{stem}{ext}"
    assert cv2.imwrite(str(path), mask)
    return str(path)


@case("ingest: {0,1} TIFF mask with stray 255 pixels (two foreground levels)")
def _(tmp, mp):
    root, call = _folder(tmp)
    mask = _disc(1)
    mask[:2, :2] = 255
    return call, _replace_mask(root, mask, ".tif")


@case("ingest: 16-bit mask 0/4095 (foreground far below the type's range)")
def _(tmp, mp):
    root, call = _folder(tmp)
    return call, _replace_mask(root, _disc(4095, np.uint16), ".tif")


@case("ingest: 8-bit TIFF label map {0, 1, 2}")
def _(tmp, mp):
    root, call = _folder(tmp)
    mask = _disc(1)
    mask[:, 40:] = 2
    return call, _replace_mask(root, mask, ".tif")


@case("ingest: JPEG mask with a weak foreground level {0, 50}")
def _(tmp, mp):
    root, call = _folder(tmp)
    return call, _replace_mask(root, _disc(50), ".jpg")


@case("ingest: JPEG soft probability map")
def _(tmp, mp):
    root, call = _folder(tmp)
    return call, _replace_mask(root, np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1)), ".jpg")


@case("ingest: unsupported image format (.webp pair)")
def _(tmp, mp):
    root, call = _folder(tmp)
    for sub in ("img", "mask"):
        (root / sub / "case1.png").unlink()
        Image.new("RGB", (64, 48)).save(root / sub / "case1.webp")
    return call, str(root / "img" / "case1.webp")


@case("ingest: unsupported mask format (.gif beside a .png image)")
def _(tmp, mp):
    root, call = _folder(tmp)
    (root / "mask" / "case2.png").unlink()
    Image.fromarray(_disc(255)).save(root / "mask" / "case2.gif")
    return call, str(root / "mask" / "case2.gif")


@case("ingest: folder source with no image file left after filtering")
def _(tmp, mp):
    from siamdiff.data.sources import ingest

    root = tmp / "src"
    root.mkdir()
    (root / "notes.txt").write_text("scans to come\n")
    (root / "case0.tga").write_bytes(b"\0" * 64)
    return (lambda: ingest({"sources": [{"type": "folder", "path": str(root), "dataset": "a"}]},
                           raw_dir=tmp / "data/raw", plot_path=None)), "ingest.sources[0]"
