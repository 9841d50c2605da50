"""The one typed schema of `params.yaml`: every section, every key, its type and allowed range.

Values (the defaults) live in params.yaml and configs/profiles/*.yaml only; this module says what a value
may be. Every stage validates its section here before it reads data or touches an output
(`siamdiff.utils.load_params`), and `siamdiff check` validates params.yaml and every profile at once.
A bad value gives one line naming the key and what is allowed:

    params.yaml: sample.guidence is not a parameter; did you mean sample.guidance?
    params.yaml: sample.guidance must be a finite number (got inf)
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from siamdiff.credential_names import KEYS_POINTER, is_credential_key
from siamdiff.data.split import SPLITS
from siamdiff.utils import SiamdiffError

# -------------------------------------------------------------------------------------- value types
Count = Annotated[int, Field(ge=1)]                    # steps, sizes, batch sizes: an integer >= 1
NonNegInt = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
DdimSteps = Annotated[int, Field(ge=1, le=1000)]      # at most T = 1000 training timesteps
Guidance = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Widths = Annotated[list[Count], Field(min_length=1)]
Path_ = Annotated[str, Field(min_length=1)]

class Section(BaseModel):
    # strict: "64" is not an integer, 1.5 is not a step count, "yes" is not a boolean
    model_config = ConfigDict(extra="forbid", strict=True)


# ------------------------------------------------------------------------------------------- ingest
class SyntheticSource(Section):
    type: Literal["synthetic"]
    seed: Seed
    patients: Count
    frames_per_patient: Count
    datasets: Optional[Annotated[list[Literal["synth-a", "synth-b"]], Field(min_length=1)]] = None  # null = all
    empty_fraction: Optional[Probability] = None   # null = 0
    limit: Optional[Count] = None


class _FolderLike(Section):
    path: Path_
    limit: Optional[Count] = None


class KvasirSource(_FolderLike):
    type: Literal["kvasir-seg"]
    dataset: Optional[str] = None     # null = kvasir-seg


class CvcSource(_FolderLike):
    type: Literal["cvc-clinicdb"]
    dataset: Optional[str] = None     # null = cvc-clinicdb


class FolderSource(_FolderLike):
    type: Literal["folder"]
    dataset: Annotated[str, Field(min_length=1)]
    patient_pattern: Optional[str] = None   # regex with (?P<patient>...) [and (?P<frame>...)]; null = image = patient

    @field_validator("patient_pattern")
    @classmethod
    def _regex(cls, v):
        if v is not None:
            try:
                rx = re.compile(v)
            except re.error as e:
                raise ValueError(f"is not a valid regular expression ({e})") from None
            if "patient" not in rx.groupindex:
                raise ValueError("needs a named group (?P<patient>...)")
        return v


class S3Source(Section):
    type: Literal["s3"]
    url: Annotated[str, Field(pattern=r"^s3://[^/@:]+(/.*)?$")]
    endpoint_url: Optional[Annotated[str, Field(pattern=r"^https?://[^/@]+(/.*)?$")]] = None  # no user:secret@
    remote: Optional[str] = None        # a DVC remote whose (--local) config holds the credentials
    splits: Optional[list[Literal[SPLITS]]] = None
    datasets: Optional[list[str]] = None
    jobs: Optional[Annotated[int, Field(ge=1, le=64)]] = None
    limit: Optional[Count] = None


SOURCE_MODELS = {"synthetic": SyntheticSource, "kvasir-seg": KvasirSource, "cvc-clinicdb": CvcSource,
                 "folder": FolderSource, "s3": S3Source}
Source = Annotated[Union[SyntheticSource, KvasirSource, CvcSource, FolderSource, S3Source],
                   Field(discriminator="type")]


class Ingest(Section):
    # what DVC tracks as ingest's input (dvc.yaml: ${ingest.input_path}): a local folder or file, or for an s3
    # source a DVC remote URL (remote://NAME/PREFIX), which DVC checks for changes through that remote
    input_path: Path_
    sources: Annotated[list[Source], Field(min_length=1)]

    @model_validator(mode="after")
    def _sources_inside_input_path(self):
        from pathlib import Path

        if "://" in self.input_path:
            return self
        root = Path(self.input_path).expanduser().resolve()
        for i, src in enumerate(self.sources):
            path = getattr(src, "path", None)
            if path is not None and not Path(path).expanduser().resolve().is_relative_to(root):
                raise ValueError(
                    f"ingest.sources[{i}].path ({path}) is not inside ingest.input_path ({self.input_path}), so DVC "
                    "would not see its files change; set ingest.input_path to a folder that holds every source")
        return self


# ---------------------------------------------------------------------------------------- data stages
class Split(Section):
    fractions: Annotated[list[Probability], Field(min_length=3, max_length=3)]

    @field_validator("fractions")
    @classmethod
    def _sum(cls, v):
        if not math.isclose(sum(v), 1.0, abs_tol=1e-6):
            raise ValueError(f"must sum to 1 (train, val, test), got {sum(v):g}")
        return v


class Preprocess(Section):
    size: Annotated[int, Field(ge=8, le=4096)]
    fit: Literal["crop", "pad", "resize"]
    color_space: Literal["rgb", "lab"]


class Autoencoder(Section):
    mode: Literal["demo", "paper"]
    pretrained: Optional[Path_]
    downsample_factor: Annotated[int, Field(ge=1, le=64)]
    latent_channels: Count
    widths: Widths
    layers_per_block: Count
    norm_groups: Count
    steps: Count
    batch_size: Count
    crop: Optional[Annotated[int, Field(ge=8)]]
    lr: PosFloat
    kl_weight: NonNegFloat
    seed: Seed

    @field_validator("downsample_factor")
    @classmethod
    def _pow2(cls, v):
        if v & (v - 1):
            raise ValueError(f"must be a power of two (2, 4, 8), got {v}")
        return v


class Augment(Section):
    gamma: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
    contrast: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
    p_intensity: Probability
    p_geometric: Probability
    elastic_alpha: NonNegFloat
    elastic_sigma: PosFloat


class Encode(Section):
    views: Count
    batch_size: Count
    augment: Augment
    seed: Seed


# --------------------------------------------------------------------------------------------- models
class Backbone(Section):
    mode: Literal["demo", "paper"]
    pretrained: Optional[Path_]
    prompt: str
    widths: Widths
    layers_per_block: Count
    cross_attention_dim: Count
    attention_head_dim: Count
    norm_groups: Count
    text_width: Count
    text_layers: Count
    text_heads: Count
    steps: Count
    batch_size: Count
    lr: PosFloat
    snr_gamma: Optional[PosFloat]
    ema_decay: Optional[Annotated[float, Field(gt=0, lt=1)]]
    mixed_precision: Literal["no", "bf16", "auto"]
    prompt_dropout: Probability
    preview_samples: NonNegInt
    preview_steps: DdimSteps
    preview_guidance: Guidance
    seed: Seed


class Train(Section):
    loss: Literal["siamese", "mask-only"]
    prompt: str
    steps: Count
    batch_size: Count
    lr: PosFloat
    lr_from_scratch: Optional[PosFloat]
    lr_controlnet: Optional[PosFloat]
    lr_unet_decoder: Optional[PosFloat]
    weight_decay: NonNegFloat
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]], Field(min_length=2, max_length=2)]
    prompt_dropout: Probability
    augment_t_max: Annotated[int, Field(ge=0, le=999)]
    augment_after: Probability
    lambda_c: NonNegFloat
    lambda_c_warmup: NonNegInt
    lr_warmup: NonNegInt
    lr_schedule: Literal["constant", "cosine"]
    ema_decay: Optional[Annotated[float, Field(gt=0, lt=1)]]
    grad_accumulation: Count
    mixed_precision: Literal["no", "fp16", "bf16", "auto"]
    gradient_checkpointing: bool
    attention: Literal["sdpa", "classic"]
    allow_tf32: bool
    optimizer: Literal["adamw", "adamw8bit"]
    reduce_bucket_mb: PosFloat
    balanced_batches: bool
    step_impl: Literal["fused", "naive"]
    checkpoint_every: NonNegInt
    keep_checkpoints: NonNegInt
    preview_every: NonNegInt
    preview_images: Count
    preview_steps: DdimSteps
    preview_guidance: Guidance
    seed: Seed


class Sample(Section):
    steps: DdimSteps
    guidance: Guidance
    prompt: Optional[str]
    k: Count
    seeds: Annotated[list[Seed], Field(min_length=1)]
    train_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    augment_k: Count
    batch_size: Count

    @model_validator(mode="after")
    def _enough_seeds(self):
        if len(self.seeds) < self.k:
            raise ValueError(f"sample.seeds needs at least k = {self.k} seeds (one per sample), got {len(self.seeds)}")
        if self.augment_k > len(self.seeds):
            raise ValueError(f"sample.augment_k ({self.augment_k}) must be at most len(sample.seeds) ({len(self.seeds)})")
        return self


class Evaluate(Section):
    clip_model: Optional[Path_]
    batch_size: Count


# segment.network: one MONAI network (random init); its own settings are the sub-mapping segment.<network>.
# Every network's sub-mapping stays in params.yaml (a profile or `-S segment.network=...` switches networks
# without deleting keys); only the chosen one is read. A key under the wrong network is refused by name.
Levels = Annotated[list[Count], Field(min_length=2)]   # stride-2 levels, e.g. [16, 32, 64, 128]


class SegUNet(Section):
    channels: Levels
    num_res_units: NonNegInt


class SegAttentionUnet(Section):
    channels: Levels


class SegSegResNet(Section):
    init_filters: Count
    blocks_down: Annotated[list[Count], Field(min_length=1)]
    blocks_up: list[Count]

    @field_validator("init_filters")
    @classmethod
    def _groups(cls, v):
        if v % 8:
            raise ValueError("must be a multiple of 8 (SegResNet's GroupNorm has 8 groups)")
        return v

    @model_validator(mode="after")
    def _levels(self):
        if len(self.blocks_up) != len(self.blocks_down) - 1:
            raise ValueError(f"segment.segresnet.blocks_up needs one entry fewer than blocks_down (one per upsampling), "
                             f"got {len(self.blocks_up)} for {len(self.blocks_down)} down levels")
        return self


class SegSwinUNETR(Section):
    feature_size: Count

    @field_validator("feature_size")
    @classmethod
    def _heads(cls, v):
        if v % 12:
            raise ValueError("must be a multiple of 12 (MONAI SwinUNETR: 3, 6, 12, 24 attention heads), e.g. 24 or 48")
        return v


SEGMENT_NETWORKS: dict[str, type[Section]] = {"unet": SegUNet, "attentionunet": SegAttentionUnet,
                                              "segresnet": SegSegResNet, "swinunetr": SegSwinUNETR}


def segment_size_multiple(network: str, settings: dict) -> int:
    """The input side `network` needs a multiple of: 2 per stride-2 level; SwinUNETR: patch 2, 4 mergings."""
    if network in ("unet", "attentionunet"):
        return 2 ** (len(settings["channels"]) - 1)
    if network == "segresnet":
        return 2 ** (len(settings["blocks_down"]) - 1)
    return 32


class Segment(Section):
    network: Literal["unet", "attentionunet", "segresnet", "swinunetr"]
    # not `size`: DVC's run cache ignores a param of that name inside a section dep (tests/test_dvc_deps.py)
    input_size: Optional[Annotated[int, Field(ge=8, le=4096)]]   # null = the preprocessed size
    unet: SegUNet
    attentionunet: SegAttentionUnet
    segresnet: SegSegResNet
    swinunetr: SegSwinUNETR
    epochs: Count
    batch_size: Count
    lr: PosFloat
    threshold: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    equal_steps: bool
    seed: Seed

    @model_validator(mode="before")
    @classmethod
    def _network_keys_in_their_place(cls, data):
        if not isinstance(data, dict):
            return data

        def owners(key):
            return [f"segment.{n}" for n, m in SEGMENT_NETWORKS.items() if key in m.model_fields]

        for k in data:
            if k not in cls.model_fields and owners(k):
                raise ValueError(f"segment.{k} is a network's own setting: set it under the network's sub-mapping "
                                 f"({' or '.join(f'{o}.{k}' for o in owners(k))}); segment.network picks the network")
        for net, model in SEGMENT_NETWORKS.items():
            sub = data.get(net)
            for k in sub if isinstance(sub, dict) else ():
                if k not in model.model_fields and owners(k):
                    raise ValueError(f"segment.{net}.{k} is not a setting of {net} (it belongs to {' and '.join(owners(k))}); "
                                     f"segment.{net} takes {', '.join(model.model_fields)}")
        return data

    @model_validator(mode="after")
    def _size_fits_the_network(self):
        if self.input_size is not None:
            m = segment_size_multiple(self.network, getattr(self, self.network).model_dump())
            if self.input_size % m:
                why = "patch 2, then 4 patch-merging stages" if self.network == "swinunetr" else "one halving per level"
                raise ValueError(f"segment.input_size must be divisible by {m} for segment.network {self.network} ({why}), "
                                 f"got {self.input_size}; e.g. {max(m, round(self.input_size / m) * m)}")
        return self


SECTIONS: dict[str, type[Section]] = {
    "ingest": Ingest, "split": Split, "preprocess": Preprocess, "autoencoder": Autoencoder, "encode": Encode,
    "backbone": Backbone, "train": Train, "sample": Sample, "evaluate": Evaluate, "segment": Segment,
}
TOP_LEVEL = {"profile": str}


# ------------------------------------------------------------------------------------------- messages
def _dotted(section: str, loc: tuple) -> str:
    out = section
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys of the mapping that holds the key at pydantic's `loc` (for "did you mean")."""
    node: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in SOURCE_MODELS:  # a discriminated union puts the source's type in the location
            node = SOURCE_MODELS[part]
            continue
        field = node.model_fields.get(part) if node else None
        node = _model_in(field.annotation) if field else None
        if node is None:
            return []
    return list(node.model_fields) if node else []


