"""Generating image/mask pairs from masks: the `sample` stage's writer and `siamdiff generate`.

Output folder layout (docs/ARCHITECTURE.md, `data/samples/*`):
    img/{name}.png          RGB, lossless PNG
    mask/{name}_mask.png    the conditioning mask, {0, 255}
    index.csv               file,mask_id,seed,sample,prompt,model_hash

`file` is the image path relative to the folder; `seed` is the run seed (protocol A: the sampling seed of
sample j); the image's initial noise comes from `noise_seed(seed, mask_id)`, so any single image can be
regenerated alone (see `siamdiff.sample.ddim`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from siamdiff.utils import SiamdiffError, atomic_path, log

INDEX_COLUMNS = ("file", "mask_id", "seed", "sample", "prompt", "model_hash")


def noise_seed(seed: int, mask_id: str) -> int:
    """The per-image noise seed: a hash of (run seed, mask id), so images don't depend on batching."""
    digest = hashlib.sha256(f"{int(seed)}:{mask_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def sample_name(mask_id: str, sample: int) -> str:
    return f"{mask_id}_s{int(sample)}"


def generate_pairs(gen, masks: torch.Tensor, mask_ids: Sequence[str], seeds: Sequence[int], prompt: str,
                   steps: int, guidance: float, batch_size: int, progress: str | None = None) -> torch.Tensor:
    """One image per (mask, run seed): masks uint8/float `[N,S,S]` in {0,1} -> rgb uint8 `[N,S,S,3]`.

    `gen`: a `SiameseDiffusionPipeline` (`siamdiff.sample.pipeline.load_pipeline`) or loaded generator parts.
    `progress`: the label of a progress bar over the images (None: no bar).
    """
    from siamdiff.sample.ddim import sample_from_masks

    bar = None
    if progress is not None:
        from siamdiff.utils import progress as progress_bar

        bar = progress_bar(total=len(masks), desc=progress, unit="img")
    out = []
    try:
        for i in range(0, len(masks), int(batch_size)):
            m = masks[i:i + batch_size].float().unsqueeze(1)
            ns = [noise_seed(s, mid) for s, mid in zip(seeds[i:i + batch_size], mask_ids[i:i + batch_size])]
            out.append(sample_from_masks(gen, m, ns, prompt, steps=steps, guidance=guidance, progress=False))
            if bar is not None:
                bar.update(len(m))
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out) if out else torch.zeros(0, masks.shape[-1], masks.shape[-1], 3, dtype=torch.uint8)


