"""The params schema (siamdiff/params_schema.py): the project's params.yaml and every profile are valid, a bad
value is refused before a stage touches an output, and the schema holds no defaults of its own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from siamdiff import params_schema as schema

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_and_every_profile_are_valid():
    proc = subprocess.run([sys.executable, "-m", "siamdiff.cli", "check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


def test_check_names_the_profile_with_a_typo(tmp_path):
    from siamdiff.cli import check_project

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "demo.yaml").write_text((ROOT / "configs/profiles/demo.yaml").read_text())
    (profiles / "broken.yaml").write_text("sample:\n  guidence: 3\n")
    problems = check_project(str(ROOT / "params.yaml"), profiles)
    assert len(problems) == 1 and "broken.yaml" in problems[0] and "did you mean sample.guidance?" in problems[0]


def test_section_keys_have_no_defaults_in_code():
    """Values live in params.yaml only: every key of every section is required by the schema (the optional
    keys of a source mean "not given", null)."""
    for name, model in schema.SECTIONS.items():
        optional = [k for k, f in model.model_fields.items() if not f.is_required()]
        assert not optional, f"{name}: {optional} have a default in the schema; put the value in params.yaml"
    for kind, model in schema.SOURCE_MODELS.items():
        for k, f in model.model_fields.items():
            assert f.is_required() or f.default is None, f"{kind}.{k} has default {f.default!r}"


def test_schema_choices_match_the_code():
    from siamdiff.data import color, preprocess, sources
    from siamdiff.model.siamese import LOSS_MODES, STEPS

    def choices(model, key):
        return set(model.model_fields[key].annotation.__args__)

    assert choices(schema.Train, "loss") == set(LOSS_MODES)
    assert choices(schema.Train, "step_impl") == set(STEPS)
    assert choices(schema.Preprocess, "color_space") == set(color.SPACES)
    assert choices(schema.Preprocess, "fit") == set(preprocess.FITS)
    assert set(schema.SOURCE_MODELS) == set(sources.SOURCE_TYPES)


def _project(tmp_path, monkeypatch, section, key, value):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("stage,key,value,kept", [
    ("autoencoder", "steps", -5, "models/autoencoder/config.json"),
    ("train", "lambda_c", float("nan"), "models/checkpoints/step-000150/state.json"),
    ("sample", "guidance", float("inf"), "data/samples/protocol_a/index.csv"),
])
def test_a_bad_value_stops_the_stage_before_it_touches_an_output(tmp_path, monkeypatch, capsys, stage, key, value, kept):
    import importlib

    from siamdiff.utils import main_guard

    _project(tmp_path, monkeypatch, stage, key, value)
    victim = tmp_path / kept
    victim.parent.mkdir(parents=True)
    victim.write_text("the previous, valid output")
    with pytest.raises(SystemExit) as e:
        main_guard(stage, importlib.import_module(f"stages.{stage}").main)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{stage}.{key}" in err, err
    assert victim.read_text() == "the previous, valid output"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        sorted(["params.yaml", kept])
