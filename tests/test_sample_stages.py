"""Stages sample -> evaluate -> segment on a tiny prepared dataset and a tiny random generator."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from project_params import section
from test_sample_ddim import tiny_parts
from test_segment import _toy


def assert_numbers_only(metrics: dict, where: str = "") -> None:
    """A DVC metrics file: numbers, nulls and lists of numbers only (no text, flags or paths)."""
    for k, v in metrics.items():
        if isinstance(v, dict):
            assert_numbers_only(v, f"{where}{k}.")
        else:
            values = v if isinstance(v, list) else [v]
            assert all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in values), \
                f"{where}{k} = {v!r} is not a number"


def _write_prep(root, size=16):
    from safetensors.torch import save_file

    prep = root / "data/prep"
    prep.mkdir(parents=True)
    rows = []
    for split, n, seed in (("train", 6, 0), ("val", 1, 2), ("test", 3, 1)):
        rgb, mask = _toy(n, size, seed)
        save_file({"rgb": rgb.contiguous(), "mask": mask.contiguous()}, str(prep / f"{split}.safetensors"))
        for i in range(n):
            rows.append({"id": f"toy-{split}{i}-0", "split": split, "dataset": "toy", "patient": f"{split}{i}",
                         "frame": "0", "row": i, "coverage": float(mask[i].float().mean()), "image_sha256": "0" * 64})
    with open(prep / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (prep / "color_stats.json").write_text(json.dumps({"space": "rgb"}))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from siamdiff.model.generator import save_generator

    root = tmp_path_factory.mktemp("proj")
    _write_prep(root)
    p = tiny_parts()
    save_generator(root / "models/siamese", p["controlnet"], p["unet"], p["vae"], p["tokenizer"],
                   p["text_encoder"], p["color_stats"],
                   {"params": {}, "inputs": {}, "prompt": p["prompt"], "size": p["size"]}, scheduler=p["scheduler"])
    return root


def _cheap_features(rgb, progress=False):
    """Stand-in for the Inception (tested in test_metrics_fid): per-channel statistics, 12-d."""
    x = rgb.float() / 255
    return torch.cat([x.mean((1, 2)), x.std((1, 2)), x.amax((1, 2)), x.amin((1, 2))], 1).double()


def test_sample_evaluate_segment(root, monkeypatch):
    from stages import evaluate, sample, segment

    out = sample.run({"steps": 2, "guidance": 9.0, "prompt": None, "k": 2, "seeds": [0, 1, 2],
                      "train_fraction": 0.5, "augment_k": 2, "batch_size": 4}, root=root, progress=False)
    assert out["counts"] == {"protocol_a": 6, "protocol_b": 3, "augment": 6}
    rows = list(csv.DictReader(open(root / "data/samples/protocol_a/index.csv")))
    assert {r["seed"] for r in rows} == {"0", "1"} and {r["sample"] for r in rows} == {"0", "1"}
    assert all(r["mask_id"].startswith("toy-test") for r in rows)
    aug = list(csv.DictReader(open(root / "data/samples/augment/index.csv")))
    assert all(r["mask_id"].startswith("toy-train") for r in aug)  # synthetic from TRAIN masks only
    b = {r["file"]: r for r in csv.DictReader(open(root / "data/samples/protocol_b/index.csv"))}
    assert all(f in {r["file"] for r in aug} for f in b)  # augment sample 0 = protocol B's image
    assert (root / "data/samples/protocol_a/img" / rows[0]["file"].split("/")[1]).read_bytes()[:4] == b"\x89PNG"

    monkeypatch.setattr("siamdiff.metrics.inception.inception_features", _cheap_features)
    fid = evaluate.run({"clip_model": None, "batch_size": 8}, root=root, progress=False)
    a = fid["protocol_a"]
    assert a["k"] == 2 and len(a["fid_per_seed"]) == 2 and a["kid_subset_size"] == 3
    assert a["lpips_diversity"] > 0 and a["lpips_to_real"] > 0
    assert a["clip_i"] is None and a["cmmd"] is None and fid["clip"]["reason"]
    assert fid["protocol_b"]["n_masks"] == 3
    assert fid["assets"]["lpips_alex"]["sha256"]
    saved = json.loads((root / "metrics/fidelity.json").read_text())
    assert saved["protocol_a"]["fid"] == pytest.approx(a["fid"])
    # the metrics file holds numbers (null where not computed); text and provenance are in fidelity.info.json
    assert_numbers_only(saved)
    assert saved["protocol_a"]["clip_i"] is None and "clip" not in saved and "assets" not in saved
    info = json.loads((root / "metrics/fidelity.info.json").read_text())
    assert info["clip"]["reason"] and info["protocol_a"]["description"] and info["notes"]["fid_kid"]
    assert {k: v for k, v in info["assets"]["lpips_alex"].items() if k != "file"} == \
        {k: v for k, v in fid["assets"]["lpips_alex"].items() if k != "file"}
    assert not any(a["file"].startswith("/") for a in info["assets"].values()), info["assets"]
    from siamdiff.utils import read_metrics

    assert read_metrics(root / "metrics/fidelity.json") == json.loads(json.dumps(fid))  # split loses nothing
    assert (root / "plots/evaluate/grid.png").read_bytes()[:4] == b"\x89PNG"

    # with a (tiny, random) CLIP folder configured, CLIP-I and CMMD are numbers
    from test_metrics_clip import make_tiny_clip

    clip_dir = make_tiny_clip(root / "tiny-clip")
    with_clip = evaluate.run({"clip_model": str(clip_dir), "batch_size": 8}, root=root, progress=False)
    assert 0 < with_clip["protocol_a"]["clip_i"] <= 1 and with_clip["protocol_a"]["cmmd"] >= 0
    assert with_clip["protocol_b"]["cmmd"] is not None and with_clip["clip"]["reason"] is None

    seg = segment.run(section("segment", epochs=2, batch_size=4, lr=0.01, unet={"channels": [4, 8], "num_res_units": 0},
                              seed=0, threshold=0.5, equal_steps=True), root=root, progress=False)
    assert seg["adherence"]["n"] == 6 and 0 <= seg["adherence"]["dice"] <= 1
    assert 0 <= seg["adherence"]["chance_dice"] <= 1
    ds = seg["downstream"]
    assert ds["real_plus_synthetic"]["n_synthetic"] == 6 and ds["n_test"] == 3
    assert (root / "models/segmenter/model.safetensors").is_file()
    saved = json.loads((root / "metrics/segmentation.json").read_text())
    assert saved["downstream"]["real_only"]["mdice"] is not None
    assert_numbers_only(saved)
    info = json.loads((root / "metrics/segmentation.info.json").read_text())
    assert info["downstream"]["equal_steps"] is True and info["network"].startswith("MONAI UNet")
    assert info["segmenter"]["network"] == "unet" and info["segmenter"]["input_size"] is None and "segmenter" not in saved

    from siamdiff.summary import headline, print_summary

    lines = headline(root)
    assert any("protocol A" in line for line in lines) and any("real-only" in line for line in lines)
    print_summary(root)


def test_bad_params(root):
    from siamdiff.metrics.fidelity import real_for
    from siamdiff.utils import SiamdiffError
    from stages import sample

    # protocol A is scored against the TEST split only: train mask ids are refused
    with pytest.raises(SiamdiffError, match="not in data/prep"):
        real_for([{"mask_id": "toy-train0-0"}], [{"id": "toy-test0-0"}], "protocol_a")

    with pytest.raises(SiamdiffError, match="sample.seeds"):
        sample.check_params(section("sample", k=5, seeds=[0, 1]))
    with pytest.raises(SiamdiffError, match="train_fraction"):
        sample.check_params(section("sample", train_fraction=0))


def test_chance_adherence_pairs_each_image_with_another_mask():
    import torch

    from stages.segment import other_masks

    rows = [{"mask_id": i} for i in ("b", "a", "b", "c")]
    masks = torch.tensor([2, 1, 2, 3]).view(4, 1, 1)
    assert other_masks(rows, masks).view(-1).tolist() == [3, 2, 3, 1]   # b->c, a->b, c->a
    one = [{"mask_id": "a"}] * 2
    assert torch.equal(other_masks(one, masks[:2]), masks[:2])
