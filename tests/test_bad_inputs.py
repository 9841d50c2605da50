"""The bad-input matrix (issue 7): every known bad input, stage by stage, gives exactly one clear error.

Each case builds the smallest project it needs in a temporary folder and returns a call that must raise
a single `SiamdiffError` (nothing else, no traceback-worthy exception) whose one-line message names the
offending file or parameter. Everything runs in-process (no models are trained). The count is printed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_registry import CASES, case, load_case_modules  # noqa: E402
from project_params import section  # noqa: E402
from siamdiff.utils import SiamdiffError  # noqa: E402
from test_data_ingest import make_folder  # noqa: E402
from test_latent_cache import ENCODE, make_autoencoder  # noqa: E402
from tiny_sd import make_prep, make_tiny_sd  # noqa: E402


# --------------------------------------------------------------------------------------------- helpers
def _ingest(tmp, sources):
    from siamdiff.data.sources import ingest

    return lambda: ingest({"sources": sources}, raw_dir=tmp / "data/raw", plot_path=None)


def _raw(tmp, patients=2, frames=2):
    """A small ingested data/raw (synthetic, verified by its manifest)."""
    from siamdiff.data.sources import ingest

    return ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": patients, "frames_per_patient": frames,
                                "datasets": ["synth-b"]}]}, raw_dir=tmp / "data/raw", plot_path=None)


def _stage_main(tmp, monkeypatch, module, params_yaml: str):
    """Run a stage's main() from a project root holding `params_yaml` (as `python -m stages.X` would)."""
    (tmp / "params.yaml").write_text(params_yaml)
    monkeypatch.chdir(tmp)
    return module.main


def _folder_source(tmp):
    root = tmp / "src"
    make_folder(root, n=3)
    return root, [{"type": "folder", "path": str(root), "dataset": "a"}]


# ---------------------------------------------------------------------------------------- params files
@case("params.yaml missing")
def _(tmp, mp):
    from siamdiff.utils import load_params
    return lambda: load_params("split", tmp / "params.yaml"), "params.yaml"


@case("params.yaml without the stage's section")
def _(tmp, mp):
    from siamdiff.utils import load_params
    (tmp / "params.yaml").write_text("seed: 0\n")
    return lambda: load_params("split", tmp / "params.yaml"), "'split'"


@case("profile: unknown name")
def _(tmp, mp):
    from siamdiff import profile
    (tmp / "params.yaml").write_text("seed: 0\n")
    profiles = Path(__file__).resolve().parents[1] / "configs" / "profiles"
    return lambda: profile.apply("nope", tmp / "params.yaml", profiles), "nope"


# -------------------------------------------------------------------------------------------- ingest
@case("ingest: unknown source type")
def _(tmp, mp):
    return _ingest(tmp, [{"type": "nosuch"}]), "nosuch"


@case("ingest: no sources")
def _(tmp, mp):
    return _ingest(tmp, []), "ingest.sources"


@case("ingest: source folder missing")
def _(tmp, mp):
    return _ingest(tmp, [{"type": "folder", "path": str(tmp / "missing"), "dataset": "a"}]), str(tmp / "missing")


@case("ingest: empty source folder")
def _(tmp, mp):
    (tmp / "empty").mkdir()
    return _ingest(tmp, [{"type": "folder", "path": str(tmp / "empty"), "dataset": "a"}]), str(tmp / "empty")


@case("ingest: folder source without a dataset name")
def _(tmp, mp):
    root, _ = _folder_source(tmp)
    return _ingest(tmp, [{"type": "folder", "path": str(root)}]), "dataset"


@case("ingest: kvasir-seg folder missing")
def _(tmp, mp):
    (tmp / "kv").mkdir()
    return _ingest(tmp, [{"type": "kvasir-seg", "path": str(tmp / "kv")}]), str(tmp / "kv")


@case("ingest: source limit not positive")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    return _ingest(tmp, [{**src[0], "limit": 0}]), "limit"


@case("ingest: synthetic patients 0")
def _(tmp, mp):
    return _ingest(tmp, [{"type": "synthetic", "seed": 0, "patients": 0, "frames_per_patient": 1}]), "patients"


@case("ingest: synthetic unknown sub-dataset")
def _(tmp, mp):
    return _ingest(tmp, [{"type": "synthetic", "seed": 0, "patients": 1, "frames_per_patient": 1,
                          "datasets": ["nope"]}]), "datasets"


