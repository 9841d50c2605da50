"""The trained generator folder `models/siamese/` (ARCHITECTURE.md): self-contained, diffusers format.

    model_index.json (a `SiameseDiffusionPipeline`, siamdiff/sample/pipeline.py: load it with
    `DiffusionPipeline.from_pretrained` after `import siamdiff`)
    controlnet/ (SiameseControlNet, DHI inside)  unet/  scheduler/ (DDIM)  vae/  text_encoder/  tokenizer/
    color_stats.json  README.md (model card)  siamdiff.json (params, input hashes, prompt, size, colour space,
    the SHA-256 of every file)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamdiff.utils import SiamdiffError

SUBFOLDERS = ("controlnet", "unet", "scheduler", "vae", "text_encoder", "tokenizer")


@dataclass
class Generator:
    controlnet: Any
    unet: Any
    vae: Any
    tokenizer: Any
    text_encoder: Any
    color_stats: Any
    scheduler: Any
    prompt: str
    size: int
    record: dict | None = None
    folder_hash: str | None = None  # the loaded folder's hash (verified against its record)


def save_generator(folder: str | os.PathLike, controlnet, unet, vae, tokenizer, text_encoder, color_stats: dict,
                   record: dict, scheduler=None, metrics: dict | None = None) -> None:
    """Save a `SiameseDiffusionPipeline` (`save_pretrained`: model_index.json + every part, safetensors; the
    scheduler as DDIM on `scheduler`'s betas) + `color_stats.json` + the model card `README.md` + `siamdiff.json`.

    `record` = {"params": ..., "inputs": {name: sha256}, "prompt": str, "size": int, ...}: `params` and
    `inputs` go to `registry.write_record`, the rest is stored beside them (an optional "data":
    {"datasets": {name: rows}} goes into the card). `metrics`: known at save time (the card lists them).
    """
    from siamdiff.model.card import model_card
    from siamdiff.model.registry import write_record
    from siamdiff.model.schedule import make_sampling_scheduler, make_train_scheduler
    from siamdiff.sample.pipeline import SiameseDiffusionPipeline

    folder = Path(folder)
    for key in ("prompt", "size"):
        if key not in record:
            raise ValueError(f"save_generator: record needs {key!r}")
    folder.mkdir(parents=True, exist_ok=True)
    pipe = SiameseDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
        scheduler=make_sampling_scheduler((scheduler or make_train_scheduler()).config),
        color_stats=dict(color_stats), default_prompt=record["prompt"], image_size=int(record["size"]))
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "color_stats.json").write_text(json.dumps(dict(color_stats), indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(model_card(record, dict(color_stats), metrics))
    extra = {k: v for k, v in record.items() if k not in ("params", "inputs")}
    write_record(folder, record.get("params", {}), record.get("inputs", {}), **extra)


def _load_color_stats(path: Path):
    try:
        from siamdiff.data.color import load_stats
    except ImportError:
        return json.loads(path.read_text())
    return load_stats(path)


def load_generator(folder: str | os.PathLike, device: str = "cpu") -> Generator:
    """Load `models/siamese` (or any folder written by `save_generator`), frozen, in eval mode."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from siamdiff.model.controlnet import SiameseControlNet
    from siamdiff.model.registry import read_record, verify_model
    from siamdiff.model.text import load_text

    folder = Path(folder)
    if not folder.is_dir():
        raise SiamdiffError(f"{folder}: generator folder not found; run `dvc repro train`")
    missing = [s for s in SUBFOLDERS if not (folder / s).is_dir()]
    if missing or not (folder / "color_stats.json").is_file() or not (folder / "siamdiff.json").is_file():
        what = ", ".join(missing + [f for f in ("color_stats.json", "siamdiff.json") if not (folder / f).is_file()])
        raise SiamdiffError(f"{folder}: not a siamdiff generator (missing {what}); point at the train stage's "
                            "output models/siamese")
    record = read_record(folder)
    digest = verify_model(folder, stage="train")  # every weight file's SHA-256, before any is loaded
    try:
        controlnet = SiameseControlNet.from_pretrained(folder / "controlnet", local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise SiamdiffError(f"{folder}: cannot load the generator ({e}); rerun `dvc repro train`") from e
    tokenizer, text_encoder = load_text(folder)
    for m in (controlnet, unet, vae, text_encoder):
        m.to(device).eval().requires_grad_(False)
    return Generator(controlnet=controlnet, unet=unet, vae=vae, tokenizer=tokenizer, text_encoder=text_encoder,
                     color_stats=_load_color_stats(folder / "color_stats.json"), scheduler=scheduler,
                     prompt=record.get("prompt", ""), size=int(record.get("size", 0)), record=record,
                     folder_hash=digest)
