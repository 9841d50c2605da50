"""Issue 14, item 5: reruns never break, and nothing is lost before a run has produced something.

`dvc repro -f -s train`, a changed `train.preview_images` / `keep_checkpoints`, or a kill after the last
checkpoint all rerun `train` with its final checkpoint present (models/checkpoints is `persist`): the rerun
must write every declared output again, from the same weights, to the same files.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from project_params import section  # noqa: E402
from siamdiff.utils import SiamdiffError, sha256_file, sha256_tree  # noqa: E402
from test_train_stage import make_project  # noqa: E402

PARAMS = section("train", steps=3, batch_size=3, lr=1e-3, lr_from_scratch=3e-3, checkpoint_every=2,
                 keep_checkpoints=2, preview_every=0, preview_images=1, preview_steps=1, prompt="a polyp", seed=0)
OUTS = ("models/siamese", "metrics/train.json", "plots/train/preview.png", "plots/train/live")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {f"{f.relative_to(folder)}:{k}": v for f in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(f)).items()}


def _delete_outputs(root: Path) -> None:
    """What `dvc repro -f` does before running the stage: remove every output that is not `persist`."""
    for rel in OUTS:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def test_rerun_after_a_finished_train_writes_every_output_and_changes_nothing(tmp_path):
    from stages import train as stage

    torch.set_num_threads(1)
    make_project(tmp_path)
    ckdir, model = tmp_path / "models/checkpoints", tmp_path / "models/siamese"
    first = stage.run(dict(PARAMS), root=tmp_path, progress=False)
    assert first["completed_steps"] == 3 and first["resumed_from_step"] is None
    model_tree, ckpt_tree = sha256_tree(model), sha256_tree(ckdir)
    preview = sha256_file(tmp_path / "plots/train/preview.png")
    weights = _weights(model)

    # `dvc repro -f -s train` (or a kill -9 after the last checkpoint): outputs gone, final checkpoint there
    _delete_outputs(tmp_path)
    again = stage.run(dict(PARAMS), root=tmp_path, progress=False)
    assert again["resumed_from_step"] == 3 and again["completed_steps"] == 3
    assert all((tmp_path / rel).exists() for rel in OUTS)
    assert sha256_tree(model) == model_tree, "same final checkpoint, different models/siamese"
    assert sha256_file(tmp_path / "plots/train/preview.png") == preview, "the preview is not deterministic"
    assert sha256_tree(ckdir) == ckpt_tree, "a rerun from the final checkpoint changed the checkpoints"
    loss_rows = (tmp_path / "plots/train/live/plots/metrics/loss.tsv").read_text().strip().splitlines()[1:]
    assert [r.split("\t")[1 if r.count("\t") == 2 else 0] for r in loss_rows] == ["0", "1", "2"]

    # a changed non-numeric param after a finished run: same fingerprint, resumed at the end, outputs redrawn
    for change in ({"preview_images": 2}, {"keep_checkpoints": 1}):
        (tmp_path / "plots/train/preview.png").unlink()
        out = stage.run({**PARAMS, **change}, root=tmp_path, progress=False)
        assert out["resumed_from_step"] == 3 and (tmp_path / "plots/train/preview.png").is_file(), change
        got = _weights(model)
        assert got.keys() == weights.keys() and all(torch.equal(got[k], weights[k]) for k in got), change
    assert sha256_tree(ckdir) == ckpt_tree


def test_a_run_that_fails_before_its_first_checkpoint_deletes_nothing(tmp_path):
    """Another configuration (here: a diverging lr, as a NaN param would) fails at step 1, before it has
    written a checkpoint: the finished run's checkpoints and model stay, and rerunning the original params
    resumes from them (nothing retrained)."""
    from stages import train as stage

    torch.set_num_threads(1)
    make_project(tmp_path)
    ckdir, model = tmp_path / "models/checkpoints", tmp_path / "models/siamese"
    stage.run(dict(PARAMS), root=tmp_path, progress=False)
    model_tree, ckpt_tree = sha256_tree(model), sha256_tree(ckdir)

    with pytest.raises(SiamdiffError, match="the loss became"):
        stage.run({**PARAMS, "lr": 1e30, "lr_from_scratch": 1e30}, root=tmp_path, progress=False)
    assert sha256_tree(ckdir) == ckpt_tree, "the previous run's checkpoints were deleted before any new one"
    assert sha256_tree(model) == model_tree

    out = stage.run(dict(PARAMS), root=tmp_path, progress=False)
    assert out["resumed_from_step"] == 3 and sha256_tree(model) == model_tree


def test_an_interrupted_checkpoint_swap_is_put_back(tmp_path):
    """A kill between moving the previous `step-X` aside and renaming its replacement in leaves
    `.step-X.old`: it is restored, not deleted, at the next start."""
    from siamdiff.train.checkpoints import remove_temporaries

    ck = tmp_path / "ck"
    (ck / ".step-000004.old").mkdir(parents=True)
    (ck / ".step-000004.old/state.json").write_text("{}")
    (ck / ".step-000004.abc.tmp").mkdir()
    remove_temporaries(ck)
    assert sorted(p.name for p in ck.iterdir()) == ["step-000004"]
