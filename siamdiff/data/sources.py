"""Data sources (the ingest stage's adapters) and the ingest itself.

Every source yields `Item` records: `(dataset, patient, frame, image, mask)` where `image`/`mask` are
either decoded arrays (RGB uint8 [H,W,3] / uint8 [H,W] in {0,1}), encoded file bytes, or file paths.
`ingest()` turns them into `data/raw/{dataset}/img/{id}.png` + `.../mask/{id}_mask.png` and
`data/raw/manifest-v1.json` (docs/ARCHITECTURE.md), written atomically: on any error nothing is left behind.
Empty, all-foreground and mostly-foreground (> 90%) masks are kept, and counted per source (`sources[i].counts`),
per dataset and in total in the manifest, and in the log. A file in an image format that is not supported
(`.webp`, `.gif`, ...) is refused by name; reading and binarising files: siamdiff.data.images.

Source configs (`params.yaml: ingest.sources`, a list; several at once are fine):

- `{type: synthetic, seed, patients, frames_per_patient[, datasets, empty_fraction]}`: siamdiff.data.synthetic.
- `{type: kvasir-seg, path[, dataset, limit]}`: `path/images/*.jpg` + `path/masks/*.jpg` (same stem); Kvasir
  publishes no patient identity, so each image is its own patient (frame `0`).
- `{type: cvc-clinicdb, path[, dataset, limit]}`: `path/Original/N.tif` + `path/Ground Truth/N.tif`; patient
  = the video sequence of frame N from the dataset's README table (`seq01` ... `seq29`), frame = `N` (4 digits).
- `{type: folder, path, dataset[, patient_pattern, limit]}`: `path/img/` + `path/mask/` (mask = same stem or
  stem + `_mask`), or one flat folder where masks carry the `_mask` suffix. Each image is its own patient
  unless `patient_pattern` (a regex with a named group `patient` and optionally `frame`) is matched
  against the image's stem.
- `{type: s3, ...}`: `siamdiff.storage.ingest.s3_items(cfg)` (imported only when used), same `Item`s.

Paths are as given (relative to the project root, where DVC runs stages); the data is read in place and
never copied into the repository, only its ingested PNGs land in `data/raw` (a DVC output).
"""
from __future__ import annotations

import mimetypes
import re
import time
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from siamdiff.data import images as im
from siamdiff.data import manifest as mf
from siamdiff.data import synthetic
from siamdiff.data.item import Item
from siamdiff.utils import SiamdiffError, atomic_path, log, sha256_bytes

SOURCE_TYPES = ("synthetic", "kvasir-seg", "cvc-clinicdb", "folder", "s3")
DATASET_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")




def safe_name(s: str) -> str:
    """A patient/frame string as it may appear in a file name: [A-Za-z0-9_] (others become `_`)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(s)) or "_"


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _image_files(folder: Path) -> list[Path]:
    """The folder's image files; one in an image format that is not supported (e.g. .webp, .gif) is refused."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    for p in files:
        kind = mimetypes.guess_type(p.name)[0] or ""
        if kind.startswith("image/") and p.suffix.lower() not in im.IMAGE_SUFFIXES:
            raise SiamdiffError(f"{p}: unsupported image format '{p.suffix}'; convert it to one of "
                                f"{', '.join(sorted(im.IMAGE_SUFFIXES))} or move it out of {folder}")
    return sorted((p for p in files if p.suffix.lower() in im.IMAGE_SUFFIXES), key=_natural_key)


def _folder(cfg: dict, where: str, key: str = "path") -> Path:
    if not cfg.get(key):
        raise SiamdiffError(f"params.yaml: {where}.{key} is missing; set it to the dataset's folder")
    path = Path(str(cfg[key])).expanduser()
    if not path.is_dir():
        raise SiamdiffError(f"{path}: source folder not found ({where}.{key}); check the path in params.yaml")
    return path


def _limit(cfg: dict, where: str) -> int | None:
    n = cfg.get("limit")
    if n is None:
        return None
    if not isinstance(n, int) or n <= 0:
        raise SiamdiffError(f"params.yaml: {where}.limit must be a positive integer or null, got {n!r}")
    return n


