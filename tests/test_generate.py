"""`siamdiff generate`: user masks of any size -> image/mask pairs; clear errors; nothing partial in --out."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from test_sample_ddim import tiny_parts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from siamdiff.model.generator import save_generator

    folder = tmp_path_factory.mktemp("siamese")
    p = tiny_parts()
    save_generator(folder, p["controlnet"], p["unet"], p["vae"], p["tokenizer"], p["text_encoder"],
                   p["color_stats"], {"params": {}, "inputs": {}, "prompt": p["prompt"], "size": p["size"]},
                   scheduler=p["scheduler"])
    return folder


@pytest.fixture
def masks_dir(tmp_path):
    d = tmp_path / "masks"
    d.mkdir()
    m = np.zeros((50, 70), np.uint8)
    cv2.circle(m, (55, 25), 10, 255, -1)  # off-centre lesion: the crop must keep it
    cv2.imwrite(str(d / "a_mask.png"), m)
    j = np.zeros((30, 30), np.uint8)
    j[5:20, 5:20] = 255
    cv2.imwrite(str(d / "b.jpg"), j)
    return d


def test_generate_writes_pairs(model_dir, masks_dir, tmp_path):
    from siamdiff.data.images import read_mask_png, read_rgb_png
    from siamdiff.sample.generate import generate_from_folder

    out = tmp_path / "out"
    generate_from_folder(model_dir, masks_dir, out, k=2, seed=3, steps=2, guidance=9.0, progress=False)
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert [r["mask_id"] for r in rows] == ["a", "a", "b", "b"]
    assert [r["sample"] for r in rows] == ["0", "1", "0", "1"]
    assert all(r["model_hash"] and r["prompt"] for r in rows)
    for r in rows:
        img = read_rgb_png(out / r["file"])
        name = r["file"].split("/")[-1][:-4]
        mask = read_mask_png(out / "mask" / f"{name}_mask.png")
        assert img.shape == (16, 16, 3) and mask.shape == (16, 16)
        assert mask.any()  # the lesion survived the centroid-preserving crop
    # same seed -> same images (regenerate one mask alone)
    out2 = tmp_path / "out2"
    single = tmp_path / "single"
    single.mkdir()
    (single / "a_mask.png").write_bytes((masks_dir / "a_mask.png").read_bytes())
    generate_from_folder(model_dir, single, out2, k=1, seed=3, steps=2, progress=False)
    assert (read_rgb_png(out2 / "img/a_s0.png") == read_rgb_png(out / "img/a_s0.png")).all()


def test_empty_mask_folder(model_dir, tmp_path):
    from siamdiff.sample.generate import generate_from_folder
    from siamdiff.utils import SiamdiffError

    (tmp_path / "empty").mkdir()
    with pytest.raises(SiamdiffError, match="no mask images"):
        generate_from_folder(model_dir, tmp_path / "empty", tmp_path / "out", steps=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_non_image_files(model_dir, masks_dir, tmp_path):
    from siamdiff.sample.generate import generate_from_folder
    from siamdiff.utils import SiamdiffError

    (masks_dir / "notes.txt").write_text("hello")
    with pytest.raises(SiamdiffError, match="notes.txt"):
        generate_from_folder(model_dir, masks_dir, tmp_path / "out", steps=1, progress=False)
    (masks_dir / "notes.txt").unlink()
    (masks_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SiamdiffError, match="broken.png"):
        generate_from_folder(model_dir, masks_dir, tmp_path / "out", steps=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_not_a_siamdiff_model(masks_dir, tmp_path):
    from siamdiff.cli import main

    fake = tmp_path / "fake-model"
    (fake / "unet").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", str(fake), "--masks", str(masks_dir), "--out", str(tmp_path / "out")])
    assert e.value.code == 1
    assert not (tmp_path / "out").exists()


def test_out_not_empty_and_failure_leaves_nothing(model_dir, masks_dir, tmp_path, monkeypatch):
    from siamdiff.sample import ddim
    from siamdiff.sample.generate import generate_from_folder
    from siamdiff.utils import SiamdiffError

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(SiamdiffError, match="not empty"):
        generate_from_folder(model_dir, masks_dir, busy, steps=1, progress=False)
    assert (busy / "keep.txt").read_text() == "mine"

    calls = {"n": 0}
    real = ddim.sample_from_masks

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("interrupted")
        return real(*a, **kw)

    monkeypatch.setattr(ddim, "sample_from_masks", flaky)
    with pytest.raises(RuntimeError):
        generate_from_folder(model_dir, masks_dir, tmp_path / "out", k=2, steps=1, batch_size=1, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_steps_and_guidance_default_to_the_models_record(masks_dir, tmp_path, capsys):
    """No --steps/--guidance: what the model's training previews used (its record), not a fixed 50."""
    from siamdiff.data.images import read_rgb_png
    from siamdiff.model.generator import save_generator
    from siamdiff.sample.generate import generate_from_folder

    folder = tmp_path / "model"
    p = tiny_parts()
    save_generator(folder, p["controlnet"], p["unet"], p["vae"], p["tokenizer"], p["text_encoder"],
                   p["color_stats"], {"params": {"preview_steps": 2, "preview_guidance": 3.0}, "inputs": {},
                                      "prompt": p["prompt"], "size": p["size"]}, scheduler=p["scheduler"])
    generate_from_folder(folder, masks_dir, tmp_path / "default", progress=False)
    err = capsys.readouterr().err
    assert "steps and guidance from the model's train.preview_steps/preview_guidance" in err
    assert "2 DDIM steps, guidance 3.0, 16x16 px (crop)" in err
    generate_from_folder(folder, masks_dir, tmp_path / "explicit", steps=2, guidance=3.0, progress=False)
    generate_from_folder(folder, masks_dir, tmp_path / "other", steps=2, guidance=9.0, progress=False)
    same = read_rgb_png(tmp_path / "default/img/a_s0.png")
    assert (same == read_rgb_png(tmp_path / "explicit/img/a_s0.png")).all()
    assert (same != read_rgb_png(tmp_path / "other/img/a_s0.png")).any()  # the guidance default did matter


def test_help_describes_each_command(capsys):
    from siamdiff.cli import main

    for command, words in (("assets", "SHA-256"), ("summary", "headline"), ("doctor", "Exit 1"),
                           ("generate", "preview_steps")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert words in out, (command, out)
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "model's own size" in out and "lesion centre" in out and "preview_guidance" in out
