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

import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import load_params, log, main_guard

STAGE = "sample"


def check_params(p: dict) -> dict:
    """The `sample` section, validated by the params schema (siamdiff/params_schema.py)."""
    return validate_section(STAGE, p)


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    import torch

    from siamdiff.model.registry import folder_hash
    from siamdiff.sample.generate import generate_pairs, protocol_jobs, protocol_masks, train_subset, write_protocols
    from siamdiff.sample.pipeline import load_pipeline

    p = check_params(params)
    root = Path(root)
    model_dir, prep, out = root / "models/siamese", root / "data/prep", root / "data/samples"
    gen = load_pipeline(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    model_hash = gen.folder_hash or folder_hash(model_dir)  # verified against its record by load_pipeline
    prompt = p["prompt"] if p["prompt"] is not None else gen.config.default_prompt
    test_rows, test_mask, train_rows, train_mask = protocol_masks(prep, int(gen.config.image_size), model_dir)
    sub = train_subset(train_rows, p["train_fraction"])
    log(STAGE, f"read {model_dir} ({model_hash[:12]}), {len(test_rows)} test and {len(train_rows)} train masks "
               f"from {prep}; protocol B / augment use {len(sub)} train masks")

    # every (mask, seed, sample) to draw, as one list so batches stay full
    jobs = protocol_jobs(test_rows, test_mask, train_rows, train_mask, sub, p["seeds"], p["k"], p["augment_k"])
    flat = [job for name in jobs for job in jobs[name]]
    log(STAGE, f"{len(flat)} images: {p['steps']} DDIM steps, guidance {p['guidance']}, batch {p['batch_size']}, "
               f"prompt {prompt!r}")
    t0 = time.time()
    rgb = generate_pairs(gen, torch.stack([j[1] for j in flat]), [j[0] for j in flat], [j[2] for j in flat], prompt,
                         p["steps"], p["guidance"], p["batch_size"], "sample" if progress else None)
    seconds = time.time() - t0
    counts = write_protocols(out, jobs, rgb, prompt, model_hash)
    log(STAGE, f"wrote {out}/: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" pairs in {seconds:.0f} s ({seconds / max(len(flat), 1):.2f} s/image)")
    return {"counts": counts, "seconds": seconds}


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