_SOURCE_TYPES = tuple(SOURCE_MODELS)


def _message(section: str, model: type[BaseModel], err: dict) -> str:
    loc = tuple(p for p in err["loc"] if p not in _SOURCE_TYPES or not isinstance(p, str))
    key = _dotted(section, loc)
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        if is_credential_key(name):
            return (f"{key} holds a credential: refused, credentials never go in params.yaml (DVC copies it into "
                    f"dvc.lock and its run cache, ingest into the manifest); remove it and {KEYS_POINTER}")
        valid = _fields_at(model, err["loc"])
        near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = (f"; did you mean {key.rsplit('.', 1)[0]}.{near[0]}?" if near
                else f"; valid keys here: {', '.join(valid)}" if valid else "")
        return f"{key} is not a parameter{hint} (remove or rename it)"
    if kind == "missing":
        return f"{key} is missing; add it (configs/profiles/demo.yaml and the project's params.yaml show every key)"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return f"{key}.type must be one of {', '.join(_SOURCE_TYPES)}, got {value.get('type') if isinstance(value, dict) else value!r}"
    if key.endswith(("endpoint_url", ".url")) and isinstance(value, str) and "@" in value:
        return f"{key} holds a URL with user info (name:password@): refused; drop it from the URL and {KEYS_POINTER}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("finite_number",):
        msg = "must be a finite number"
    elif kind.startswith(("greater", "less")) or kind in ("int_type", "float_type", "bool_type", "string_type",
                                                         "list_type", "literal_error", "too_short", "too_long",
                                                         "int_from_float", "model_type", "dict_type"):
        msg = msg[0].lower() + msg[1:]
        msg = msg.replace("input should be", "must be").replace("list should have", "must have")
    if kind == "value_error" and msg.startswith(f"{section}."):
        return msg
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx", {})
        lo, hi = ctx.get("min_length"), ctx.get("max_length")
        n = len(value) if hasattr(value, "__len__") else "?"
        want = f"exactly {lo}" if lo is not None and lo == hi else f"at least {lo}" if kind == "too_short" else f"at most {hi}"
        return f"{key} must have {want} items, got {n} ({value!r})"
    shown = "" if (isinstance(value, (dict, list)) and kind != "literal_error") or "got " in msg else f" (got {value!r})"
    return f"{key} {msg}{shown}"