def write_pairs(folder: str | os.PathLike, rgb, masks, mask_ids: Sequence[str], seeds: Sequence[int],
                samples: Sequence[int], prompt: str, model_hash: str) -> list[dict]:
    """Write `img/`, `mask/` and `index.csv` into `folder` (created). Returns the index rows."""
    from siamdiff.data.images import encode_png

    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "mask").mkdir(parents=True, exist_ok=True)
    rgb = rgb.numpy() if torch.is_tensor(rgb) else np.asarray(rgb)
    masks = masks.numpy() if torch.is_tensor(masks) else np.asarray(masks)
    rows = []
    for im, m, mid, s, j in zip(rgb, masks, mask_ids, seeds, samples):
        name = sample_name(mid, j)
        (folder / "img" / f"{name}.png").write_bytes(encode_png(im))
        (folder / "mask" / f"{name}_mask.png").write_bytes(encode_png(m, rgb=False))
        rows.append({"file": f"img/{name}.png", "mask_id": mid, "seed": int(s), "sample": int(j),
                     "prompt": prompt, "model_hash": model_hash})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(INDEX_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (folder / "index.csv").write_text(buf.getvalue())
    return rows


def read_pairs(folder: str | os.PathLike) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """A samples folder -> (index rows, rgb uint8 `[N,S,S,3]`, mask uint8 `[N,S,S]` in {0,1})."""
    from siamdiff.data.images import read_mask_png, read_rgb_png

    folder = Path(folder)
    path = folder / "index.csv"
    if not path.is_file():
        raise SiamdiffError(f"{path}: not found; run `dvc repro sample`")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seed"], r["sample"] = int(r["seed"]), int(r["sample"])
    if not rows:
        return rows, torch.zeros(0, 1, 1, 3, dtype=torch.uint8), torch.zeros(0, 1, 1, dtype=torch.uint8)
    rgb = np.stack([read_rgb_png(folder / r["file"]) for r in rows])
    masks = np.stack([read_mask_png(folder / "mask" / (Path(r["file"]).stem + "_mask.png")) for r in rows])
    return rows, torch.from_numpy(rgb), torch.from_numpy(masks)


# ------------------------------------------------------------------------------------------- the sample stage
PROTOCOLS = ("protocol_a", "protocol_b", "augment")


def protocol_masks(prep: Path, size: int, model_dir: Path) -> tuple[list[dict], torch.Tensor, list[dict], torch.Tensor]:
    """The TEST and TRAIN masks of `prep` for a generator of `size` px -> (test rows, masks, train rows, masks)."""
    from siamdiff.data.prep import load_split

    test_rows, _, test_mask = load_split(prep, "test")
    train_rows, _, train_mask = load_split(prep, "train")
    if not len(test_rows):
        raise SiamdiffError(f"{prep}/test.safetensors: the test split is empty; protocol A needs test masks")
    if not len(train_rows):
        raise SiamdiffError(f"{prep}/train.safetensors: the train split is empty; protocol B needs train masks")
    if test_mask.shape[-1] != size:
        raise SiamdiffError(f"{prep}: masks are {test_mask.shape[-1]} px but {model_dir} generates {size} px; "
                            "rerun `dvc repro` so the model matches preprocess.size")
    return test_rows, test_mask, train_rows, train_mask


def train_subset(rows: list[dict], fraction: float) -> list[int]:
    """Indices of a fixed fraction of the train rows: lowest SHA-256(id), in row order."""
    if fraction >= 1:
        return list(range(len(rows)))
    n = max(1, round(fraction * len(rows)))
    ranked = sorted(range(len(rows)), key=lambda i: hashlib.sha256(rows[i]["id"].encode()).hexdigest())
    return sorted(ranked[:n])


def protocol_jobs(test_rows: list[dict], test_mask, train_rows: list[dict], train_mask, sub: list[int],
                  seeds: Sequence[int], k: int, augment_k: int) -> dict[str, list[tuple]]:
    """Every (mask id, mask, run seed, sample) to draw: `protocol_a` (k per TEST mask, sample j with `seeds[j]`),
    `protocol_b` (one per train mask of `sub`, `seeds[0]`), `augment_extra` (samples 1.. of the augment set)."""
    return {"protocol_a": [(test_rows[i]["id"], test_mask[i], seeds[j], j) for j in range(k) for i in range(len(test_rows))],
            "protocol_b": [(train_rows[i]["id"], train_mask[i], seeds[0], 0) for i in sub],
            "augment_extra": [(train_rows[i]["id"], train_mask[i], seeds[j], j) for j in range(1, augment_k) for i in sub]}


def write_protocols(out: Path, jobs: dict[str, list[tuple]], rgb: torch.Tensor, prompt: str,
                    model_hash: str) -> dict[str, int]:
    """`out/{protocol_a,protocol_b,augment}` from the images `rgb` of `jobs` (in their order), written atomically;
    augment = protocol_b's images + augment_extra's. -> pairs per folder."""
    parts, start = {}, 0
    for name, js in jobs.items():
        parts[name] = (rgb[start:start + len(js)], torch.stack([j[1] for j in js]) if js else None,
                       [j[0] for j in js], [j[2] for j in js], [j[3] for j in js])
        start += len(js)
    b, ex = parts["protocol_b"], parts["augment_extra"]
    if ex[1] is not None:
        b = (torch.cat([b[0], ex[0]]), torch.cat([b[1], ex[1]]), b[2] + ex[2], b[3] + ex[3], b[4] + ex[4])
    parts["augment"] = b
    with atomic_path(out) as tmp:
        return {name: len(write_pairs(tmp / name, *parts[name], prompt, model_hash)) for name in PROTOCOLS}


# ------------------------------------------------------------------------------------------- siamdiff generate
def _mask_files(masks_dir: Path) -> list[Path]:
    from siamdiff.data.images import IMAGE_SUFFIXES

    if not masks_dir.exists():
        raise SiamdiffError(f"{masks_dir}: mask folder not found")
    if not masks_dir.is_dir():
        raise SiamdiffError(f"{masks_dir}: not a folder; --masks takes a folder of mask images")
    entries = sorted(p for p in masks_dir.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if not files:
        raise SiamdiffError(f"{masks_dir}: no mask images in this folder; put PNG/JPEG/TIFF/BMP masks there")
    bad = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise SiamdiffError(f"{masks_dir}: not image files: {shown}; the folder must hold only mask images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_user_masks(masks_dir: str | os.PathLike, size: int, fit: str = "crop") -> tuple[list[str], np.ndarray]:
    """Mask images of any size -> (ids = file stems, uint8 `[N,size,size]` in {0,1}).

    Binarised at 0.5 of their range, then cropped (or padded) to a square keeping the lesion centre and
    resized exactly as `preprocess` does (`siamdiff.data.preprocess.preprocess_pair`).
    """
    from siamdiff.data.images import decode_mask, read_bytes
    from siamdiff.data.preprocess import preprocess_pair

    files = _mask_files(Path(masks_dir))
    ids, out = [], []
    for p in files:
        m = decode_mask(read_bytes(p), str(p))
        if m.ndim != 2 or min(m.shape) < 8:
            raise SiamdiffError(f"{p}: mask is {m.shape[1]}x{m.shape[0]} pixels; too small to use")
        dummy = np.zeros((*m.shape, 3), np.uint8)
        _, sq = preprocess_pair(dummy, m, int(size), fit)
        ids.append(p.stem[:-5] if p.stem.endswith("_mask") else p.stem)
        out.append(sq)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SiamdiffError(f"{masks_dir}: several files share the name(s) {dup[:5]} (different extensions); "
                            "rename them so each mask has its own name")
    return ids, np.stack(out)


# when a model's record holds no preview settings (a model saved outside the train stage)
FALLBACK_STEPS, FALLBACK_GUIDANCE = 50, 9.0


def sampling_defaults(gen) -> tuple[int, float, str]:
    """(DDIM steps, guidance, where from) for a model: the `train.preview_steps` / `train.preview_guidance` its
    record (siamdiff.json) says its training previews were drawn with, else 50 and 9.0."""
    rec = getattr(gen, "record", None) or {}
    params = rec.get("params", {}) if isinstance(rec, dict) else {}
    params = params if isinstance(params, dict) else {}
    steps, guidance = params.get("preview_steps"), params.get("preview_guidance")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 and \
            isinstance(guidance, (int, float)) and not isinstance(guidance, bool):
        return steps, float(guidance), "the model's train.preview_steps/preview_guidance"
    return FALLBACK_STEPS, FALLBACK_GUIDANCE, "no preview settings in the model's record: the defaults"


def generate_from_folder(model, masks, out, k: int = 1, seed: int = 0, steps: int | None = None,
                         guidance: float | None = None, prompt: str | None = None, batch_size: int = 16,
                         progress: bool = True) -> Path:
    """`siamdiff generate`: k samples per mask in `masks` with the generator in `model`, into `out`.

    Each sample is the model's own size (`image_size`, the training `preprocess.size`): masks are binarised and
    centroid-cropped (or padded, as the model's data was) to a square and resized as in preprocessing.
    `steps`/`guidance` None: what the model's training previews used (`sampling_defaults`).
    Everything is written into a temporary folder beside `out` and renamed onto it at the end, so `out`
    never holds a partial result. `out` must not exist yet or be empty.
    """
    from siamdiff.model.registry import folder_hash
    from siamdiff.sample.pipeline import load_pipeline

    model, masks_dir, out = Path(model), Path(masks), Path(out)
    if int(k) < 1:
        raise SiamdiffError(f"-k must be at least 1, got {k}")
    if steps is not None and int(steps) < 1:
        raise SiamdiffError(f"--steps must be at least 1, got {steps}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SiamdiffError(f"{out}: already exists and is not empty; choose a new --out folder or remove it")
    if not model.is_dir():
        raise SiamdiffError(f"{model}: model folder not found; pass a models/siamese folder (dvc repro train)")
    _mask_files(masks_dir)  # mask-folder errors first: cheap, and independent of the model
    # raises SiamdiffError for a folder that is not a siamdiff model, or a damaged one (SHA-256 per file)
    gen = load_pipeline(model, device="cuda" if torch.cuda.is_available() else "cpu")
    fit = _fit_of(gen)
    own_steps, own_guidance, source = sampling_defaults(gen)
    defaulted = [name for name, v in (("steps", steps), ("guidance", guidance)) if v is None]
    if defaulted:
        log("generate", f"{' and '.join(defaulted)} from {source}")
    steps = own_steps if steps is None else int(steps)
    guidance = own_guidance if guidance is None else float(guidance)
    ids, m = load_user_masks(masks_dir, int(gen.config.image_size), fit)
    prompt = gen.config.default_prompt if prompt is None else prompt
    model_hash = gen.folder_hash or folder_hash(model)  # verified against its record by load_pipeline
    all_ids = [i for i in ids for _ in range(k)]
    samples = [j for _ in ids for j in range(k)]
    seeds = [int(seed) + j for j in samples]
    mt = torch.from_numpy(m).repeat_interleave(k, dim=0)
    log("generate", f"{len(ids)} masks from {masks_dir} x {k} samples, {steps} DDIM steps, guidance {guidance}, "
                    f"{m.shape[-1]}x{m.shape[-1]} px ({fit}), model {model} ({model_hash[:12]})")
    rgb = generate_pairs(gen, mt, all_ids, seeds, prompt, steps, guidance, batch_size,
                         "generate" if progress else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir():  # empty: atomic_path renames onto it
        shutil.rmtree(out)
    with atomic_path(out) as tmp:
        write_pairs(tmp, rgb, mt, all_ids, seeds, samples, prompt, model_hash)
    log("generate", f"wrote {len(mt)} pairs to {out}/ (img/, mask/, index.csv)")
    return out


def _fit_of(gen) -> str:
    """The preprocess `fit` the model's data used (crop unless its record says pad)."""
    from siamdiff.data.preprocess import FITS

    rec = getattr(gen, "record", None) or {}
    params = rec.get("params", {}) if isinstance(rec, dict) else {}
    for section in (rec.get("preprocess", {}), params.get("preprocess", {}), rec, params):
        if isinstance(section, dict) and section.get("fit") in FITS:
            return section["fit"]
    return "crop"
