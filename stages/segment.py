"""Stage `segment`: data/prep + data/samples -> models/segmenter, metrics/segmentation.json.

A MONAI segmenter (`segment.network`: UNet, AttentionUnet, SegResNet or SwinUNETR, random init, at its own
input size `segment.input_size`; `siamdiff.metrics.segmentation`) trained on the real TRAIN split:
(a) mask adherence: Dice/IoU of its predictions on the protocol-A generated images vs the masks that
    conditioned them (and, for reference, on the real TEST images and against other images' masks: chance);
(b) downstream: the same network trained on real + synthetic (data/samples/augment: TRAIN masks only) and
    scored on the real TEST split; mDice, mIoU at threshold 0.5, mean over images, next to real-only.
Dice/IoU are computed at the preprocessed size against the unresized masks (the logits are resized back).
`equal_steps: true` gives the real+synthetic run the same number of optimiser steps as the real-only run
(equal compute); false gives it the same number of epochs over its larger set.
metrics/segmentation.json holds the numbers; descriptions, flags and the network and size used go in
metrics/segmentation.info.json.
"""
from __future__ import annotations

import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import SiamdiffError, atomic_path, load_params, log, main_guard, write_metrics

STAGE = "segment"


def check_params(p: dict) -> dict:
    """The `segment` section, validated by the params schema (siamdiff/params_schema.py)."""
    return validate_section(STAGE, p)


