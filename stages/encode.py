"""Stage `encode`: autoencoder latents of every (item, view) into the persistent LMDB latent cache.

Train items get `encode.views` views (view 0 = identity, views 1.. = paired augmentations, deterministic
per seed+item+view); val/test items get view 0. Entries already in the cache under the same key are not
re-encoded (a warm rerun runs the autoencoder zero times, and does not even load it); entries whose
checksum fails are re-encoded. Writes data/encoded.csv (`id,split,view,key,coverage`).
"""
from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import SiamdiffError, atomic_path, load_params, log, main_guard, require
from siamdiff.utils import progress as progress_bar

STAGE = "encode"
SPLITS = ("train", "val", "test")


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    import torch

    from siamdiff.data.augment import PairedAugment, spec, view_seed
    from siamdiff.data.color import load_stats, to_working
    from siamdiff.data.latent_cache import LatentCache, latent_key
    from siamdiff.data.prep import load_split
    from siamdiff.model.registry import verify_model

    root = Path(root)
    prep, ae_dir = root / "data/prep", root / "models/autoencoder"
    db_path, csv_path = root / "data/latents.lmdb", root / "data/encoded.csv"
    params = validate_section(STAGE, params)
    views, batch_size, seed = params["views"], params["batch_size"], params["seed"]
    require(views >= 1, "encode.views", f"= {views} must be >= 1 (view 0 is the identity)")
    require(batch_size >= 1, "encode.batch_size", "must be >= 1")
    t0 = time.perf_counter()

    stats = load_stats(prep / "color_stats.json")
    if not (ae_dir / "config.json").is_file():
        raise SiamdiffError(f"{ae_dir}: no autoencoder here; run `dvc repro autoencoder`")
    ae_hash = verify_model(ae_dir, stage="autoencoder")  # refuses a damaged autoencoder, naming the file
    aug_spec = spec(params["augment"], seed)
    augment = PairedAugment(params["augment"])

    # 1. every (item, view) and its key
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
    log(STAGE, f"read {prep} and {ae_dir} (hash {ae_hash[:12]}): {len(entries)} (item, view) entries")

    # 2. which are cached (checksum verified)
    cache = LatentCache(db_path)
    coverage, todo = {}, []
    for e, got in zip(entries, cache.get_many(e["key"] for e in entries)):
        if got is None:
            todo.append(e)
        else:
            coverage[e["key"]] = float(got["mask"].float().mean())
    hits, corrupt = len(entries) - len(todo), cache.corrupt
    log(STAGE, f"cache {db_path}: {hits} hits, {len(todo)} to encode ({corrupt} corrupt entries re-encoded)")

    # 3. encode the misses (the autoencoder is loaded only when there are any)
    if todo:
        from siamdiff.model.autoencoder import encode_stats, load_autoencoder

        device = "cuda" if torch.cuda.is_available() else "cpu"
        vae = load_autoencoder(ae_dir, verify=False).to(device)  # verified above
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        for rgb, _ in data.values():
            if len(rgb) and rgb.shape[1] % factor:
                raise SiamdiffError(f"{prep}: image size {rgb.shape[1]} is not divisible by the autoencoder's "
                                    f"downsampling factor {factor}; change preprocess.size or the autoencoder")
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
    cache.close()

    # 4. the index of what this run's params encode
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "split", "view", "key", "coverage"])
            for e in entries:
                w.writerow([e["id"], e["split"], e["view"], e["key"], f"{coverage[e['key']]:.6f}"])
    seconds = time.perf_counter() - t0
    log(STAGE, f"wrote {db_path} ({len(todo)} new entries) and {csv_path} ({len(entries)} rows) in {seconds:.1f}s")
    return {"entries": len(entries), "hits": hits, "encoded": len(todo), "corrupt": corrupt, "seconds": seconds}


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
