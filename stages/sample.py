"""Stage `sample`: models/siamese + data/prep masks -> data/samples/{protocol_a,protocol_b,augment}.

Mask-Diffusion only, DDIM (eta 0), classifier-free guidance with the empty prompt and the same mask: the
generator is loaded as the diffusers pipeline it is saved as (`siamdiff.sample.pipeline.SiameseDiffusionPipeline`,
verified file by file) and sampled with its loop (hint once per image, both halves in one batch).
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

from siamdiff.params_schema import validate_section
from siamdiff.utils import SiamdiffError, atomic_path, load_params, log, main_guard

STAGE = "sample"


def check_params(p: dict) -> dict:
    """The `sample` section, validated by the params schema (siamdiff/params_schema.py)."""
    return validate_section(STAGE, p)


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
    from siamdiff.model.registry import folder_hash
    from siamdiff.sample.generate import generate_pairs, write_pairs
    from siamdiff.sample.pipeline import load_pipeline

    p = check_params(params)
    root = Path(root)
    model_dir, prep, out = root / "models/siamese", root / "data/prep", root / "data/samples"
    gen = load_pipeline(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    model_hash = gen.folder_hash or folder_hash(model_dir)  # verified against its record by load_pipeline
    prompt = p["prompt"] if p["prompt"] is not None else gen.config.default_prompt
    size = int(gen.config.image_size)
    test_rows, _, test_mask = load_split(prep, "test")
    train_rows, _, train_mask = load_split(prep, "train")
    if not len(test_rows):
        raise SiamdiffError(f"{prep}/test.safetensors: the test split is empty; protocol A needs test masks")
    if not len(train_rows):
        raise SiamdiffError(f"{prep}/train.safetensors: the train split is empty; protocol B needs train masks")
    if test_mask.shape[-1] != size:
        raise SiamdiffError(f"{prep}: masks are {test_mask.shape[-1]} px but {model_dir} generates {size} px; "
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
        from siamdiff.utils import progress as progress_bar

        bar = progress_bar(total=len(flat), desc="sample", unit="img")
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