def _pair(images: list[Path], masks: list[Path], img_dir: Path, mask_dir: Path, strip: str = "") -> list[tuple[Path, Path]]:
    """Pair images with masks by stem (a mask may carry the `strip` suffix, e.g. `_mask`); orphans are errors."""
    by_stem: dict[str, Path] = {}
    for m in masks:
        stem = m.stem[: -len(strip)] if strip and m.stem.endswith(strip) else m.stem
        if stem in by_stem:
            raise SiamdiffError(f"{m}: two masks for the same image stem '{stem}' (also {by_stem[stem]}); keep one")
        by_stem[stem] = m
    pairs, seen = [], set()
    for p in images:
        if p.stem in seen:
            raise SiamdiffError(f"{p}: two images with the same stem '{p.stem}' in {img_dir}; keep one")
        seen.add(p.stem)
        m = by_stem.get(p.stem) or (by_stem.get(p.stem + "_mask") if not strip else None)
        if m is None:
            raise SiamdiffError(f"{p}: image without a mask (looked for '{p.stem}.*' in {mask_dir}); add its mask or remove the image")
        pairs.append((p, m))
    used = {m for _, m in pairs}
    for m in masks:
        if m not in used:
            raise SiamdiffError(f"{m}: mask without an image (no '{m.stem}.*' in {img_dir}); add the image or remove the mask")
    return pairs


# ------------------------------------------------------------------ adapters
def synthetic_items(cfg: dict, where: str = "synthetic") -> Iterator[Item]:
    for ds, patient, frame, img, mask in synthetic.synthetic_frames(cfg, where):
        name = f"synthetic:{ds}/{patient}/{frame}"
        yield Item(ds, patient, frame, img, mask, name, name + "_mask")


def kvasir_items(cfg: dict, where: str = "kvasir-seg") -> Iterator[Item]:
    root = _folder(cfg, where)
    dataset = cfg.get("dataset", "kvasir-seg")
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise SiamdiffError(f"{d}: folder not found; a Kvasir-SEG folder holds images/ and masks/")
    imgs, masks = _image_files(img_dir), _image_files(mask_dir)
    if not imgs and not masks:
        raise SiamdiffError(f"{img_dir}: source folder is empty; check {where}.path")
    pairs = _pair(imgs, masks, img_dir, mask_dir)[: _limit(cfg, where)]
    for img, msk in pairs:
        yield Item(dataset, safe_name(img.stem), "0", img, msk, str(img), str(msk))


# The frame -> sequence table of CVC-ClinicDB's README (first frame, last frame, sequence).
CVC_SEQUENCES = [
    (1, 25, 1), (26, 50, 2), (51, 67, 3), (68, 78, 4), (79, 103, 5), (104, 126, 6), (127, 151, 7),
    (152, 177, 8), (178, 199, 9), (200, 205, 10), (206, 227, 11), (228, 252, 12), (253, 277, 13),
    (278, 297, 14), (298, 317, 15), (318, 342, 16), (343, 363, 17), (364, 383, 18), (384, 408, 19),
    (409, 428, 20), (429, 447, 21), (448, 466, 22), (467, 478, 23), (479, 503, 24), (504, 528, 25),
    (529, 546, 26), (547, 571, 27), (572, 591, 28), (592, 612, 29),
]


def parse_cvc_readme(text: str) -> list[tuple[int, int, int]]:
    """Rows `|  1 to  25  |  1  |` of CVC-ClinicDB's README.txt -> [(first, last, sequence)]."""
    return [(int(a), int(b), int(s)) for a, b, s in re.findall(r"(\d+)\s+to\s+(\d+)\s*\|\s*(\d+)", text)]


def cvc_sequence_table(root: Path | None = None) -> list[tuple[int, int, int]]:
    """The README's table when the README is there (checked against the embedded copy), else the copy."""
    readme = root / "README.txt" if root else None
    if readme is not None and readme.is_file():
        table = parse_cvc_readme(readme.read_text(errors="replace"))
        if table and table != CVC_SEQUENCES:
            raise SiamdiffError(f"{readme}: frame->sequence table differs from the published CVC-ClinicDB one; "
                                "is this another version of the dataset?")
        if table:
            return table
    return CVC_SEQUENCES


