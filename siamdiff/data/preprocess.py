"""Square crops that keep the lesion (or whole frames), resized; per-split safetensors, index, colour stats.

For each ingested pair (docs/ARCHITECTURE.md, "Data"):
1. Lesion centre = the point farthest inside the lesion (maximum of the mask's Euclidean distance
   transform; the image border counts as outside, so a lesion cut by the frame still gets an interior
   point). Empty mask: the image centre.
2. Square: `fit: crop` (default) takes the largest square inside the image (side = the short side) placed
   as close as possible to centred on the lesion centre and clamped to the image, so the lesion centre is
   always inside it; `fit: pad` pads the short side with black (the scope's surround) to a square, keeping
   the whole frame; `fit: resize` (the released code's geometry) takes the whole frame as it is.
3. Resize to `size` x `size`: for crop/pad, area interpolation for the image and exact nearest for the mask;
   for `resize`, anisotropic bilinear for both (the released code's cv2.resize default), the mask resized
   (as float 0/1) with the very same mapping. Then the mask is re-binarised to {0,1} (at half its range).
Colour statistics (a*, b* mean/std) come from the train split only; the working colour space itself is
applied later (`siamdiff.data.color.to_working`): the stored arrays stay RGB uint8.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import cv2
import numpy as np

from siamdiff.data import color, images, manifest as mf
from siamdiff.data.split import SPLITS, read_split
from siamdiff.utils import SiamdiffError, atomic_path, log, require, safetensors_metadata, write_json

INDEX_COLUMNS = ("id", "split", "dataset", "patient", "frame", "row", "coverage", "image_sha256")
FITS = ("crop", "pad", "resize")
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


def check_params(params: dict) -> tuple[int, str, str]:
    size = params.get("size")
    require(isinstance(size, int) and not isinstance(size, bool) and size >= 8, "preprocess.size",
            f"must be an integer >= 8 (pixels), got {size!r}")
    space = params.get("color_space", "rgb")
    require(space in color.SPACES, "preprocess.color_space", f"must be one of {color.SPACES}, got {space!r}")
    fit = params.get("fit", "crop")
    require(fit in FITS, "preprocess.fit", f"must be one of {FITS}, got {fit!r}")
    return size, space, fit


def lesion_center(mask: np.ndarray) -> tuple[int, int]:
    """(row, col) of the point farthest inside the lesion; the image centre for an empty mask."""
    h, w = mask.shape
    if not mask.any():
        return h // 2, w // 2
    padded = np.pad((mask > 0).astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_5)[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)


def square_window(h: int, w: int, center: tuple[int, int], fit: str = "crop") -> tuple[int, int, int]:
    """(top, left, side) of the square window in image coordinates (may extend outside the image for `pad`)."""
    cy, cx = center
    if fit == "pad":
        side = max(h, w)
        return (h - side) // 2, (w - side) // 2, side
    side = min(h, w)
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    return top, left, side


def to_square(image: np.ndarray, mask: np.ndarray, fit: str = "crop"):
    """-> (square image, square mask, lesion centre in the square's coordinates). Not for `resize`, which
    has no square window (see `resize_whole`)."""
    if fit not in ("crop", "pad"):
        raise ValueError(f"to_square: fit must be crop or pad, got {fit!r}")
    h, w = mask.shape
    cy, cx = lesion_center(mask)
    top, left, side = square_window(h, w, (cy, cx), fit)
    if fit == "pad":
        img = np.zeros((side, side, 3), image.dtype)
        msk = np.zeros((side, side), mask.dtype)
        img[-top:-top + h, -left:-left + w] = image
        msk[-top:-top + h, -left:-left + w] = mask
    else:
        img = image[top:top + side, left:left + side]
        msk = mask[top:top + side, left:left + side]
    return img, msk, (cy - top, cx - left)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    img = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    msk = cv2.resize(np.ascontiguousarray(mask, dtype=np.uint8), (size, size), interpolation=_NEAREST)
    return img, (msk > 0).astype(np.uint8)


def resize_whole(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`fit: resize`, the released code's geometry: the whole frame resized anisotropically to size x size,
    bilinear (cv2.INTER_LINEAR, cv2.resize's default). The mask goes through the same bilinear mapping (in
    float, as 0/1) and is re-binarised at half its range, so image and mask stay aligned pixel for pixel."""
    img = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_LINEAR)
    m = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.float32)
    msk = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
    return img, (msk >= 0.5).astype(np.uint8)