def other_masks(rows: list[dict], masks):
    """For each generated image, the conditioning mask of the next distinct test mask id (sorted, cyclic)."""
    import torch

    first = {}
    for r, m in zip(rows, masks):
        first.setdefault(r["mask_id"], m)
    ids = sorted(first)
    if len(ids) < 2:
        return masks
    nxt = {a: first[b] for a, b in zip(ids, ids[1:] + ids[:1])}
    return torch.stack([nxt[r["mask_id"]] for r in rows])


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    import torch

    from siamdiff.data.prep import load_split
    from siamdiff.metrics import segmentation as seg
    from siamdiff.sample.generate import read_pairs

    p = check_params(params)
    seg.check_network(p["network"])  # a missing package: refused before any data is read
    root = Path(root)
    prep, samples = root / "data/prep", root / "data/samples"
    model_dir, metrics_path = root / "models/segmenter", root / "metrics/segmentation.json"
    t0 = time.time()
    _, train_rgb, train_mask = load_split(prep, "train")
    _, test_rgb, test_mask = load_split(prep, "test")
    a_rows, a_rgb, a_mask = read_pairs(samples / "protocol_a")
    aug_rows, aug_rgb, aug_mask = read_pairs(samples / "augment")
    if not len(train_rgb) or not len(test_rgb):
        raise SiamdiffError(f"{prep}: the train or test split is empty; segmentation needs both")
    log(STAGE, f"read {prep} (train {len(train_rgb)}, test {len(test_rgb)}), {samples}/protocol_a {len(a_rows)}, "
               f"{samples}/augment {len(aug_rows)}")
    network, settings, size = p["network"], p[p["network"]], p["input_size"]
    train_kw = dict(network=network, settings=settings, size=size, batch_size=p["batch_size"], lr=p["lr"],
                    seed=p["seed"], progress=progress)
    steps_real = p["epochs"] * ((len(train_rgb) + p["batch_size"] - 1) // p["batch_size"])
    log(STAGE, f"segmenter: {seg.describe(network, settings, size)}")

    t = time.time()
    real_only = seg.train_segmenter(train_rgb, train_mask, epochs=p["epochs"], desc="segmenter (real)", **train_kw)
    log(STAGE, f"trained on {len(train_rgb)} real images, {steps_real} steps, {time.time() - t:.0f} s")
    thr = p["threshold"]
    adherence = seg.score(real_only, a_rgb, a_mask, thr) if len(a_rows) else None
    # chance level: the same images scored against another test image's mask (masks are centred by the
    # preprocess crop, so an image that ignores its mask still overlaps a typical mask)
    chance = seg.score(real_only, a_rgb, other_masks(a_rows, a_mask), thr) if len(a_rows) else None
    real_test = seg.score(real_only, test_rgb, test_mask, thr)

    t = time.time()
    mixed_rgb, mixed_mask = torch.cat([train_rgb, aug_rgb]), torch.cat([train_mask, aug_mask])
    if p["equal_steps"]:
        mixed = seg.train_segmenter(mixed_rgb, mixed_mask, max_steps=steps_real, desc="segmenter (real+syn)", **train_kw)
    else:
        mixed = seg.train_segmenter(mixed_rgb, mixed_mask, epochs=p["epochs"], desc="segmenter (real+syn)", **train_kw)
    log(STAGE, f"trained on {len(train_rgb)} real + {len(aug_rgb)} synthetic images, {time.time() - t:.0f} s")
    mixed_test = seg.score(mixed, test_rgb, test_mask, thr)

    side = int(train_rgb.shape[1])
    config = {"network": network, "settings": settings, "size": size, "in_channels": 3, "out_channels": 1,
              "input": f"RGB in [0, 1], [N,3,S,S], the network at {size or side} px (size: null = S, else bilinear to it); "
                       "output: one logit channel (sigmoid -> foreground), resized back to S",
              "trained_on": f"real train split ({len(train_rgb)} images)", "params": p}
    with atomic_path(model_dir) as tmp:
        seg.save_segmenter(real_only, tmp, config)
        seg.save_segmenter(mixed, tmp / "real_plus_synthetic", {**config, "trained_on":
                           f"real train split + data/samples/augment ({len(train_rgb)} + {len(aug_rgb)} images)"})
    result = {
        "adherence": {
            "description": "real-trained segmenter on protocol-A generated images vs their conditioning masks",
            "dice": adherence["mdice"] if adherence else None, "iou": adherence["miou"] if adherence else None,
            "n": adherence["n"] if adherence else 0,
            "chance_dice": chance["mdice"] if chance else None,
            "chance_description": "the same images vs the mask of the next test image (sorted ids, cyclic)",
            "reference_real_test_dice": real_test["mdice"], "reference_real_test_iou": real_test["miou"],
        },
        "downstream": {
            "description": "scored on the real TEST split; synthetic from TRAIN masks only",
            "real_only": {"mdice": real_test["mdice"], "miou": real_test["miou"], "n_train": len(train_rgb)},
            "real_plus_synthetic": {"mdice": mixed_test["mdice"], "miou": mixed_test["miou"],
                                    "n_train": len(train_rgb) + len(aug_rgb), "n_synthetic": len(aug_rgb)},
            "delta_mdice": mixed_test["mdice"] - real_test["mdice"],
            "delta_miou": mixed_test["miou"] - real_test["miou"],
            "n_test": real_test["n"], "threshold": thr,
            "equal_steps": p["equal_steps"], "steps_real_only": steps_real,
        },
        "network": seg.describe(network, settings, size) + ", Dice+BCE, Adam",
    }
    # which network and input size: text, so into segmentation.info.json (input_size too, though a number)
    info = {"segmenter": {"network": network, "settings": settings, "input_size": size, "input_px": size or side,
                          "scored_px": side, "scored_at": "the preprocessed size, against the unresized masks"}}
    result = write_metrics(metrics_path, result, info)  # numbers; descriptions, flags in segmentation.info.json
    log(STAGE, f"adherence Dice {result['adherence']['dice']}, IoU {result['adherence']['iou']}; test mDice "
               f"real {real_test['mdice']:.3f} vs real+syn {mixed_test['mdice']:.3f}")
    log(STAGE, f"wrote {model_dir}/ and {metrics_path} (+ .info.json) in {time.time() - t0:.0f} s")
    return result


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