@case("ingest: image without a mask")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    (root / "mask" / "case1.png").unlink()
    return _ingest(tmp, src), "case1.png"


@case("ingest: mask without an image")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    (root / "img" / "case2.png").unlink()
    return _ingest(tmp, src), "case2.png"


@case("ingest: truncated image")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    bad = root / "img" / "case1.png"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return _ingest(tmp, src), str(bad)


@case("ingest: zero-byte image")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    (root / "img" / "case0.png").write_bytes(b"")
    return _ingest(tmp, src), "case0.png"


@case("ingest: non-image bytes with an image name")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    (root / "img" / "case2.png").write_bytes(b"not an image at all" * 10)
    return _ingest(tmp, src), "case2.png"


@case("ingest: non-binary mask")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    cv2.imwrite(str(root / "mask" / "case1.png"), np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1)))
    return _ingest(tmp, src), "case1.png"


@case("ingest: image and mask of different sizes")
def _(tmp, mp):
    root, src = _folder_source(tmp)
    cv2.imwrite(str(root / "mask" / "case0.png"), np.zeros((40, 64), np.uint8))
    return _ingest(tmp, src), "case0.png"


@case("ingest: duplicate ids across sources")
def _(tmp, mp):
    make_folder(tmp / "a", n=2)
    make_folder(tmp / "b", n=2, seed=1)
    return _ingest(tmp, [{"type": "folder", "path": str(tmp / "a"), "dataset": "same"},
                         {"type": "folder", "path": str(tmp / "b"), "dataset": "same"}]), "same-case0-0"


# ------------------------------------------------------------------------------- manifest (after ingest)
@case("manifest: a file changed after ingest (split stage)")
def _(tmp, mp):
    from stages import split
    _raw(tmp)
    victim = tmp / "data/raw/synth-b/img/synth-b-p001-00.png"
    img = cv2.imread(str(victim))
    img[0, 0] = 255 - img[0, 0]
    cv2.imwrite(str(victim), img)
    return _stage_main(tmp, mp, split, "split:\n  fractions: [0.8, 0.1, 0.1]\n"), str(victim.relative_to(tmp))


@case("manifest: a file added after ingest (preprocess)")
def _(tmp, mp):
    from siamdiff.data.preprocess import run
    _raw(tmp)
    extra = tmp / "data/raw/synth-b/img/stray.png"
    extra.write_bytes(b"x")
    return lambda: run({"size": 16}, raw_dir=tmp / "data/raw", split_csv=tmp / "split.csv",
                       out_dir=tmp / "prep"), "stray.png"


@case("manifest: a listed file deleted")
def _(tmp, mp):
    from siamdiff.data import manifest as mf
    _raw(tmp)
    victim = tmp / "data/raw/synth-b/mask/synth-b-p000-01_mask.png"
    victim.unlink()
    return lambda: mf.verify(tmp / "data/raw"), str(victim)


@case("manifest: missing (data/raw never ingested)")
def _(tmp, mp):
    from siamdiff.data import manifest as mf
    (tmp / "data/raw").mkdir(parents=True)
    return lambda: mf.verify(tmp / "data/raw"), "manifest"


# --------------------------------------------------------------------------------------------- split
def _split(tmp, mp, fractions):
    from stages import split
    return _stage_main(tmp, mp, split, f"split:\n  fractions: {json.dumps(fractions)}\n")


@case("split: fractions do not sum to 1")
def _(tmp, mp):
    return _split(tmp, mp, [0.8, 0.1, 0.2]), "split.fractions"


@case("split: two fractions")
def _(tmp, mp):
    return _split(tmp, mp, [0.8, 0.2]), "split.fractions"


@case("split: negative fraction")
def _(tmp, mp):
    return _split(tmp, mp, [1.2, -0.1, -0.1]), "split.fractions"


@case("split: non-numeric fraction")
def _(tmp, mp):
    return _split(tmp, mp, [0.5, 0.5, "x"]), "split.fractions"


@case("split: a partition would be empty")
def _(tmp, mp):
    from siamdiff.data.split import assign
    items = [{"id": f"d-p{p}-{f}", "dataset": "d", "patient": f"p{p}", "frame": str(f)} for p in range(2) for f in range(2)]
    return lambda: assign(items, [0.8, 0.1, 0.1]), "partition"


