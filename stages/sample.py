"""Stage `sample`: models/siamese + data/prep masks -> data/samples/{protocol_a,protocol_b,augment}.

Mask-Diffusion only, DDIM (eta 0), classifier-free guidance with the empty prompt and the same mask
(`siamdiff.sample.ddim`: hint once per image, both halves in one batch).
- protocol_a: K samples per TEST mask, sample j drawn with sampling seed `seeds[j]` (DESIGN.md 4, seed's protocol).
- protocol_b: one sample per TRAIN mask (seed `seeds[0]`), the authors' protocol.
- augment: the synthetic set for the segmentation stage, from TRAIN masks only: `augment_k` samples per
  train mask; sample 0 is protocol_b's image (the same generator call), further ones use `seeds[1:]`.
`train_fraction` < 1 takes a fixed subset of the train masks (lowest SHA-256 of the id) for protocol_b and
augment. PNG (lossless) + index.csv per folder; written atomically.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from siamdiff.utils import SiamdiffError, atomic_path, load_params, log, main_guard, require

STAGE = "sample"


def check_params(p: dict) -> dict:
    steps, k, seeds = p.get("steps", 50), p.get("k", 5), p.get("seeds", [0, 1, 2, 3, 4])
    require(isinstance(steps, int) and steps >= 1, "sample.steps", f"must be an integer >= 1, got {steps!r}")
    require(isinstance(k, int) and k >= 1, "sample.k", f"must be an integer >= 1, got {k!r}")
    require(isinstance(seeds, list) and all(isinstance(s, int) for s in seeds), "sample.seeds",
            f"must be a list of integers, got {seeds!r}")
    require(len(seeds) >= k, "sample.seeds", f"needs at least k = {k} seeds (one per sample), got {len(seeds)}")
    g = p.get("guidance", 9.0)
    require(isinstance(g, (int, float)) and g >= 0, "sample.guidance", f"must be a number >= 0, got {g!r}")
    frac = p.get("train_fraction", 1.0)
    require(isinstance(frac, (int, float)) and 0 < frac <= 1, "sample.train_fraction", f"must be in (0, 1], got {frac!r}")
    ak = p.get("augment_k", 1)
    require(isinstance(ak, int) and 1 <= ak <= len(seeds), "sample.augment_k",
            f"must be an integer in [1, len(seeds)], got {ak!r}")
    bs = p.get("batch_size", 16)
    require(isinstance(bs, int) and bs >= 1, "sample.batch_size", f"must be an integer >= 1, got {bs!r}")
    prompt = p.get("prompt")
    require(prompt is None or isinstance(prompt, str), "sample.prompt", "must be a string (or null: the model's)")
    return dict(steps=steps, k=k, seeds=seeds, guidance=float(g), train_fraction=float(frac), augment_k=ak,
                batch_size=bs, prompt=prompt)


def train_subset(rows: list[dict], fraction: float) -> list[int]:
    """Indices of a fixed fraction of the train rows: lowest SHA-256(id), in row order."""
    if fraction >= 1:
        return list(range(len(rows)))
    n = max(1, round(fraction * len(rows)))
    ranked = sorted(range(len(rows)), key=lambda i: hashlib.sha256(rows[i]["id"].encode()).hexdigest())
    return sorted(ranked[:n])


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    import torch

    from siamdiff.data.prep import load_split
    from siamdiff.model.generator import load_generator
    from siamdiff.model.registry import folder_hash
    from siamdiff.sample.generate import generate_pairs, write_pairs

    p = check_params(params)
    root = Path(root)
    model_dir, prep, out = root / "models/siamese", root / "data/prep", root / "data/samples"
    gen = load_generator(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    model_hash = folder_hash(model_dir)
    prompt = p["prompt"] if p["prompt"] is not None else gen.prompt
    test_rows, _, test_mask = load_split(prep, "test")
    train_rows, _, train_mask = load_split(prep, "train")
    if not len(test_rows):
        raise SiamdiffError(f"{prep}/test.safetensors: the test split is empty; protocol A needs test masks")
    if not len(train_rows):
        raise SiamdiffError(f"{prep}/train.safetensors: the train split is empty; protocol B needs train masks")
    if test_mask.shape[-1] != gen.size:
        raise SiamdiffError(f"{prep}: masks are {test_mask.shape[-1]} px but {model_dir} generates {gen.size} px; "
                            "rerun `dvc repro` so the model matches preprocess.size")
    sub = train_subset(train_rows, p["train_fraction"])
    log(STAGE, f"read {model_dir} ({model_hash[:12]}), {len(test_rows)} test and {len(train_rows)} train masks "
               f"from {prep}; protocol B / augment use {len(sub)} train masks")

    # every (mask, seed, sample) to draw, as one list so batches stay full
    jobs = {"protocol_a": [(test_rows[i]["id"], test_mask[i], p["seeds"][j], j)
                           for j in range(p["k"]) for i in range(len(test_rows))],
            "protocol_b": [(train_rows[i]["id"], train_mask[i], p["seeds"][0], 0) for i in sub],
            "augment_extra": [(train_rows[i]["id"], train_mask[i], p["seeds"][j], j)
                              for j in range(1, p["augment_k"]) for i in sub]}
    flat = [job for name in jobs for job in jobs[name]]
    log(STAGE, f"{len(flat)} images: {p['steps']} DDIM steps, guidance {p['guidance']}, batch {p['batch_size']}, "
               f"prompt {prompt!r}")
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(flat), desc="sample", unit="img")
    try:
        rgb = generate_pairs(gen, torch.stack([j[1] for j in flat]), [j[0] for j in flat], [j[2] for j in flat],
                             [j[3] for j in flat], prompt, p["steps"], p["guidance"], p["batch_size"], bar)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.time() - t0

    def part(name):
        start = sum(len(jobs[n]) for n in list(jobs)[:list(jobs).index(name)])
        js = jobs[name]
        return (rgb[start:start + len(js)], torch.stack([j[1] for j in js]) if js else None,
                [j[0] for j in js], [j[2] for j in js], [j[3] for j in js])

    with atomic_path(out) as tmp:
        counts = {}
        for name in ("protocol_a", "protocol_b"):
            im, m, ids, seeds, samples = part(name)
            counts[name] = len(write_pairs(tmp / name, im, m, ids, seeds, samples, prompt, model_hash))
        b, ex = part("protocol_b"), part("augment_extra")
        if ex[1] is not None:
            b = (torch.cat([b[0], ex[0]]), torch.cat([b[1], ex[1]]), b[2] + ex[2], b[3] + ex[3], b[4] + ex[4])
        counts["augment"] = len(write_pairs(tmp / "augment", *b, prompt, model_hash))
    log(STAGE, f"wrote {out}/: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" pairs in {seconds:.0f} s ({seconds / max(len(flat), 1):.2f} s/image)")
    return {"counts": counts, "seconds": seconds}


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