def cvc_sequence(frame: int, table=CVC_SEQUENCES) -> int | None:
    for a, b, s in table:
        if a <= frame <= b:
            return s
    return None


def cvc_items(cfg: dict, where: str = "cvc-clinicdb") -> Iterator[Item]:
    root = _folder(cfg, where)
    dataset = cfg.get("dataset", "cvc-clinicdb")
    img_dir, mask_dir = root / "Original", root / "Ground Truth"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise SiamdiffError(f"{d}: folder not found; a CVC-ClinicDB folder holds 'Original/' and 'Ground Truth/'")
    imgs, masks = _image_files(img_dir), _image_files(mask_dir)
    if not imgs and not masks:
        raise SiamdiffError(f"{img_dir}: source folder is empty; check {where}.path")
    table = cvc_sequence_table(root)
    pairs = _pair(imgs, masks, img_dir, mask_dir)
    out = []
    for img, msk in pairs:
        if not img.stem.isdigit():
            raise SiamdiffError(f"{img}: CVC-ClinicDB frames are named by their number (e.g. 12.tif); rename or remove it")
        n = int(img.stem)
        seq = cvc_sequence(n, table)
        if seq is None:
            raise SiamdiffError(f"{img}: frame {n} is not in the README's frame->sequence table; remove it")
        out.append(Item(dataset, f"seq{seq:02d}", f"{n:04d}", img, msk, str(img), str(msk)))
    yield from out[: _limit(cfg, where)]


def folder_items(cfg: dict, where: str = "folder") -> Iterator[Item]:
    root = _folder(cfg, where)
    dataset = cfg.get("dataset")
    if not dataset:
        raise SiamdiffError(f"params.yaml: {where}.dataset is missing; name the dataset (e.g. 'my-polyps')")
    if (root / "img").is_dir() or (root / "mask").is_dir():
        img_dir, mask_dir = root / "img", root / "mask"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise SiamdiffError(f"{d}: folder not found; a folder source holds img/ and mask/ (or one flat folder with *_mask files)")
        imgs, masks = _image_files(img_dir), _image_files(mask_dir)
        strip = "_mask" if masks and all(m.stem.endswith("_mask") for m in masks) else ""
    else:
        img_dir = mask_dir = root
        files = _image_files(root)
        masks = [p for p in files if p.stem.endswith("_mask")]
        imgs = [p for p in files if not p.stem.endswith("_mask")]
        strip = "_mask"
    if not imgs and not masks:
        raise SiamdiffError(f"{root}: source folder is empty (no PNG/JPEG/TIFF/BMP files); check {where}.path")
    pattern = cfg.get("patient_pattern")
    regex = None
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise SiamdiffError(f"params.yaml: {where}.patient_pattern is not a valid regex: {e}") from None
        if "patient" not in regex.groupindex:
            raise SiamdiffError(f"params.yaml: {where}.patient_pattern needs a named group (?P<patient>...)")
    for img, msk in _pair(imgs, masks, img_dir, mask_dir, strip)[: _limit(cfg, where)]:
        if regex is None:
            patient, frame = safe_name(img.stem), "0"
        else:
            m = regex.search(img.stem)
            if not m:
                raise SiamdiffError(f"{img}: name does not match {where}.patient_pattern {pattern!r}")
            patient = safe_name(m.group("patient"))
            frame = safe_name(m.group("frame")) if "frame" in regex.groupindex and m.group("frame") else safe_name(img.stem)
        yield Item(dataset, patient, frame, img, msk, str(img), str(msk))