def preprocess_pair(image: np.ndarray, mask: np.ndarray, size: int, fit: str = "crop") -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H,W,3] + mask {0,1} [H,W] -> RGB uint8 [S,S,3] + mask {0,1} [S,S]."""
    if fit == "resize":
        return resize_whole(image, mask, size)
    img, msk, _ = to_square(image, mask, fit)
    return resize_pair(img, msk, size)


def _index_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(INDEX_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "coverage": f"{r['coverage']:.6f}"})
    return buf.getvalue()


def run(params: dict, raw_dir: str | Path = "data/raw", split_csv: str | Path = "data/split.csv",
        out_dir: str | Path = "data/prep", stage: str = "preprocess") -> dict:
    """The preprocess stage: verify inputs, then write `out_dir` atomically. Returns the colour stats."""
    from safetensors.numpy import save_file

    size, space, fit = check_params(params)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = mf.verify(raw_dir)
    split_rows = read_split(split_csv)
    by_id = {r["id"]: r for r in manifest["items"]}
    split_ids = [r["id"] for r in split_rows]
    if set(split_ids) != set(by_id) or len(split_ids) != len(by_id):
        extra = sorted(set(split_ids) - set(by_id))[:3]
        missing = sorted(set(by_id) - set(split_ids))[:3]
        raise SiamdiffError(f"{split_csv}: does not match {raw_dir}/{mf.MANIFEST_NAME} (unknown ids {extra}, "
                            f"missing ids {missing}); run `dvc repro split`")
    log(stage, f"read {len(split_rows)} pairs from {raw_dir} (manifest verified) and {split_csv}")
    t0 = time.time()
    index: list[dict] = []
    arrays: dict[str, dict[str, np.ndarray]] = {}
    done = 0
    for split in SPLITS:
        rows = sorted((r for r in split_rows if r["split"] == split), key=lambda r: r["id"])
        rgb = np.zeros((len(rows), size, size, 3), np.uint8)
        msk = np.zeros((len(rows), size, size), np.uint8)
        for i, r in enumerate(rows):
            item = by_id[r["id"]]
            image = images.read_rgb_png(raw_dir / item["image"])
            mask = images.read_mask_png(raw_dir / item["mask"])
            images.check_pair(image, mask, str(raw_dir / item["image"]), str(raw_dir / item["mask"]))
            rgb[i], msk[i] = preprocess_pair(image, mask, size, fit)
            index.append({"id": r["id"], "split": split, "dataset": r["dataset"], "patient": r["patient"],
                          "frame": r["frame"], "row": i, "coverage": float(msk[i].mean()),
                          "image_sha256": item["image_sha256"]})
            done += 1
            if done % 200 == 0:
                log(stage, f"{done}/{len(split_rows)} pairs ({done / max(time.time() - t0, 1e-9):.0f}/s)")
        arrays[split] = {"rgb": rgb, "mask": msk}
    stats = color.compute_stats(arrays["train"]["rgb"], space)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        meta = {"size": str(size), "fit": fit, "color_space": space}
        for split, arr in arrays.items():
            save_file(arr, str(tmp / f"{split}.safetensors"), metadata=safetensors_metadata({**meta, "split": split}))
        (tmp / "index.csv").write_text(_index_csv(index))
        write_json(tmp / "color_stats.json", stats)
    for split in SPLITS:
        sel = [r for r in index if r["split"] == split]
        cov = np.array([r["coverage"] for r in sel]) if sel else np.zeros(1)
        log(stage, f"{split}: {len(sel)} pairs, mean coverage {cov.mean():.3f}, {int((cov == 0).sum())} empty masks")
    log(stage, f"wrote {out_dir}/{{train,val,test}}.safetensors, index.csv, color_stats.json "
               f"({size}x{size}, fit {fit}, colour space {space}) in {time.time() - t0:.1f}s")
    return stats
