"""The `evaluate` stage's scores: FID/KID, LPIPS and CLIP-I/CMMD of the sampled sets, and its picture.

- Protocol A (seed's): samples of the TEST masks vs the real TEST images; FID and KID per sampling seed
  (sample j of every mask = seed j), then mean and std over the seeds.
- Protocol B (authors'): one sample per TRAIN mask vs the real TRAIN images of those masks.
- LPIPS-alex: diversity = mean over masks of the mean LPIPS between a mask's K samples; to_real = mean
  LPIPS between each sample and the real image of its mask (protocol A).
- CLIP-I and CMMD (protocol A per seed, and B) with a CLIP model folder, else `None` + reason.
"""
from __future__ import annotations

import statistics
import time

from siamdiff.utils import SiamdiffError, log

STAGE = "evaluate"
GRID_MASKS = 8
GRID_TILE = 96


def mean_std(values: list[float]) -> dict:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0 if vals else None,
            "per_seed": vals}


def real_for(rows: list[dict], real_rows: list[dict], what: str) -> list[int]:
    """Index in `real_rows` of each sample's mask; a sample of a mask not in `real_rows` is refused."""
    index = {r["id"]: i for i, r in enumerate(real_rows)}
    missing = sorted({r["mask_id"] for r in rows if r["mask_id"] not in index})
    if missing:
        raise SiamdiffError(f"data/samples/{what}/index.csv: masks {missing[:3]} are not in data/prep's split; "
                            "rerun `dvc repro sample`")
    return [index[r["mask_id"]] for r in rows]


def _clip_scores(clip_model, batch_size: int, test_rgb, a_rows, a_rgb, a_real, seeds, train_b_rgb, b_rgb):
    """(protocol A {clip_i, cmmd} mean/std over the seeds, protocol B {clip_i, cmmd})."""
    from siamdiff.metrics.clip import clip_embeddings, clip_i, cmmd, load_clip

    model, processor = load_clip(clip_model)
    e_test, e_a = clip_embeddings(model, processor, test_rgb, batch_size), clip_embeddings(model, processor, a_rgb, batch_size)
    e_train, e_b = clip_embeddings(model, processor, train_b_rgb, batch_size), clip_embeddings(model, processor, b_rgb, batch_size)
    ci, cm = [], []
    for j in seeds:
        idx = [i for i, r in enumerate(a_rows) if r["sample"] == j]
        ci.append(clip_i(e_test[[a_real[i] for i in idx]], e_a[idx]))
        cm.append(cmmd(e_test, e_a[idx]))
    return {"clip_i": mean_std(ci), "cmmd": mean_std(cm)}, {"clip_i": clip_i(e_train, e_b), "cmmd": cmmd(e_train, e_b)}


