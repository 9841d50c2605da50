"""Stage `encode`: autoencoder latents of every (item, view) into the persistent LMDB latent cache.

Train items get `encode.views` views (view 0 = identity, views 1.. = paired augmentations, deterministic
per seed+item+view); val/test items get view 0. Entries already in the cache under the same key are not
re-encoded (a warm rerun runs the autoencoder zero times, and does not even load it); entries whose
checksum fails are re-encoded. Writes data/encoded.csv (`id,split,view,key,coverage`).
"""
from __future__ import annotations

import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import SiamdiffError, load_params, log, main_guard, require

STAGE = "encode"


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    from siamdiff.data.augment import PairedAugment, spec
    from siamdiff.data.color import load_stats
    from siamdiff.data.encode import cached, encode_entries, plan, write_index
    from siamdiff.data.latent_cache import LatentCache
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
    augment = PairedAugment(params["augment"])
    entries, data = plan(prep, stats, views, ae_hash, spec(params["augment"], seed))
    log(STAGE, f"read {prep} and {ae_dir} (hash {ae_hash[:12]}): {len(entries)} (item, view) entries")

    cache = LatentCache(db_path)
    coverage, todo = cached(cache, entries)
    hits, corrupt = len(entries) - len(todo), cache.corrupt
    log(STAGE, f"cache {db_path}: {hits} hits, {len(todo)} to encode ({corrupt} corrupt entries re-encoded)")
    if todo:  # the autoencoder is loaded only when there is something to encode
        coverage |= encode_entries(cache, todo, data, ae_dir, prep, stats, augment, seed, batch_size, progress)
    cache.close()

    write_index(csv_path, entries, coverage)
    seconds = time.perf_counter() - t0
    log(STAGE, f"wrote {db_path} ({len(todo)} new entries) and {csv_path} ({len(entries)} rows) in {seconds:.1f}s")
    return {"entries": len(entries), "hits": hits, "encoded": len(todo), "corrupt": corrupt, "seconds": seconds}


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