# ---------------------------------------------------------------------------------------- preprocess
def _preprocess(tmp, params, *, stale_split=False):
    from siamdiff.data.preprocess import run
    from test_data_preprocess import _split_csv
    manifest = _raw(tmp)
    _split_csv(tmp / "split.csv", manifest)
    if stale_split:
        lines = (tmp / "split.csv").read_text().splitlines()
        (tmp / "split.csv").write_text("\n".join(lines[:-1]) + "\n")
    return lambda: run(params, raw_dir=tmp / "data/raw", split_csv=tmp / "split.csv", out_dir=tmp / "prep")


@case("preprocess: negative size")
def _(tmp, mp):
    return _preprocess(tmp, {"size": -3}), "preprocess.size"


@case("preprocess: size as a string")
def _(tmp, mp):
    return _preprocess(tmp, {"size": "64"}), "preprocess.size"


@case("preprocess: unknown colour space")
def _(tmp, mp):
    return _preprocess(tmp, {"size": 16, "color_space": "hsv"}), "preprocess.color_space"


@case("preprocess: unknown fit")
def _(tmp, mp):
    return _preprocess(tmp, {"size": 16, "fit": "stretch"}), "preprocess.fit"


@case("preprocess: split.csv stale against the manifest")
def _(tmp, mp):
    return _preprocess(tmp, {"size": 16}, stale_split=True), "split.csv"


@case("preprocess: split.csv missing")
def _(tmp, mp):
    from siamdiff.data.preprocess import run
    _raw(tmp)
    return lambda: run({"size": 16}, raw_dir=tmp / "data/raw", split_csv=tmp / "none.csv", out_dir=tmp / "prep"), \
        "none.csv"


@case("preprocess: colour stats lack a_std (lab)")
def _(tmp, mp):
    from siamdiff.data.color import load_stats
    (tmp / "color_stats.json").write_text(json.dumps({"space": "lab", "a_mean": 1.0}))
    return lambda: load_stats(tmp / "color_stats.json"), "a_std"


@case("prep: safetensors file truncated")
def _(tmp, mp):
    from siamdiff.data.prep import load_split
    prep = make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    f = prep / "train.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    return lambda: load_split(prep, "train"), str(f)


# --------------------------------------------------------------------------------------- autoencoder
AE = {"mode": "demo", "pretrained": None, "downsample_factor": 2, "latent_channels": 4, "widths": [8, 16],
      "layers_per_block": 1, "norm_groups": 2, "steps": 1, "batch_size": 2, "crop": None, "lr": 1e-3, "kl_weight": 1e-6, "seed": 0}


def _ae(tmp, size=16, **params):
    from stages.autoencoder import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=size)
    return lambda: run({**AE, **params}, tmp, progress=False)


@case("autoencoder: unknown mode")
def _(tmp, mp):
    return _ae(tmp, mode="sd"), "autoencoder.mode"


@case("autoencoder: downsample_factor does not divide preprocess.size")
def _(tmp, mp):
    return _ae(tmp, size=18, downsample_factor=4, widths=[8, 8, 8]), "downsample_factor"


@case("autoencoder: downsample_factor not a power of two")
def _(tmp, mp):
    return _ae(tmp, downsample_factor=3), "downsample_factor"


@case("autoencoder: widths do not match downsample_factor")
def _(tmp, mp):
    return _ae(tmp, widths=[8, 8, 8]), "autoencoder.widths"


@case("autoencoder: norm_groups do not divide widths")
def _(tmp, mp):
    return _ae(tmp, norm_groups=3), "autoencoder.norm_groups"


@case("autoencoder: paper mode without pretrained")
def _(tmp, mp):
    return _ae(tmp, mode="paper", pretrained=None, downsample_factor=8), "autoencoder.pretrained"


@case("autoencoder: paper pretrained folder missing")
def _(tmp, mp):
    return _ae(tmp, mode="paper", pretrained=str(tmp / "nowhere"), downsample_factor=8), str(tmp / "nowhere")


@case("autoencoder: paper pretrained not a diffusers folder")
def _(tmp, mp):
    (tmp / "junk" / "vae").mkdir(parents=True)
    return _ae(tmp, mode="paper", pretrained=str(tmp / "junk"), downsample_factor=8), str(tmp / "junk")


