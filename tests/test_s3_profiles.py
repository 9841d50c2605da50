"""Profiles demo / polyps / paper: one flag switches params.yaml; reversible; same change as `dvc exp run -S`."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from siamdiff import profile
from siamdiff.utils import SiamdiffError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "configs" / "profiles"


@pytest.fixture
def params(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    return p


def test_profiles_exist_and_demo_is_params_yaml(params):
    assert {"demo", "polyps", "paper", "tiny"} <= set(profile.available(PROFILES))
    assert profile.drift(params, PROFILES) == [], "update configs/profiles/demo.yaml to params.yaml's values"
    before = params.read_bytes()
    profile.apply("demo", params, PROFILES)
    assert params.read_bytes() == before


def test_switching_is_reversible(params):
    before = params.read_text()
    for name in ("paper", "polyps", "paper-seed", "paper", "demo"):
        profile.apply(name, params, PROFILES)
    after = params.read_text()
    assert yaml.safe_load(after) == yaml.safe_load(before)
    # comments and layout outside replaced lists survive; sections stay separated by a blank line
    strip = lambda t: [ln for ln in t.splitlines() if not ln.lstrip().startswith("- type")]  # noqa: E731
    assert strip(after) == strip(before)


def test_demo_names_every_key_other_profiles_change():
    demo = profile.load_profile("demo", PROFILES)

    def keys(d, pre=""):
        return {f"{pre}{k}" for k, v in d.items()} | {x for k, v in d.items() if isinstance(v, dict)
                                                       for x in keys(v, f"{pre}{k}.")}
    others = [n for n in profile.available(PROFILES) if n != "demo"]
    assert {"polyps", "paper", "paper-seed", "tiny"} <= set(others)
    for name in others:
        missing = keys(profile.load_profile(name, PROFILES)) - keys(demo)
        assert not missing, f"{name}.yaml changes {missing} which demo.yaml does not restore"


def test_polyps_and_paper_values(params):
    profile.apply("polyps", params, PROFILES)
    p = yaml.safe_load(params.read_text())
    assert p["profile"] == "polyps"
    assert p["ingest"]["sources"] == [
        {"type": "kvasir-seg", "path": "../shared/data/polyps-train/Kvasir-SEG"},
        {"type": "cvc-clinicdb", "path": "../shared/data/polyps-train/CVC-ClinicDB"}]
    assert p["autoencoder"]["mode"] == "demo" and p["train"]["lr"] == 1.0e-4
    profile.apply("paper", params, PROFILES)
    p = yaml.safe_load(params.read_text())
    assert p["autoencoder"]["mode"] == p["backbone"]["mode"] == "paper"
    assert p["autoencoder"]["pretrained"] and p["autoencoder"]["pretrained"] == p["backbone"]["pretrained"]
    assert p["train"]["lr"] == 1.0e-5 and isinstance(p["train"]["lr"], float)   # PyYAML reads it as a float
    assert p["train"]["batch_size"] == 48 and p["train"]["steps"] == 3000
    assert p["autoencoder"]["downsample_factor"] == 8 and p["preprocess"]["size"] == 384


def test_paper_is_the_released_recipe_and_paper_seed_the_seed_options(params):
    """`paper` = the released code on the data side too (DESIGN.md section 3): whole frame resized, no
    augmentation views, uniform batches, and every seed schedule option off; `paper-seed` = the same scale
    with the seed document's data and schedule options."""
    from siamdiff.data.preprocess import FITS
    from siamdiff.params_schema import problems

    seed_schedule = {"lambda_c_warmup": 600, "lr_warmup": 500, "lr_schedule": "cosine"}
    released = {"lambda_c_warmup": 0, "lr_warmup": 0, "lr_schedule": "constant", "grad_accumulation": 1,
                "mixed_precision": "no", "lambda_c": 1.0, "loss": "siamese", "lr_from_scratch": None,
                "lr_controlnet": None, "lr_unet_decoder": None, "balanced_batches": False}
    profile.apply("paper", params, PROFILES)
    paper = yaml.safe_load(params.read_text())
    assert "resize" in FITS and paper["preprocess"]["fit"] == "resize" and paper["preprocess"]["size"] == 384
    assert paper["encode"]["views"] == 1
    assert {k: paper["train"][k] for k in released} == released
    assert problems(paper) == []
    profile.apply("paper-seed", params, PROFILES)
    seed = yaml.safe_load(params.read_text())
    assert seed["profile"] == "paper-seed"
    assert seed["preprocess"]["fit"] == "crop" and seed["encode"]["views"] == 4
    assert seed["train"]["balanced_batches"] is True
    assert {k: seed["train"][k] for k in seed_schedule} == seed_schedule
    assert problems(seed) == []
    # the same scale and data otherwise: only the seed options differ
    differ = {f"{sec}.{k}" for sec in paper if isinstance(paper[sec], dict)
              for k in paper[sec] if paper[sec][k] != seed[sec].get(k)}
    assert differ == {"preprocess.fit", "encode.views", "train.balanced_batches", "train.lambda_c_warmup",
                      "train.lr_warmup", "train.lr_schedule"}
    # the CPU default keeps the seed's data options
    profile.apply("demo", params, PROFILES)
    demo = yaml.safe_load(params.read_text())
    assert (demo["preprocess"]["fit"], demo["encode"]["views"], demo["train"]["balanced_batches"]) == ("crop", 4, True)


@pytest.mark.parametrize("name", ["demo", "polyps", "paper", "paper-seed"])
def test_set_args_make_the_same_change_through_dvc(params, tmp_path, name):
    """`dvc exp run $(python -m siamdiff.profile NAME --set-args)` == `python -m siamdiff.profile NAME`."""
    from dvc.utils.hydra import apply_overrides

    args = profile.set_args(name, PROFILES)
    assert all(not any(c.isspace() for c in a) for a in args)   # survives $(...) word splitting
    via_dvc = tmp_path / "via_dvc.yaml"
    shutil.copy(params, via_dvc)
    apply_overrides(via_dvc, [a for a in args if a != "-S"])    # what `dvc exp run -S ...` does to params.yaml
    profile.apply(name, params, PROFILES)
    # compared as DVC reads params (YAML 1.2): DVC's rewrite turns `"no"` into a bare `no`, which PyYAML
    # (YAML 1.1) would read as False -- see docs/S3.md, "dvc exp run -S and YAML 1.1"
    from ruamel.yaml import YAML

    load = YAML(typ="safe", pure=True).load
    assert load(via_dvc.read_text()) == load(params.read_text())


def test_unknown_profile_or_key_is_a_clear_error(params, tmp_path):
    with pytest.raises(SiamdiffError, match="no such profile"):
        profile.apply("nope", params, PROFILES)
    bad = tmp_path / "profiles"
    shutil.copytree(PROFILES, bad)
    (bad / "typo.yaml").write_text("train:\n  lambda_cc: 2\n")
    with pytest.raises(SiamdiffError, match="lambda_cc"):
        profile.apply("typo", params, bad)
