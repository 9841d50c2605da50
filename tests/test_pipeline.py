"""Issue 17, item 3: models/siamese is a diffusers `SiameseDiffusionPipeline` (save -> from_pretrained -> call).

The pipeline's loop must give the same images as the loop the sample stage used before it (kept below as
`reference_loop`, written as siamdiff/sample/ddim.py's `sample_from_masks` was), for the same seeds.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs_models import DIFFUSERS_WEIGHTS, flip  # noqa: E402
from test_sample_ddim import SIZE, _masks, tiny_parts  # noqa: E402

LAB = {"space": "lab", "a_mean": 12.0, "a_std": 9.0, "b_mean": 8.0, "b_std": 11.0}


def save(folder: Path, color_stats=None, **record) -> Path:
    from siamdiff.model.generator import save_generator

    p = tiny_parts()
    save_generator(folder, p["controlnet"], p["unet"], p["vae"], p["tokenizer"], p["text_encoder"],
                   color_stats or p["color_stats"],
                   {"params": {"lr": 1e-5}, "inputs": {}, "prompt": p["prompt"], "size": p["size"], "stage": "train",
                    **record}, scheduler=p["scheduler"], metrics={"loss": 0.25})
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save(tmp_path_factory.mktemp("pipe") / "siamese",
                data={"datasets": {"kvasir-seg": 6, "cvc-clinicdb": 4}})


@torch.inference_mode()
def reference_loop(parts, masks, seeds, prompt, steps, guidance):
    """The sampling loop before the pipeline (hint once, batched CFG) -> working-space float [B,3,S,S]."""
    from siamdiff.model.controlnet import controlnet_residuals
    from siamdiff.model.schedule import make_sampling_scheduler
    from siamdiff.model.text import encode_prompts
    from siamdiff.sample.ddim import initial_noise, latent_shape

    gen = type("G", (), parts)
    mask3 = (masks > 0.5).float().repeat(1, 3, 1, 1)
    latents = initial_noise(seeds, latent_shape(gen, masks.shape[-1]))
    sched = make_sampling_scheduler(gen.scheduler.config)
    sched.set_timesteps(steps)
    latents = latents * sched.init_noise_sigma
    emb = encode_prompts(gen.tokenizer, gen.text_encoder, ["", prompt])
    b = len(seeds)
    text = torch.cat([emb[:1].expand(b, -1, -1), emb[1:2].expand(b, -1, -1)])
    hint = gen.controlnet.controlnet_cond_embedding(mask3)
    hint = torch.cat([hint, hint])
    for t in sched.timesteps:
        z = sched.scale_model_input(torch.cat([latents, latents]), t)
        down, mid = controlnet_residuals(gen.controlnet, z, t, text, hint)
        eps = gen.unet(z, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
        eps_u, eps_c = eps.chunk(2)
        latents = sched.step(eps_u + guidance * (eps_c - eps_u), t, latents, eta=0.0).prev_sample
    return gen.vae.decode(latents / gen.vae.config.scaling_factor).sample.float().clamp(-1, 1)


def test_model_index_and_folder(folder):
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "SiameseDiffusionPipeline"
    assert index["controlnet"] == ["siamdiff.model.controlnet", "SiameseControlNet"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"][0] == "transformers"
    assert index["color_stats"] == {"space": "rgb"} and index["image_size"] == SIZE
    assert index["default_prompt"] == "an endoscopic image of a colon polyp"
    sched = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler" and sched["beta_schedule"] == "scaled_linear"
    assert (sched["steps_offset"], sched["set_alpha_to_one"], sched["clip_sample"]) == (1, False, False)
    record = json.loads((folder / "siamdiff.json").read_text())
    assert {"model_index.json", "README.md", "color_stats.json", "controlnet/" + DIFFUSERS_WEIGHTS} <= set(record["files"])
    card = (folder / "README.md").read_text()
    for text in ("library_name: diffusers", "DiffusionPipeline.from_pretrained", "Kvasir-SEG", "CVC-ClinicDB",
                 "research and educational use only", "Do not redistribute", "Jha", "Bernal", "CVPR 2025",
                 "`kvasir-seg`: 6 rows", "- lr: 1e-05", "- loss: 0.25"):
        assert text in card, text


@pytest.mark.parametrize("entry", ["DiffusionPipeline", "SiameseDiffusionPipeline"])
def test_from_pretrained_gives_the_images_of_the_old_loop(folder, entry):
    import diffusers

    from siamdiff.sample.pipeline import SiameseDiffusionPipeline

    cls = diffusers.DiffusionPipeline if entry == "DiffusionPipeline" else SiameseDiffusionPipeline
    pipe = cls.from_pretrained(folder)
    assert type(pipe) is SiameseDiffusionPipeline and pipe.folder_hash == json.loads(
        (folder / "siamdiff.json").read_text())["folder_hash"]
    pipe.set_progress_bar_config(disable=True)
    masks, seeds = _masks(3), [11, 12, 13]
    out = pipe(mask_image=masks, prompt=pipe.config.default_prompt, num_inference_steps=4, guidance_scale=9.0,
               generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent").images
    working = pipe.decode_working(out)
    ref = reference_loop(tiny_parts(), masks, seeds, pipe.config.default_prompt, 4, 9.0)
    assert (working - ref).abs().max().item() < 1e-6
    pil = pipe(mask_image=masks, num_inference_steps=4, guidance_scale=9.0,
               generator=[torch.Generator().manual_seed(s) for s in seeds]).images  # default: PIL, default prompt
    assert len(pil) == 3 and all(im.mode == "RGB" and im.size == (SIZE, SIZE) for im in pil)
    from siamdiff.data.color import from_working

    assert np.array_equal(np.stack([np.asarray(im) for im in pil]), from_working(ref, {"space": "rgb"}).numpy())


def test_sample_from_masks_is_the_pipeline_loop():
    """The old API (loaded parts, seeds) runs the pipeline: same numbers as the reference loop."""
    from types import SimpleNamespace

    from siamdiff.sample.ddim import sample_from_masks

    parts = tiny_parts()
    masks = _masks(2)
    got = sample_from_masks(SimpleNamespace(**parts), masks, [3, 4], parts["prompt"], steps=3, progress=False,
                            output="working")
    assert (got - reference_loop(parts, masks, [3, 4], parts["prompt"], 3, 9.0)).abs().max().item() < 1e-6


def test_output_types_mask_inputs_and_generators(folder):
    from PIL import Image

    from siamdiff.sample.pipeline import SiameseDiffusionPipeline

    pipe = SiameseDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    m = (_masks(1)[0, 0].numpy() * 255).astype(np.uint8)
    kw = dict(num_inference_steps=2, guidance_scale=9.0)
    a = pipe(mask_image=torch.from_numpy(m), generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    b = pipe(mask_image=Image.fromarray(m), generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    c = pipe(mask_image=m > 0, generator=[torch.Generator().manual_seed(0)], output_type="pt", **kw).images
    assert a.shape == (1, SIZE, SIZE, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and np.array_equal(a, c.permute(0, 2, 3, 1).numpy())
    big = Image.fromarray(m).resize((4 * SIZE, 4 * SIZE), Image.NEAREST)  # resized to the model's size
    d = pipe(mask_image=big, generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    assert d.shape == a.shape
    (e,) = pipe(mask_image=[m, m], generator=torch.Generator().manual_seed(0), return_dict=False, **kw)
    assert len(e) == 2  # one generator draws the whole batch (as diffusers): two different images
    with pytest.raises(ValueError, match="generators for"):
        pipe(mask_image=[m, m], generator=[torch.Generator()], **kw)


def test_lab_working_space_is_converted_back_to_rgb(tmp_path):
    from siamdiff.data.color import from_working
    from siamdiff.sample.pipeline import SiameseDiffusionPipeline

    folder = save(tmp_path / "lab", color_stats=LAB)
    assert json.loads((folder / "model_index.json").read_text())["color_stats"] == LAB
    assert json.loads((folder / "color_stats.json").read_text()) == LAB
    pipe = SiameseDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    def kw():
        return dict(mask_image=_masks(1), num_inference_steps=2, generator=[torch.Generator().manual_seed(5)])

    working = pipe.decode_working(pipe(output_type="latent", **kw()).images)
    rgb = np.asarray(pipe(**kw()).images[0])
    assert np.array_equal(rgb, from_working(working, LAB)[0].numpy())  # Lab -> RGB inside the pipeline
    assert not np.array_equal(rgb, from_working(working, {"space": "rgb"})[0].numpy())


@pytest.mark.parametrize("entry", ["DiffusionPipeline", "SiameseDiffusionPipeline"])
def test_damaged_weights_are_refused_by_name(tmp_path, entry):
    import diffusers

    from siamdiff.sample.pipeline import SiameseDiffusionPipeline
    from siamdiff.utils import SiamdiffError

    folder = save(tmp_path / "siamese")
    victim = flip(folder / "unet" / DIFFUSERS_WEIGHTS)
    cls = diffusers.DiffusionPipeline if entry == "DiffusionPipeline" else SiameseDiffusionPipeline
    with pytest.raises(SiamdiffError) as e:
        cls.from_pretrained(folder)
    msg = str(e.value)
    assert msg.startswith(f"{victim.resolve() if entry == 'DiffusionPipeline' else victim}: SHA-256 differs"), msg
    assert "dvc repro -f -s train" in msg


def test_import_siamdiff_is_enough_for_diffusers(folder):
    """In a fresh interpreter: `import siamdiff` (no torch import), then diffusers' own entry point."""
    code = ("import sys, siamdiff; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules\n"
            "from diffusers import DiffusionPipeline\n"
            f"pipe = DiffusionPipeline.from_pretrained({str(folder)!r})\n"
            "assert type(pipe) is siamdiff.SiameseDiffusionPipeline, type(pipe)\n"
            "print(type(pipe).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).parents[1])
    assert r.returncode == 0 and r.stdout.strip() == "SiameseDiffusionPipeline", r.stderr[-2000:]