def fidelity(test_rgb, a_rows: list[dict], a_rgb, a_real: list[int], train_b_rgb, b_rgb, clip_model=None,
             batch_size: int = 32, progress: bool = True) -> tuple[dict, str | None]:
    """Score protocol A (samples `a_rgb` of the test masks, `a_real[i]` = the real image of sample i in `test_rgb`)
    and protocol B (samples `b_rgb` vs the real train images `train_b_rgb` of their masks).

    -> (the `metrics/fidelity.json` numbers with their descriptions and notes, why CLIP scores are None or None).
    """
    from siamdiff.metrics.clip import clip_status
    from siamdiff.metrics.fid import fid_kid
    from siamdiff.metrics.inception import inception_features
    from siamdiff.metrics.lpips import load_lpips, lpips_distance, lpips_diversity

    seeds = sorted({r["sample"] for r in a_rows})
    feats = {}  # Inception features once per image set
    for name, rgb in (("test", test_rgb), ("train_b", train_b_rgb), ("a", a_rgb), ("b", b_rgb)):
        t = time.time()
        feats[name] = inception_features(rgb, progress=progress)
        log(STAGE, f"inception features: {name} {len(rgb)} images in {time.time() - t:.0f} s")
    per_seed = []
    for j in seeds:
        idx = [i for i, r in enumerate(a_rows) if r["sample"] == j]
        per_seed.append(fid_kid(feats["test"], feats["a"][idx], seed=j))
    b = fid_kid(feats["train_b"], feats["b"], seed=0)
    kid_sizes = sorted({d["kid_subset_size"] for d in per_seed} | {b["kid_subset_size"]})

    lp = load_lpips()
    groups = {}
    for i, r in enumerate(a_rows):
        groups.setdefault(r["mask_id"], []).append(i)
    diversity = lpips_diversity(lp, [a_rgb[g] for g in groups.values()])
    to_real = lpips_distance(lp, a_rgb, test_rgb[a_real]).mean().item()

    ok, reason = clip_status(clip_model)
    clip_a, clip_b = {"clip_i": None, "cmmd": None}, {"clip_i": None, "cmmd": None}
    if ok:
        clip_a, clip_b = _clip_scores(clip_model, batch_size, test_rgb, a_rows, a_rgb, a_real, seeds, train_b_rgb, b_rgb)

    fid_a, kid_a = mean_std([d["fid"] for d in per_seed]), mean_std([d["kid_mean"] for d in per_seed])
    result = {
        "protocol_a": {
            "description": "K samples per TEST mask (sample j = sampling seed j) vs the real TEST images; "
                           "mean/std over the sampling seeds",
            "n_masks": len(groups), "k": len(seeds), "n_real": len(test_rgb),
            "fid": fid_a["mean"], "fid_std": fid_a["std"], "fid_per_seed": fid_a["per_seed"],
            "kid": kid_a["mean"], "kid_std": kid_a["std"], "kid_per_seed": kid_a["per_seed"],
            "kid_subset_size": per_seed[0]["kid_subset_size"],
            "lpips_diversity": diversity, "lpips_to_real": to_real,
            "clip_i": clip_a["clip_i"]["mean"] if clip_a["clip_i"] else None,
            "clip_i_std": clip_a["clip_i"]["std"] if clip_a["clip_i"] else None,
            "cmmd": clip_a["cmmd"]["mean"] if clip_a["cmmd"] else None,
            "cmmd_std": clip_a["cmmd"]["std"] if clip_a["cmmd"] else None,
        },
        "protocol_b": {
            "description": "one sample per TRAIN mask vs the real TRAIN images of those masks (authors' protocol)",
            "n_masks": len(b_rgb), "n_real": len(train_b_rgb),
            "fid": b["fid"], "kid": b["kid_mean"], "kid_subset_std": b["kid_std"],
            "kid_subset_size": b["kid_subset_size"],
            "clip_i": clip_b["clip_i"], "cmmd": clip_b["cmmd"],
        },
        "notes": {
            "fid_kid": "torchmetrics FID/KID on TF-Inception pool features (2048-d); KID = unbiased MMD^2, "
                       "cubic polynomial kernel, 100 subsets",
            "kid_subset_size": (f"capped at the set size for small sets: {kid_sizes}" if min(kid_sizes) < 1000
                                else "1000"),
            "small_sets": "FID from fewer than 2048 images per set is biased upwards; compare runs at equal n",
            "lpips": "LPIPS v0.1 AlexNet; diversity = mean pairwise LPIPS between the K samples of a mask",
            "cmmd": "CLIP embeddings L2-normalised, RBF kernel sigma 10, x1000",
        },
    }
    return result, reason


def summary(result: dict) -> str:
    """The one log line of a `fidelity` result."""
    a, b = result["protocol_a"], result["protocol_b"]
    return (f"protocol A: FID {a['fid']:.2f} +- {a['fid_std']:.2f}, KID {a['kid']:.4f}; protocol B: "
            f"FID {b['fid']:.2f}, KID {b['kid']:.4f}; LPIPS diversity {a['lpips_diversity']:.3f}, "
            f"to real {a['lpips_to_real']:.3f}" + ("" if a["clip_i"] is not None else "; CLIP-I/CMMD null (no clip_model)"))


def samples_grid(test_rows, test_rgb, test_mask, a_rows, a_rgb, k: int, n: int = GRID_MASKS):
    """mask | real | K samples for `n` test masks spread over the coverage range -> RGB uint8."""
    import cv2
    import numpy as np

    from siamdiff.data.images import grid, label_band

    order = sorted(range(len(test_rows)), key=lambda i: test_rows[i]["coverage"])
    pick = [order[round(x)] for x in np.linspace(0, len(order) - 1, min(n, len(order)))]
    by_mask = {}
    for i, r in enumerate(a_rows):
        by_mask.setdefault(r["mask_id"], {})[r["sample"]] = i

    def tile(im):
        return cv2.resize(np.ascontiguousarray(im), (GRID_TILE, GRID_TILE), interpolation=cv2.INTER_NEAREST)

    header = grid([label_band(x, GRID_TILE) for x in ["mask", "real"] + [f"sample {j}" for j in range(k)]], columns=2 + k, gap=2)
    tiles = []
    blank = np.full((GRID_TILE, GRID_TILE, 3), 255, np.uint8)
    for i in dict.fromkeys(pick):
        m = test_mask[i].numpy()
        tiles += [tile(np.repeat(m[:, :, None] * 255, 3, axis=2).astype(np.uint8)), tile(test_rgb[i].numpy())]
        samples = by_mask.get(test_rows[i]["id"], {})
        tiles += [tile(a_rgb[samples[j]].numpy()) if j in samples else blank for j in range(k)]
    body = grid(tiles, columns=2 + k, gap=2)
    return np.concatenate([header, np.full((2, body.shape[1], 3), 255, np.uint8), body])
