"""The `encode` stage's work: every (item, view) of data/prep, its latent-cache key, and the autoencoder run on
the entries the cache does not hold yet (siamdiff/data/latent_cache.py; DESIGN.md section 3).

Train items get `views` views (view 0 = identity, views 1.. = paired augmentations, deterministic per
seed+item+view); val/test items get view 0. `data/encoded.csv` (`id,split,view,key,coverage`) indexes the
entries one run's params encode.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from siamdiff.data.split import SPLITS
from siamdiff.utils import SiamdiffError, atomic_path

INDEX_COLUMNS = ("id", "split", "view", "key", "coverage")


def plan(prep: Path, stats: dict, views: int, ae_hash: str, aug_spec: dict) -> tuple[list[dict], dict]:
    """-> (entries `{id, split, row, view, key}` in split/row/view order, {split: (rgb, mask) numpy arrays})."""
    from siamdiff.data.latent_cache import latent_key
    from siamdiff.data.prep import load_split

    entries, data = [], {}
    for split in SPLITS:
        rows, rgb, mask = load_split(prep, split, as_numpy=True)
        data[split] = (rgb, mask)
        if len(rows) == 0:
            continue
        size = int(rgb.shape[1])
        for i, row in enumerate(rows):
            pixels = hashlib.sha256(rgb[i].tobytes() + mask[i].tobytes()).hexdigest()
            preprocess = {"size": size, "color_space": stats.get("space"), "color_stats": stats,
                          "pixels_sha256": pixels}
            for v in range(views if split == "train" else 1):
                key = latent_key(row["image_sha256"], preprocess, v, ae_hash, aug_spec)
                entries.append({"id": row["id"], "split": split, "row": i, "view": v, "key": key})
    return entries, data


def cached(cache, entries: list[dict]) -> tuple[dict[str, float], list[dict]]:
    """-> ({key: mask coverage} of the entries the cache holds (checksum verified), the entries it does not)."""
    coverage, todo = {}, []
    for e, got in zip(entries, cache.get_many(e["key"] for e in entries)):
        if got is None:
            todo.append(e)
        else:
            coverage[e["key"]] = float(got["mask"].float().mean())
    return coverage, todo


def encode_entries(cache, todo: list[dict], data: dict, ae_dir: Path, prep: Path, stats: dict, augment, seed: int,
                   batch_size: int, progress: bool = True) -> dict[str, float]:
    """Encode `todo` with the autoencoder in `ae_dir` (loaded here; verify it first) into `cache`, `batch_size`
    entries per forward pass and cache transaction. -> {key: mask coverage} of the entries written."""
    import torch

    from siamdiff.data.augment import view_seed
    from siamdiff.data.color import to_working
    from siamdiff.model.autoencoder import encode_stats, load_autoencoder
    from siamdiff.utils import progress as progress_bar

    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = load_autoencoder(ae_dir, verify=False).to(device)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    for rgb, _ in data.values():
        if len(rgb) and rgb.shape[1] % factor:
            raise SiamdiffError(f"{prep}: image size {rgb.shape[1]} is not divisible by the autoencoder's "
                                f"downsampling factor {factor}; change preprocess.size or the autoencoder")
    coverage = {}
    bar = progress_bar(range(0, len(todo), batch_size), desc="encode", disable=not progress, mininterval=5)
    for start in bar:
        batch = todo[start:start + batch_size]
        imgs, masks = [], []
        for e in batch:
            rgb, mask = data[e["split"]][0][e["row"]], data[e["split"]][1][e["row"]]
            if e["view"] > 0:
                rgb, mask = augment(rgb, mask, view_seed(seed, e["id"], e["view"]))
            imgs.append(torch.as_tensor(rgb))
            masks.append(torch.as_tensor(mask, dtype=torch.uint8))
        x = to_working(torch.stack(imgs), stats).float()
        with torch.no_grad():
            mean, std = (t.cpu() for t in encode_stats(vae, x.to(device)))
        cache.put_many((e["key"], {"latent_mean": mean[j].float(), "latent_std": std[j].float(),
                                   "image": x[j], "mask": masks[j]}) for j, e in enumerate(batch))
        for j, e in enumerate(batch):
            coverage[e["key"]] = float(masks[j].float().mean())
    return coverage


def write_index(path: Path, entries: list[dict], coverage: dict[str, float]) -> None:
    """`data/encoded.csv`: one row per entry, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(INDEX_COLUMNS)
            for e in entries:
                w.writerow([e["id"], e["split"], e["view"], e["key"], f"{coverage[e['key']]:.6f}"])