def check_model(model: type[BaseModel], data: Any, key: str, where: str = "params.yaml") -> None:
    """Validate `data` (found at `key` in `where`) against one schema model; refuse with its first error."""
    try:
        model.model_validate(data)
    except ValidationError as e:
        raise SiamdiffError(f"{where}: {_message(key, model, e.errors(include_url=False)[0])}") from None


def validate_section(section: str, data: Any, where: str = "params.yaml") -> dict:
    """Validate one section; return it as plain Python values (defaults of optional source keys filled in)."""
    model = SECTIONS.get(section)
    if model is None:
        raise SiamdiffError(f"{where}: unknown section {section!r}")
    if not isinstance(data, dict):
        raise SiamdiffError(f"{where}: {section} must be a mapping of keys, got {type(data).__name__}")
    try:
        # unset optional keys stay unset: their meaning (null = ...) is the adapter's, said once, in the schema
        return model.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        more = f" (and {len(errors) - 1} more problem(s); `siamdiff check` lists them)" if len(errors) > 1 else ""
        raise SiamdiffError(f"{where}: {_message(section, model, errors[0])}{more}") from None


def check_top_level(params: dict, where: str = "params.yaml") -> None:
    for k, v in params.items():
        if k in SECTIONS:
            continue
        if k == "seed":
            raise SiamdiffError(f"{where}: a top-level seed is not used by any stage; set the seed of the stage you "
                                "mean (autoencoder.seed, backbone.seed, train.seed, ...) and remove this one")
        if k not in TOP_LEVEL:
            near = difflib.get_close_matches(str(k), [*SECTIONS, *TOP_LEVEL], n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else f"; sections: {', '.join(SECTIONS)}"
            raise SiamdiffError(f"{where}: top-level key {k!r} is not a parameter{hint} (remove or rename it)")
        if not isinstance(v, TOP_LEVEL[k]):
            raise SiamdiffError(f"{where}: {k} must be a {TOP_LEVEL[k].__name__}, got {v!r}")


def problems(params: Any, where: str = "params.yaml") -> list[str]:
    """Every problem of a whole params mapping, one line each (empty = valid)."""
    if not isinstance(params, dict):
        return [f"{where}: must be a mapping of sections"]
    out: list[str] = []
    try:
        check_top_level(params, where)
    except SiamdiffError as e:
        out.append(str(e))
    for name, model in SECTIONS.items():
        if name not in params:
            out.append(f"{where}: section {name!r} is missing; add it (see configs/profiles/demo.yaml)")
            continue
        try:
            model.model_validate(params[name])
        except ValidationError as e:
            out.extend(f"{where}: {_message(name, model, err)}" for err in e.errors(include_url=False))
    return out