def iter_source(cfg: dict, where: str) -> Iterator[Item]:
    """The adapter for one `ingest.sources[i]` config."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise SiamdiffError(f"params.yaml: {where} must be a mapping with a `type` ({' | '.join(SOURCE_TYPES)})")
    kind = cfg["type"]
    if kind == "synthetic":
        return synthetic_items(cfg, where)
    if kind == "kvasir-seg":
        return kvasir_items(cfg, where)
    if kind == "cvc-clinicdb":
        return cvc_items(cfg, where)
    if kind == "folder":
        return folder_items(cfg, where)
    if kind == "s3":
        from siamdiff.storage.ingest import s3_items  # written by the storage part; same Item records

        return s3_items(cfg, where=where)  # refuses credentials / unknown keys / URL user info at once
    raise SiamdiffError(f"params.yaml: {where}.type '{kind}' is unknown; use one of {', '.join(SOURCE_TYPES)}")


def describe(cfg: dict) -> str:
    kind = cfg.get("type")
    if kind == "synthetic":
        return (f"procedural endoscopy-like frames: {cfg.get('patients')} patients x "
                f"{cfg.get('frames_per_patient')} frames per sub-dataset, seed {cfg.get('seed')}")
    if kind in ("kvasir-seg", "cvc-clinicdb", "folder"):
        return f"{kind} files read in place from {cfg.get('path')}"
    return str(kind)


# ------------------------------------------------------------------ ingest
def _load(item: Item) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Decode an item's pair; also returns the conversions made, as (file name, note) pairs."""
    iname = item.image_name or (str(item.image) if isinstance(item.image, (str, Path)) else item.id)
    mname = item.mask_name or (str(item.mask) if isinstance(item.mask, (str, Path)) else item.id + "_mask")
    notes: list[str] = []
    mask_notes: list[str] = []
    if isinstance(item.image, np.ndarray):
        image = item.image
    else:
        data = item.image if isinstance(item.image, (bytes, bytearray)) else im.read_bytes(item.image)
        image, notes = im.decode_image(bytes(data), iname)
    if isinstance(item.mask, np.ndarray):
        mask = im.binarise_mask(item.mask, mname, notes=mask_notes)
    else:
        data = item.mask if isinstance(item.mask, (bytes, bytearray)) else im.read_bytes(item.mask)
        mask = im.decode_mask(bytes(data), mname, mask_notes)
    im.check_pair(image, mask, iname, mname)
    return image, mask, [(iname, n) for n in notes] + [(mname, f"mask: {n}") for n in mask_notes]


def _check_names(item: Item, where: str) -> None:
    if not DATASET_RE.match(str(item.dataset)):
        raise SiamdiffError(f"{where}: dataset name {item.dataset!r} must be lower-case letters, digits, '-' or '_'")
    for what, v in (("patient", item.patient), ("frame", item.frame)):
        if not NAME_RE.match(str(v)):
            raise SiamdiffError(f"{item.image_name or where}: {what} {v!r} may only hold letters, digits and '_'")


MOSTLY_FOREGROUND = 0.9  # masks with more foreground than this (but not all) are counted and logged
MASK_TALLIES = ("empty_masks", "full_masks", "mostly_foreground_masks")


def mask_tally(mask: np.ndarray) -> str | None:
    """The count an unusual mask goes to: no foreground, all foreground, > 90% foreground; None otherwise."""
    cover = float(mask.mean()) if mask.size else 0.0
    if cover == 0:
        return "empty_masks"
    if cover == 1:
        return "full_masks"
    return "mostly_foreground_masks" if cover > MOSTLY_FOREGROUND else None


def _tallies(c: dict) -> str:
    return (f"{c['empty_masks']} empty, {c['full_masks']} all foreground, "
            f"{c['mostly_foreground_masks']} mostly foreground (> {MOSTLY_FOREGROUND:.0%})")


