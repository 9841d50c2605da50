"""Bad-input cases (issue 14, item 4): damaged model folders are refused when loaded, naming the file.

Each model folder's siamdiff.json records the SHA-256 of every file (`registry.write_record`); encode,
backbone, train, sample and `siamdiff generate` check it before loading (`registry.verify_model`), the
segmenter checks the SHA-256 in its config.json. A byte flipped inside the tensor data still parses, so
without the check it would be used silently (seen: all-black images with exit 0).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_registry import case  # noqa: E402
from project_params import section  # noqa: E402

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def flip(path: Path, n: int = 8) -> Path:
    """Flip `n` bytes in the middle of a file (inside the tensor data of a safetensors file: it still loads)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def recorded_autoencoder(root: Path) -> Path:
    """models/autoencoder as the autoencoder stage leaves it: diffusers files + siamdiff.json."""
    from siamdiff.model.registry import write_record
    from test_latent_cache import make_autoencoder

    make_autoencoder(root)
    write_record(root / "models/autoencoder", {}, {}, kind="autoencoder")
    return root / "models/autoencoder"


def recorded_generator(folder: Path) -> Path:
    from siamdiff.model.generator import save_generator
    from test_sample_ddim import tiny_parts

    p = tiny_parts()
    save_generator(folder, p["controlnet"], p["unet"], p["vae"], p["tokenizer"], p["text_encoder"], p["color_stats"],
                   {"params": {}, "inputs": {}, "prompt": p["prompt"], "size": p["size"], "stage": "train"},
                   scheduler=p["scheduler"])
    return folder


def train_project(root: Path) -> Path:
    """The tiny train project of tests/test_train_stage.py, its models recorded as the stages record them."""
    from siamdiff.model.registry import write_record
    from test_train_stage import make_project

    make_project(root)
    write_record(root / "models/autoencoder", {}, {}, kind="autoencoder")
    write_record(root / "models/backbone", {}, {}, kind="backbone")
    return root


def _train(root: Path):
    from stages.train import run

    params = section("train", steps=2, batch_size=3, checkpoint_every=1, preview_every=0, preview_images=1,
                     preview_steps=1, prompt="a polyp")
    return lambda: run(params, root=root, progress=False)


@case("encode: autoencoder weights damaged")
def _(tmp, mp):
    from stages.encode import run
    from tiny_sd import make_prep
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    bad = flip(recorded_autoencoder(tmp) / DIFFUSERS_WEIGHTS)
    return lambda: run(section("encode", views=1, batch_size=2), tmp, progress=False), str(bad)


@case("encode: autoencoder config.json edited")
def _(tmp, mp):
    from stages.encode import run
    from tiny_sd import make_prep
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    cfg = recorded_autoencoder(tmp) / "config.json"
    cfg.write_text(cfg.read_text().replace('"scaling_factor": 0.18215', '"scaling_factor": 0.5'))
    return lambda: run(section("encode", views=1, batch_size=2), tmp, progress=False), str(cfg)


@case("backbone: autoencoder weights damaged")
def _(tmp, mp):
    from stages.backbone import run
    bad = flip(recorded_autoencoder(tmp) / DIFFUSERS_WEIGHTS)
    return lambda: run(section("backbone", preview_samples=0), tmp, progress=False), str(bad)


@case("train: backbone UNet weights damaged")
def _(tmp, mp):
    root = train_project(tmp)
    bad = flip(root / "models/backbone/unet" / DIFFUSERS_WEIGHTS)
    return _train(root), str(bad)


@case("train: backbone text encoder weights damaged")
def _(tmp, mp):
    root = train_project(tmp)
    bad = flip(root / "models/backbone/text_encoder/model.safetensors")
    return _train(root), str(bad)


@case("train: autoencoder weights damaged")
def _(tmp, mp):
    root = train_project(tmp)
    bad = flip(root / "models/autoencoder" / DIFFUSERS_WEIGHTS)
    return _train(root), str(bad)


@case("sample: ControlNet weights damaged")
def _(tmp, mp):
    from stages.sample import run
    model = recorded_generator(tmp / "models/siamese")
    bad = flip(model / "controlnet" / DIFFUSERS_WEIGHTS)
    return lambda: run(section("sample"), tmp, progress=False), str(bad)


@case("sample: a weight file missing from the generator")
def _(tmp, mp):
    from stages.sample import run
    model = recorded_generator(tmp / "models/siamese")
    gone = model / "unet" / DIFFUSERS_WEIGHTS
    gone.unlink()
    return lambda: run(section("sample"), tmp, progress=False), str(gone)


@case("sample: a file added to the generator")
def _(tmp, mp):
    from stages.sample import run
    model = recorded_generator(tmp / "models/siamese")
    extra = model / "controlnet" / "diffusion_pytorch_model.fp16.safetensors"
    extra.write_bytes((model / "controlnet" / DIFFUSERS_WEIGHTS).read_bytes())
    return lambda: run(section("sample"), tmp, progress=False), str(extra)


@case("sample: generator record not JSON")
def _(tmp, mp):
    from stages.sample import run
    model = recorded_generator(tmp / "models/siamese")
    (model / "siamdiff.json").write_bytes(b"\x00\xff{ not json")
    return lambda: run(section("sample"), tmp, progress=False), str(model / "siamdiff.json")


@case("generate: ControlNet weights damaged")
def _(tmp, mp):
    import numpy as np
    from PIL import Image

    from siamdiff.sample.generate import generate_from_folder
    model = recorded_generator(tmp / "model")
    bad = flip(model / "controlnet" / DIFFUSERS_WEIGHTS)
    (tmp / "masks").mkdir()
    m = np.zeros((16, 16), np.uint8)
    m[4:10, 4:10] = 255
    Image.fromarray(m).save(tmp / "masks" / "a.png")
    return lambda: generate_from_folder(model, tmp / "masks", tmp / "out", progress=False), str(bad)


@case("segment: segmenter weights damaged")
def _(tmp, mp):
    from siamdiff.metrics.segmentation import WEIGHTS, build_unet, load_segmenter, save_segmenter
    save_segmenter(build_unet([4, 8], 0), tmp / "seg", {"channels": [4, 8], "num_res_units": 0})
    bad = flip(tmp / "seg" / WEIGHTS)
    return lambda: load_segmenter(tmp / "seg"), str(bad)
