"""The model card `README.md` written into `models/siamese` (Hugging Face model-card layout, YAML front matter).

Data (the datasets the training rows came from and their terms), the training parameters, metrics known when
the model is saved (the train stage's final losses; fidelity and segmentation metrics come later, from
`dvc metrics show`), and how to load and call the pipeline.
"""
from __future__ import annotations

import json

# Terms of the public polyp datasets the pipeline can ingest (DESIGN.md section 3). Both allow research and
# education use only, ask for their papers to be cited, and do not allow redistribution.
DATASET_TERMS = {
    "kvasir-seg": (
        "Kvasir-SEG (Simula): research and educational use only; commercial use is prohibited without permission. "
        "Cite: D. Jha et al., \"Kvasir-SEG: A Segmented Polyp Dataset\", MultiMedia Modeling (MMM) 2020. "
        "Do not redistribute the images or masks (nor this model as a substitute for them); obtain the dataset "
        "from its publisher."),
    "cvc-clinicdb": (
        "CVC-ClinicDB (Computer Vision Center / Hospital Clinic, Barcelona): research and educational use only. "
        "Cite: J. Bernal et al., \"WM-DOVA maps for accurate polyp highlighting in colonoscopy: Validation vs. "
        "saliency maps from physicians\", Computerized Medical Imaging and Graphics 43 (2015) 99-111. Do not "
        "redistribute the images or masks; obtain the dataset from its publisher."),
    "synthetic": "Built-in procedural endoscopy-like images (siamdiff.data.synthetic): no third-party terms.",
}

METHOD = ("Qiu et al., \"Noise-Consistent Siamese-Diffusion for Medical Image Synthesis and Segmentation\", "
          "CVPR 2025")


def dataset_of(row_id: str, known=tuple(DATASET_TERMS)) -> str:
    """The source dataset of a row id `{dataset}-{patient}-{frame}` (longest known prefix; else the first part)."""
    for name in sorted(known, key=len, reverse=True):
        if row_id == name or row_id.startswith(name + "-"):
            return name
    return row_id.split("-", 1)[0]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def model_card(record: dict, color_stats: dict | None, metrics: dict | None = None) -> str:
    """README.md text for a generator folder, from its siamdiff record (params, prompt, size, data counts)."""
    params = record.get("params") or {}
    data = record.get("data") or {}
    datasets = dict(data.get("datasets") or {})
    space = (color_stats or {}).get("space", record.get("color_space", "rgb"))
    size = record.get("size")
    prompt = record.get("prompt", "")
    lines = ["---", "library_name: diffusers", "pipeline_tag: image-to-image", "tags:", "- siamdiff",
             "- siamese-diffusion", "- controlnet", "- medical-imaging", "- polyp-segmentation"]
    if any(d in ("kvasir-seg", "cvc-clinicdb") for d in datasets):
        lines.append("license: other  # the training data's terms apply: research and education only")
    lines += ["---", "", "# Siamese-Diffusion generator (siamdiff)", "",
              f"Mask-conditioned image synthesis after {METHOD}: a Stable-Diffusion-style UNet `U` with a "
              "ControlNet whose hint encoder is the Dense Hint Input (DHI), trained with the Siamese "
              "Mask-/Image-Diffusion losses and Noise Consistency. Sampling is Mask-Diffusion only: DDIM, eta 0, "
              "classifier-free guidance with the empty prompt and the same mask.", "",
              "## Use", "", "```python", "import torch", "import siamdiff  # makes SiameseDiffusionPipeline known to diffusers",
              "from diffusers import DiffusionPipeline", "from PIL import Image", "",
              "pipe = DiffusionPipeline.from_pretrained(\"models/siamese\")  # verifies every file's SHA-256",
              "mask = Image.open(\"mask.png\")  # lesion white on black",
              f"image = pipe(mask_image=mask, prompt={prompt!r}, num_inference_steps=50, guidance_scale=9.0,",
              "             generator=torch.Generator().manual_seed(0)).images[0]  # RGB PIL image",
              "```", "",
              f"Images are {size} x {size} px (masks of another size are resized). The model works in the "
              f"`{space}` colour space (`color_stats.json`, also in `model_index.json`); the pipeline converts "
              "its output back to RGB. `siamdiff generate --model <this folder>` writes image/mask pairs.", "",
              "## Data", ""]
    if datasets:
        total = sum(datasets.values())
        lines.append(f"Trained on {total} training rows (all augmentation views) of the train split:")
        lines += [f"- `{name}`: {n} rows" for name, n in sorted(datasets.items())]
    else:
        lines.append("Trained on the train split of `data/prep` (see the `ingest` section of params.yaml).")
    lines += ["", "Inputs (SHA-256), so the exact data and models can be traced:", ""]
    lines += [f"- `{k}`: `{v}`" for k, v in sorted((record.get("inputs") or {}).items())]
    lines += ["", "## Terms of the data", "",
              "This model was trained on the data above and inherits its terms. Where the public polyp datasets "
              "were used:", ""]
    for name in ("kvasir-seg", "cvc-clinicdb"):
        mark = "**used for this model** - " if name in datasets else ""
        lines.append(f"- {mark}{DATASET_TERMS[name]}")
    if "synthetic" in datasets:
        lines.append(f"- {DATASET_TERMS['synthetic']}")
    lines += ["", "Synthetic images from this model are for research and education; they are not for clinical "
              "use. Cite the method paper and the datasets' papers when you publish results made with it.", "",
              "## Training parameters", "", f"- prompt: {prompt!r}", f"- image size: {size}",
              f"- colour space: {space}"]
    if record.get("downsample_factor"):
        lines.append(f"- autoencoder downsampling: {record['downsample_factor']}x")
    lines += [f"- {k}: {_fmt(v)}" for k, v in sorted(params.items())]
    lines += ["", "## Metrics", ""]
    if metrics:
        lines.append("At the end of training (train stage, `metrics/train.json`):")
        lines += [f"- {k}: {_fmt(v)}" for k, v in sorted(metrics.items())]
    else:
        lines.append("None recorded with the weights.")
    lines += ["", "Fidelity (FID, KID, LPIPS, CLIP-I, CMMD) and downstream segmentation (mDice, mIoU) are "
              "measured later by the pipeline's `evaluate` and `segment` stages: `dvc metrics show`.", "",
              "## Files", "",
              "`model_index.json` (diffusers pipeline `SiameseDiffusionPipeline`), `scheduler/` (DDIM), `vae/`, "
              "`text_encoder/`, `tokenizer/`, `unet/`, `controlnet/` (SiameseControlNet with the DHI), "
              "`color_stats.json`, `siamdiff.json` (params, input hashes and the SHA-256 of every file, checked "
              "on every load: a damaged file is refused by name).", ""]
    return "\n".join(lines)
