"""Each stage declares exactly its own code (the project files it imports) and only its own params."""
from pathlib import Path

import pytest
import yaml

from siamdiff.deps import code_deps

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("stage", list(DVC))
def test_code_deps_are_exactly_the_imported_files(stage):
    declared = sorted(d for d in DVC[stage]["deps"] if d.endswith(".py"))
    assert declared == code_deps(stage), f"run `python -m siamdiff.deps {stage}` and update dvc.yaml"


@pytest.mark.parametrize("stage", list(DVC))
def test_params_are_only_the_stages_own(stage):
    listed = DVC[stage].get("params", [])
    assert listed, f"stage {stage} declares no params"
    for p in listed:
        key = p if isinstance(p, str) else next(iter(p))
        assert key.split(".")[0] == stage, f"{stage} depends on another stage's param {key}"


def test_no_param_named_like_dvc_metadata():
    """DVC's run cache ignores params named `size`/`nfiles` inside a whole-section dep (treeverse/dvc#10296):
    each such key is listed by name too."""
    def keys(d, prefix=""):
        for k, v in d.items():
            yield prefix + k, k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")
    for stage, spec in DVC.items():
        for p in spec.get("params", []):
            if isinstance(p, str) and "." not in p:
                bad = [full for full, k in keys(PARAMS.get(p, {}), p + ".") if k in ("size", "nfiles")
                       and full not in spec["params"]]
                assert not bad, f"{stage}: list {bad} by name in dvc.yaml too"
