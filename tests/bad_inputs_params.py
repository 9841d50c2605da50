"""Bad-input cases for params.yaml itself (issue 14, item 1): the project's params.yaml with one thing wrong,
read the way every stage reads it (`load_params(section)`), must give one line naming the key."""
from __future__ import annotations

import json
from pathlib import Path

from bad_input_registry import case

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp, section: str, mutate):
    """params.yaml := the project's, changed by `mutate(dict)`; the call reads `section` as its stage would."""
    import yaml

    from siamdiff.utils import load_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(params)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    return lambda: load_params(section, path)


def _set(dotted: str, value):
    def mutate(params):
        *parents, key = dotted.split(".")
        node = params
        for p in parents:
            node = node[p]
        node[key] = value
    return mutate


def _del(dotted: str):
    def mutate(params):
        *parents, key = dotted.split(".")
        node = params
        for p in parents:
            node = node[p]
        del node[key]
    return mutate


def _source(**cfg):
    def mutate(params):
        params["ingest"]["input_path"] = "."
        params["ingest"]["sources"] = [cfg]
    return mutate


# typo'd keys: refused, naming the key and the nearest valid one
for _dotted, _near in [("sample.guidence", "sample.guidance"), ("preprocess.colour_space", "preprocess.color_space"),
                       ("train.lamda_c", "train.lambda_c"), ("encode.augment.gama", "encode.augment.gamma"),
                       ("autoencoder.step", "autoencoder.steps")]:
    @case(f"params: typo {_dotted}")
    def _(tmp, mp, _dotted=_dotted, _near=_near):
        return _params(tmp, _dotted.split(".")[0], _set(_dotted, 3)), f"did you mean {_near}?"


@case("params: typo in a folder source (patient_patern)")
def _(tmp, mp):
    return _params(tmp, "ingest", _source(type="folder", path="src", dataset="a", patient_patern="(?P<patient>p\\d+)")), \
        "did you mean ingest.sources[0].patient_pattern?"


@case("params: top-level typo")
def _(tmp, mp):
    return _params(tmp, "train", _set("trian", {"steps": 3})), "'trian'"


@case("params: a top-level seed (used by no stage)")
def _(tmp, mp):
    return _params(tmp, "train", _set("seed", 1)), "train.seed"


# wrong values: refused, naming the key and the allowed range
for _dotted, _value in [("sample.guidance", float("inf")), ("sample.guidance", float("nan")),
                        ("autoencoder.steps", -5), ("train.lambda_c", float("nan")), ("train.lambda_c", -1.0),
                        ("sample.steps", 5000), ("train.seed", "abc"), ("encode.batch_size", 0),
                        ("backbone.steps", -1), ("encode.augment.p_geometric", 2), ("train.steps", 2.5),
                        ("train.steps", True), ("preprocess.size", "64"), ("backbone.prompt_dropout", 1.5),
                        ("segment.threshold", float("nan")), ("evaluate.batch_size", "32"),
                        ("train.lr", float("inf")), ("train.betas", [0.9]), ("autoencoder.downsample_factor", 6),
                        ("sample.seeds", [0, -1]), ("split.fractions", [0.8, 0.1, float("nan")]),
                        ("train.balanced_batches", "yes"), ("train.augment_t_max", 1000),
                        ("backbone.ema_decay", 1.0), ("backbone.ema_decay", 0), ("backbone.ema_decay", "0.999"),
                        ("train.ema_decay", 1.0), ("train.ema_decay", -0.5),
                        ("backbone.mixed_precision", "fp16"), ("backbone.mixed_precision", True),
                        ("train.mixed_precision", "bf32"), ("train.mixed_precision", None)]:
    @case(f"params: {_dotted} = {json.dumps(_value)}")
    def _(tmp, mp, _dotted=_dotted, _value=_value):
        return _params(tmp, _dotted.split(".")[0], _set(_dotted, _value)), _dotted


@case("params: a missing key (autoencoder.steps)")
def _(tmp, mp):
    return _params(tmp, "autoencoder", _del("autoencoder.steps")), "autoencoder.steps is missing"


@case("params: sample.k larger than the seeds")
def _(tmp, mp):
    return _params(tmp, "sample", _set("sample.k", 9)), "sample.seeds"


@case("params: a section that is not a mapping")
def _(tmp, mp):
    return _params(tmp, "train", _set("train", [1, 2])), "train"


@case("params: unknown source type")
def _(tmp, mp):
    return _params(tmp, "ingest", _source(type="dicom", path="x")), "ingest.sources[0].type"


@case("params: folder source outside ingest.input_path")
def _(tmp, mp):
    def mutate(params):
        params["ingest"]["input_path"] = "data-in"
        params["ingest"]["sources"] = [{"type": "folder", "path": "../elsewhere", "dataset": "a"}]
    return _params(tmp, "ingest", mutate), "ingest.input_path"


@case("params: folder source patient_pattern without (?P<patient>)")
def _(tmp, mp):
    return _params(tmp, "ingest", _source(type="folder", path="src", dataset="a", patient_pattern="p(\\d+)")), \
        "ingest.sources[0].patient_pattern"


@case("params: synthetic source with an unknown key")
def _(tmp, mp):
    return _params(tmp, "ingest", _source(type="synthetic", seed=0, patients=2, frames_per_patient=1, frames=3)), \
        "ingest.sources[0].frames"