@case("autoencoder: paper VAE latent channels differ")
def _(tmp, mp):
    sd = make_tiny_sd(tmp / "sd")
    return _ae(tmp, mode="paper", pretrained=str(sd), downsample_factor=8, latent_channels=8), "latent"


@case("autoencoder: prep missing")
def _(tmp, mp):
    from stages.autoencoder import run
    return lambda: run(AE, tmp, progress=False), "data/prep"


# -------------------------------------------------------------------------------------------- encode
def _encode(tmp, size=16, autoencoder=True, **params):
    from stages.encode import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=size)
    if autoencoder:
        make_autoencoder(tmp)
    return lambda: run({**ENCODE, **params}, tmp, progress=False)


@case("encode: views 0")
def _(tmp, mp):
    return _encode(tmp, views=0), "encode.views"


@case("encode: batch_size 0")
def _(tmp, mp):
    return _encode(tmp, batch_size=0), "encode.batch_size"


@case("encode: no autoencoder")
def _(tmp, mp):
    return _encode(tmp, autoencoder=False), "models/autoencoder"


@case("encode: image size not divisible by the autoencoder's factor")
def _(tmp, mp):
    return _encode(tmp, size=15), "data/prep"


# ------------------------------------------------------------------------------------------ backbone
BB = {"mode": "demo", "prompt": "p", "widths": [16, 32], "layers_per_block": 1, "cross_attention_dim": 16,
      "attention_head_dim": 4, "norm_groups": 8, "text_width": 16, "text_layers": 1, "text_heads": 2, "steps": 1,
      "batch_size": 2, "lr": 1e-3, "prompt_dropout": 0.0, "preview_samples": 0, "seed": 0,
      "pretrained": None, "snr_gamma": None, "ema_decay": None, "mixed_precision": "no", "preview_steps": 2, "preview_guidance": 3.0}


@case("backbone: unknown mode")
def _(tmp, mp):
    from stages.backbone import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    return lambda: run({**BB, "mode": "sd"}, tmp, progress=False), "backbone.mode"


@case("backbone: snr_gamma not a positive number")
def _(tmp, mp):
    from stages.backbone import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    return lambda: run({**BB, "snr_gamma": 0}, tmp, progress=False), "backbone.snr_gamma"


@case("backbone: no autoencoder")
def _(tmp, mp):
    from stages.backbone import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    return lambda: run(BB, tmp, progress=False), "models/autoencoder"


@case("backbone: encode not run")
def _(tmp, mp):
    from stages.backbone import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    make_autoencoder(tmp)
    return lambda: run(BB, tmp, progress=False), "encoded.csv"


@case("backbone: paper pretrained missing")
def _(tmp, mp):
    from stages.backbone import run
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    make_autoencoder(tmp)
    return lambda: run(section("backbone", mode="paper", pretrained=str(tmp / "nowhere"), prompt="", preview_samples=0),
                       tmp, progress=False), str(tmp / "nowhere")


# --------------------------------------------------------------------------------------------- train
def _train_cfg(**params):
    from siamdiff.train.loop import TrainConfig
    return lambda: TrainConfig.from_params(section("train", **{"steps": 2, "batch_size": 2, **params}))


@case("train: unknown loss")
def _(tmp, mp):
    return _train_cfg(loss="both"), "train.loss"


@case("train: unknown parameter")
def _(tmp, mp):
    return _train_cfg(lambda_cc=2), "train.lambda_cc"


@case("train: steps 0")
def _(tmp, mp):
    return _train_cfg(steps=0), "train.steps"


@case("train: batch_size 0")
def _(tmp, mp):
    return _train_cfg(batch_size=0), "train.batch_size"


@case("train: negative lr")
def _(tmp, mp):
    return _train_cfg(lr=-1e-4), "train.lr"


@case("train: prompt_dropout above 1")
def _(tmp, mp):
    return _train_cfg(prompt_dropout=1.5), "train.prompt_dropout"


@case("train: unknown lr_schedule")
def _(tmp, mp):
    return _train_cfg(lr_schedule="linear"), "train.lr_schedule"


@case("train: unknown step_impl")
def _(tmp, mp):
    return _train_cfg(step_impl="fast"), "train.step_impl"


