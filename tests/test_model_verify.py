"""Issue 14, item 4: a model is verified when loaded (SHA-256 of every file, recorded in its siamdiff.json).

More cases (every stage that loads a model) are in the bad-input matrix: tests/bad_inputs_models.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs_models import DIFFUSERS_WEIGHTS, recorded_autoencoder, recorded_generator  # noqa: E402
from project_params import section  # noqa: E402
from siamdiff.utils import SiamdiffError  # noqa: E402


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_flipped_byte_in_a_saved_generator_is_refused_by_name(tmp_path):
    from siamdiff.model.generator import load_generator
    from siamdiff.model.registry import folder_hash, read_record, verify_model

    folder = recorded_generator(tmp_path / "siamese")
    record = read_record(folder)
    assert set(record["files"]) >= {"controlnet/" + DIFFUSERS_WEIGHTS, "unet/" + DIFFUSERS_WEIGHTS, "color_stats.json"}
    assert verify_model(folder) == folder_hash(folder) == record["folder_hash"]
    assert load_generator(folder).folder_hash == record["folder_hash"]

    victim = folder / "controlnet" / DIFFUSERS_WEIGHTS
    original = victim.read_bytes()
    _flip_one_byte(victim)
    with pytest.raises(SiamdiffError) as e:
        load_generator(folder)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{victim}: SHA-256 differs"), msg
    assert "dvc repro -f -s train" in msg and f"dvc checkout {folder}" in msg, msg

    victim.write_bytes(original)  # restored (as `dvc checkout` would): accepted again
    assert load_generator(folder).folder_hash == record["folder_hash"]


def test_a_record_without_file_list_still_catches_damage(tmp_path):
    """Records written before the per-file SHA-256s: the folder hash is compared (the folder is named)."""
    from siamdiff.model.autoencoder import load_autoencoder

    folder = recorded_autoencoder(tmp_path)
    rec = json.loads((folder / "siamdiff.json").read_text())
    del rec["files"]
    (folder / "siamdiff.json").write_text(json.dumps(rec))
    load_autoencoder(folder)
    _flip_one_byte(folder / DIFFUSERS_WEIGHTS)
    with pytest.raises(SiamdiffError, match="do not match the folder_hash recorded") as e:
        load_autoencoder(folder)
    assert str(folder) in str(e.value) and "dvc repro -f -s autoencoder" in str(e.value)


def test_encode_stage_prints_one_line_for_a_damaged_autoencoder(tmp_path, monkeypatch, capsys):
    """What the user of `dvc repro encode` sees: one error line naming the file, exit 1, nothing written."""
    from siamdiff.utils import main_guard
    from stages import encode
    from tiny_sd import make_prep

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=16)
    folder = recorded_autoencoder(tmp_path)
    _flip_one_byte(folder / DIFFUSERS_WEIGHTS)
    params = section("encode", views=1, batch_size=2)
    (tmp_path / "params.yaml").write_text("encode:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in params.items()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main_guard("encode", encode.main)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and err == [
        f"[encode] error: models/autoencoder/{DIFFUSERS_WEIGHTS}: SHA-256 differs from the one recorded in "
        "models/autoencoder/siamdiff.json (damaged model file); rerun `dvc repro -f -s autoencoder` or restore it "
        "with `dvc checkout models/autoencoder`"], err
    assert not (tmp_path / "data/encoded.csv").exists() and not (tmp_path / "data/latents.lmdb").exists()


def test_segmenter_weights_are_checked(tmp_path):
    from siamdiff.metrics.segmentation import WEIGHTS, build_unet, load_segmenter, save_segmenter

    save_segmenter(build_unet([4, 8], 0), tmp_path, {"channels": [4, 8], "num_res_units": 0})
    load_segmenter(tmp_path)
    _flip_one_byte(tmp_path / WEIGHTS)
    with pytest.raises(SiamdiffError, match="SHA-256 differs") as e:
        load_segmenter(tmp_path)
    assert str(e.value).startswith(str(tmp_path / WEIGHTS))