def ingest(params: dict, raw_dir: str | Path = "data/raw", plot_path: str | Path | None = "plots/ingest/examples.png",
           stage: str = "ingest") -> dict:
    """Read every configured source, write data/raw (PNGs + manifest-v1.json) atomically; return the manifest."""
    sources = params.get("sources") if isinstance(params, dict) else None
    if not sources or not isinstance(sources, list):
        raise SiamdiffError("params.yaml: ingest.sources must be a non-empty list of sources (e.g. - type: synthetic)")
    raw_dir = Path(raw_dir)
    records: list[dict] = []
    seen: dict[str, str] = {}
    counts: dict[str, dict] = {}
    described: list[dict] = []
    tiles: dict[str, list] = {}
    t0 = time.time()
    with atomic_path(raw_dir) as tmp:
        for si, cfg in enumerate(sources):
            where = f"ingest.sources[{si}]"
            n_before = len(records)
            src = {"items": 0, **dict.fromkeys(MASK_TALLIES, 0)}
            for item in iter_source(cfg, where):
                _check_names(item, where)
                iid = item.id
                origin = item.image_name or iid
                if iid in seen:
                    raise SiamdiffError(f"{origin}: duplicate id '{iid}' (also from {seen[iid]}); "
                                        "ids {dataset}-{patient}-{frame} must be unique: rename one or give the source another dataset name")
                seen[iid] = origin
                image, mask, notes = _load(item)
                c = counts.setdefault(item.dataset, {"items": 0, **dict.fromkeys(MASK_TALLIES, 0), "patients": set(),
                                                     "converted": {}})
                c["items"] += 1
                src["items"] += 1
                c["patients"].add(item.patient)
                tally = mask_tally(mask)
                if tally:
                    c[tally] += 1
                    src[tally] += 1
                    if tally != "empty_masks" and c[tally] <= 5:
                        log(stage, f"{item.mask_name or iid}: mask is {mask.mean():.1%} foreground "
                                   f"(counted in {tally}); check it is not inverted")
                empty = tally == "empty_masks"
                for name, note in notes:
                    c["converted"][note] = c["converted"].get(note, 0) + 1
                    if c["converted"][note] <= 5:
                        log(stage, f"{name}: {note}")
                img_rel = f"{item.dataset}/img/{iid}.png"
                mask_rel = f"{item.dataset}/mask/{iid}_mask.png"
                img_bytes, mask_bytes = im.encode_png(image), im.encode_png(mask, rgb=False)
                for rel, data in ((img_rel, img_bytes), (mask_rel, mask_bytes)):
                    p = tmp / rel
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(data)
                records.append({
                    "id": iid, "dataset": item.dataset, "patient": item.patient, "frame": item.frame,
                    "image": img_rel, "mask": mask_rel,
                    "image_sha256": sha256_bytes(img_bytes), "mask_sha256": sha256_bytes(mask_bytes),
                    "width": int(image.shape[1]), "height": int(image.shape[0]), "empty_mask": bool(empty),
                })
                t = tiles.setdefault(item.dataset, [])
                if len(t) < 6 and item.patient not in {p for p, _ in t}:
                    t.append((item.patient, im.thumbnail(image, mask, label=iid[-26:])))
                n = len(records)
                if n % 100 == 0:
                    log(stage, f"{n} items ({n / max(time.time() - t0, 1e-9):.1f}/s)")
            if len(records) == n_before:
                raise SiamdiffError(f"params.yaml: {where} ({cfg.get('type')}) yielded no items; check its path/params")
            from siamdiff.storage.credentials import check_no_secrets

            check_no_secrets(cfg, where)  # defence in depth: no credential is ever written to the manifest
            described.append({"type": cfg.get("type"), "config": cfg, "items": len(records) - n_before,
                              "counts": src, "description": describe(cfg)})
            log(stage, f"{where} ({cfg.get('type')}): {src['items']} pairs; masks: {_tallies(src)}")
        for c in counts.values():
            c["patients"] = len(c["patients"])
        manifest = mf.build(described, records, counts)
        mf.write(tmp, manifest)
    for ds, c in sorted(counts.items()):
        conv = ", ".join(f"{k}: {v}" for k, v in c["converted"].items()) or "no conversions"
        log(stage, f"{ds}: {c['items']} pairs, {c['patients']} patients; masks: {_tallies(c)} (all kept); {conv}")
    log(stage, f"wrote {len(records)} pairs + {mf.MANIFEST_NAME} to {raw_dir} in {time.time() - t0:.1f}s")
    if plot_path is not None:
        write_examples(tiles, plot_path)
        log(stage, f"wrote {plot_path}")
    return manifest


def write_examples(tiles: dict[str, list], plot_path: str | Path) -> None:
    rows = [t for ds in sorted(tiles) for t in [[tile for _, tile in tiles[ds]]]]
    flat = []
    for r in rows:
        flat.extend(r + [np.zeros_like(r[0])] * (6 - len(r)))
    picture = im.grid(flat, columns=6)
    ok, buf = cv2.imencode(".png", picture[:, :, ::-1])
    plot_path = Path(plot_path)
    with atomic_path(plot_path) as tmp:
        tmp.write_bytes(buf.tobytes())