@case("train: unknown mixed_precision")
def _(tmp, mp):
    return _train_cfg(mixed_precision="fp8"), "train.mixed_precision"


@case("train: grad_accumulation 0")
def _(tmp, mp):
    return _train_cfg(grad_accumulation=0), "train.grad_accumulation"


@case("train: batch not divisible by SIAMDIFF_PROCESSES (checked before launching)")
def _(tmp, mp):
    from stages import train
    mp.setenv("SIAMDIFF_PROCESSES", "2")
    mp.delenv("WORLD_SIZE", raising=False)
    return _stage_main(tmp, mp, train, json.dumps({"train": section("train", steps=2, batch_size=3)})), \
        "train.batch_size"


@case("train: batch not divisible by WORLD_SIZE (under a launcher)")
def _(tmp, mp):
    from stages import train
    mp.setenv("WORLD_SIZE", "2")
    return lambda: train.run(section("train", steps=2, batch_size=3), root=tmp, progress=False), "train.batch_size"


@case("train: SIAMDIFF_PROCESSES not a number")
def _(tmp, mp):
    from stages import train
    mp.setenv("SIAMDIFF_PROCESSES", "two")
    return _stage_main(tmp, mp, train, "train:\n  steps: 2\n"), "SIAMDIFF_PROCESSES"


@case("train: encode not run")
def _(tmp, mp):
    from stages import train
    make_prep(tmp, n_train=2, n_val=1, n_test=1, size=16)
    make_autoencoder(tmp)
    return lambda: train.run(section("train", steps=2, batch_size=2), root=tmp, progress=False), "encoded.csv"


@case("train: latent cache missing")
def _(tmp, mp):
    from stages.train import load_train_data
    (tmp / "data").mkdir()
    (tmp / "data/encoded.csv").write_text("id,split,view,key,coverage\nd-p-0,train,0,k,0.1\n")
    return lambda: load_train_data(tmp), "latents.lmdb"


@case("train: a latent missing from the cache")
def _(tmp, mp):
    import torch

    from siamdiff.data.latent_cache import LatentCache
    from stages.train import load_train_data
    with LatentCache(tmp / "data/latents.lmdb") as c:
        c.put("present", {"latent_mean": torch.zeros(1)})
    (tmp / "data/encoded.csv").write_text("id,split,view,key,coverage\nd-p-0,train,0,absent,0.1\n")
    return lambda: load_train_data(tmp), "latents.lmdb"


# -------------------------------------------------------------------------------------------- sample
def _sample(**params):
    from stages.sample import check_params
    return lambda: check_params(section("sample", **params))


@case("sample: guidance negative")
def _(tmp, mp):
    return _sample(guidance=-1.0), "sample.guidance"


@case("sample: steps 0")
def _(tmp, mp):
    return _sample(steps=0), "sample.steps"


@case("sample: k 0")
def _(tmp, mp):
    return _sample(k=0), "sample.k"


@case("sample: fewer seeds than k")
def _(tmp, mp):
    return _sample(k=5, seeds=[0, 1]), "sample.seeds"


@case("sample: train_fraction 0")
def _(tmp, mp):
    return _sample(train_fraction=0), "sample.train_fraction"


@case("sample: augment_k above the number of seeds")
def _(tmp, mp):
    return _sample(seeds=[0, 1], k=1, augment_k=3), "sample.augment_k"


@case("sample: batch_size 0")
def _(tmp, mp):
    return _sample(batch_size=0), "sample.batch_size"


@case("sample: prompt not a string")
def _(tmp, mp):
    return _sample(prompt=3), "sample.prompt"


@case("sample: no trained generator")
def _(tmp, mp):
    from stages.sample import run
    return lambda: run(section("sample"), tmp, progress=False), "models/siamese"


# ---------------------------------------------------------------------------------- siamdiff generate
def _masks(tmp):
    d = tmp / "masks"
    d.mkdir()
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 8:20] = 255
    cv2.imwrite(str(d / "a_mask.png"), m)
    return d


def _generate(tmp, masks, model=None, **kw):
    from siamdiff.sample.generate import generate_from_folder
    if model is None:
        model = tmp / "model"
        model.mkdir(exist_ok=True)
    return lambda: generate_from_folder(model, masks, tmp / "out", steps=kw.pop("steps", 1), progress=False, **kw)


