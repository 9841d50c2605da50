"""`make_tiny_sd(folder)`: a tiny diffusers Stable-Diffusion-1.5-layout folder, written with save_pretrained.

vae/ (AutoencoderKL, 8x downsampling, 4 latent channels, scaling 0.18215), unet/ (UNet2DConditionModel),
text_encoder/ (CLIPTextModel), tokenizer/ (CLIP BPE files: vocab.json + merges.txt, as SD ships them),
scheduler/ (SD-1.5's PNDMScheduler config), model_index.json. Random weights; a few hundred KB in all.
Used by tests that exercise the `paper` code path offline.
"""
from __future__ import annotations

import json
from pathlib import Path

TEXT_WIDTH = 32
SD15_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}


def _byte_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_clip_tokenizer(folder: Path, max_length: int = 77) -> int:
    """CLIP's files (vocab.json, merges.txt, tokenizer_config.json) with a byte vocabulary + a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["a n</w>", "o f</w>", "p o", "po l", "pol y", "poly p</w>", "i m", "im a", "ima g", "imag e</w>"]
    for m in merges:
        vocab.setdefault("".join(m.split()), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>"}))
    return len(vocab)


def make_tiny_sd(folder, latent_channels: int = 4, text_width: int = TEXT_WIDTH, max_length: int = 77,
                 seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
        scaling_factor=0.18215)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=text_width, attention_head_dim=4,
        norm_num_groups=8)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vocab_size = write_clip_tokenizer(folder / "tokenizer", max_length)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=text_width, intermediate_size=2 * text_width, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=max_length, projection_dim=text_width,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    text.save_pretrained(folder / "text_encoder", safe_serialization=True)
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)  # written as SD-1.5 ships it
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **SD15_SCHEDULER}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=2))
    return folder


def make_prep(root, n_train: int = 24, n_val: int = 6, n_test: int = 6, size: int = 32, seed: int = 0,
              synthetic: bool = False) -> Path:
    """A small `data/prep/` in the ARCHITECTURE.md format under `root` (rgb colour space).

    synthetic=False: smooth random blobs (fast); True: frames of siamdiff's synthetic endoscopy renderer,
    centre-cropped and resized (for benchmarks). Returns `root/data/prep`.
    """
    import csv
    import hashlib

    import cv2
    import numpy as np
    from safetensors.numpy import save_file

    prep = Path(root) / "data" / "prep"
    prep.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = []
    if synthetic:
        from siamdiff.data.synthetic import render_patient

        patient = 0
        while len(frames) < n_train + n_val + n_test:
            for f, img, mask in render_patient(seed, 0, patient, 192, 144, 6):
                s = min(img.shape[:2])
                y, x = (img.shape[0] - s) // 2, (img.shape[1] - s) // 2
                img = cv2.resize(img[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_AREA)
                mask = cv2.resize(mask[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_NEAREST)
                frames.append((f"p{patient:03d}", f, img, mask))
            patient += 1
    else:
        yy, xx = np.mgrid[0:size, 0:size] / size
        for i in range(n_train + n_val + n_test):
            base = rng.uniform(60, 200, 3)
            cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
            mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)
            shade = 40 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy)
            img = base[None, None] + shade[..., None] + 50 * mask[..., None] * np.array([1.0, -0.5, -0.5])
            frames.append((f"p{i // 3:03d}", i % 3, np.clip(img, 0, 255).astype(np.uint8), mask))
    frames = frames[:n_train + n_val + n_test]
    splits = {"train": frames[:n_train], "val": frames[n_train:n_train + n_val], "test": frames[n_train + n_val:]}
    rows = []
    for split, items in splits.items():
        rgb = np.stack([f[2] for f in items]) if items else np.zeros((0, size, size, 3), np.uint8)
        mask = np.stack([f[3] for f in items]) if items else np.zeros((0, size, size), np.uint8)
        save_file({"rgb": np.ascontiguousarray(rgb), "mask": np.ascontiguousarray(mask)}, str(prep / f"{split}.safetensors"))
        for row, (patient, frame, img, m) in enumerate(items):
            item_id = f"fixture-{patient}-{frame}"
            rows.append({"id": item_id, "split": split, "dataset": "fixture", "patient": patient, "frame": frame,
                         "row": row, "coverage": float(m.mean()),
                         "image_sha256": hashlib.sha256(img.tobytes()).hexdigest()})
    with open(prep / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (prep / "color_stats.json").write_text(json.dumps(
        {"space": "rgb", "a_mean": None, "a_std": None, "b_mean": None, "b_std": None}))
    return prep
