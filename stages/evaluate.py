"""Stage `evaluate`: data/samples + data/prep -> metrics/fidelity.json, plots/evaluate/grid.png.

- Protocol A (seed's): samples of the TEST masks vs the real TEST images; FID and KID per sampling seed
  (sample j of every mask = seed j), then mean and std over the seeds.
- Protocol B (authors'): one sample per TRAIN mask vs the real TRAIN images of those masks.
- LPIPS-alex: diversity = mean over masks of the mean LPIPS between a mask's K samples; to_real = mean
  LPIPS between each sample and the real image of its mask (protocol A).
- CLIP-I and CMMD (protocol A per seed, and B) with `evaluate.clip_model`, else `null` + reason.
FID/KID: torchmetrics on TF-Inception 2048-d pool features (`siamdiff.metrics`); KID's subset size is capped
at the set size for small sets (recorded). metrics/fidelity.json holds the numbers (null where not computed);
descriptions, notes, the CLIP status and the weights' provenance (files, SHA-256; no machine paths) go in
metrics/fidelity.info.json beside it.
"""
from __future__ import annotations

import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import SiamdiffError, atomic_path, load_params, log, main_guard, portable_path, write_metrics

STAGE = "evaluate"


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    from siamdiff.data.images import encode_png
    from siamdiff.data.prep import load_split
    from siamdiff.metrics.assets import ensure_assets
    from siamdiff.metrics.fidelity import fidelity, real_for, samples_grid, summary
    from siamdiff.sample.generate import read_pairs

    params = validate_section(STAGE, params)
    clip_model, batch = params["clip_model"], params["batch_size"]
    root = Path(root)
    prep, samples = root / "data/prep", root / "data/samples"
    metrics_path, grid_path = root / "metrics/fidelity.json", root / "plots/evaluate/grid.png"
    t0 = time.time()
    assets = ensure_assets(verbose=progress)
    test_rows, test_rgb, test_mask = load_split(prep, "test")
    train_rows, train_rgb, _ = load_split(prep, "train")
    a_rows, a_rgb, _ = read_pairs(samples / "protocol_a")
    b_rows, b_rgb, _ = read_pairs(samples / "protocol_b")
    if not a_rows or not b_rows:
        raise SiamdiffError(f"{samples}: protocol_a or protocol_b is empty; rerun `dvc repro sample`")
    a_real = real_for(a_rows, test_rows, "protocol_a")
    b_real = real_for(b_rows, train_rows, "protocol_b")
    k = len({r["sample"] for r in a_rows})
    log(STAGE, f"read {prep} (test {len(test_rows)}, train {len(train_rows)}), {samples}: protocol_a "
               f"{len(a_rows)} ({k} per mask), protocol_b {len(b_rows)}")

    result, reason = fidelity(test_rgb, a_rows, a_rgb, a_real, train_rgb[b_real], b_rgb, clip_model, batch, progress)
    info = {"clip": {"model": clip_model, "reason": reason},
            "assets": {name: {key: portable_path(v, root) if key == "file" else v for key, v in a.items()}
                       for name, a in assets.items()}}
    picture = samples_grid(test_rows, test_rgb, test_mask, a_rows, a_rgb, k)
    with atomic_path(grid_path) as tmp:
        tmp.write_bytes(encode_png(picture))
    result = write_metrics(metrics_path, result, info)  # numbers; the rest in fidelity.info.json
    log(STAGE, summary(result))
    log(STAGE, f"wrote {metrics_path} (+ .info.json) and {grid_path} in {time.time() - t0:.0f} s")
    return result


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