@case("generate: empty mask folder")
def _(tmp, mp):
    (tmp / "masks").mkdir()
    return _generate(tmp, tmp / "masks"), str(tmp / "masks")


@case("generate: non-image files in the mask folder")
def _(tmp, mp):
    d = _masks(tmp)
    (d / "notes.txt").write_text("hello")
    return _generate(tmp, d), "notes.txt"


@case("generate: mask folder missing")
def _(tmp, mp):
    return _generate(tmp, tmp / "nomasks"), str(tmp / "nomasks")


@case("generate: masks is a file")
def _(tmp, mp):
    (tmp / "m.png").write_bytes(b"x")
    return _generate(tmp, tmp / "m.png"), str(tmp / "m.png")


@case("generate: a model folder that is not a siamdiff model")
def _(tmp, mp):
    fake = tmp / "fake-model"
    (fake / "unet").mkdir(parents=True)
    return _generate(tmp, _masks(tmp), model=fake), str(fake)


@case("generate: model folder missing")
def _(tmp, mp):
    return _generate(tmp, _masks(tmp), model=tmp / "nomodel"), str(tmp / "nomodel")


@case("generate: --out not empty")
def _(tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine")
    return _generate(tmp, _masks(tmp)), str(tmp / "out")


@case("generate: -k 0")
def _(tmp, mp):
    return _generate(tmp, _masks(tmp), k=0), "-k"


@case("generate: --steps 0")
def _(tmp, mp):
    return _generate(tmp, _masks(tmp), steps=0), "--steps"


# -------------------------------------------------------------------------------- evaluate / segment
@case("evaluate: batch_size 0")
def _(tmp, mp):
    from stages.evaluate import run
    return lambda: run({"clip_model": None, "batch_size": 0}, tmp, progress=False), "evaluate.batch_size"


@case("evaluate: clip_model not a path")
def _(tmp, mp):
    from stages.evaluate import run
    return lambda: run({"clip_model": 3, "batch_size": 2}, tmp, progress=False), "evaluate.clip_model"


@case("evaluate: clip_model folder missing")
def _(tmp, mp):
    from siamdiff.metrics.clip import clip_status
    return lambda: clip_status(tmp / "missing"), str(tmp / "missing")


@case("evaluate: protocol A sample of a non-test mask")
def _(tmp, mp):
    from siamdiff.metrics.fidelity import real_for
    return lambda: real_for([{"mask_id": "toy-train0-0"}], [{"id": "toy-test0-0"}], "protocol_a"), "protocol_a"


def _segment(**params):
    from stages.segment import check_params
    return lambda: check_params(section("segment", **params))


@case("segment: epochs 0")
def _(tmp, mp):
    return _segment(epochs=0), "segment.epochs"


@case("segment: negative lr")
def _(tmp, mp):
    return _segment(lr=-0.1), "segment.lr"


@case("segment: one channel level")
def _(tmp, mp):
    return _segment(unet={"channels": [16], "num_res_units": 0}), "segment.unet.channels"


@case("segment: threshold 1.5")
def _(tmp, mp):
    return _segment(threshold=1.5), "segment.threshold"


@case("segment: equal_steps not a boolean")
def _(tmp, mp):
    return _segment(equal_steps="yes"), "segment.equal_steps"


@case("segment: not a segmenter folder")
def _(tmp, mp):
    from siamdiff.metrics.segmentation import load_segmenter
    return lambda: load_segmenter(tmp), "segmenter"


# ------------------------------------------------------------------------------------------- the test
load_case_modules()  # tests/bad_inputs_*.py: further cases, one file per area


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, monkeypatch):
    call, named = CASES[name](tmp_path, monkeypatch)
    with pytest.raises(Exception) as e:
        call()
    assert isinstance(e.value, SiamdiffError), f"{name}: {type(e.value).__name__} instead of SiamdiffError: {e.value}"
    msg = str(e.value)
    assert msg.strip() and "\n" not in msg.strip(), f"{name}: not one line: {msg!r}"
    assert named in msg, f"{name}: the message does not name {named!r}: {msg}"


def test_bad_input_matrix_count(capsys):
    with capsys.disabled():
        print(f"\nbad-input matrix: {len(CASES)} cases")
    assert len(CASES) >= 60
