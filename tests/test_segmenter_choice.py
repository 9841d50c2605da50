"""segment.network / segment.input_size (issue 17, item 7): every MONAI network trains a few steps and predicts at
the images' own size; segment.input_size resizes for the network only (Dice is scored on the unresized masks);
the schema refuses an unknown network, a key under the wrong network and a size the network cannot take."""
from __future__ import annotations

import json

import pytest
import torch

from project_params import section
from siamdiff import params_schema as schema
from siamdiff.metrics import segmentation as seg
from siamdiff.utils import SiamdiffError
from test_segment import _toy

SMALL = {"unet": {"channels": [4, 8], "num_res_units": 0}, "attentionunet": {"channels": [4, 8]},
         "segresnet": {"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]}, "swinunetr": {"feature_size": 12}}


def test_networks_match_the_schema_and_params_yaml():
    assert set(seg.NETWORKS) == set(schema.SEGMENT_NETWORKS) == set(schema.Segment.model_fields["network"].annotation.__args__)
    p = section("segment")
    assert p["network"] == "unet" and p["input_size"] is None      # the demo: today's UNet at the preprocessed size
    assert p["unet"] == {"channels": [16, 32, 64, 128], "num_res_units": 0}


@pytest.mark.parametrize("network", seg.NETWORKS)
def test_each_network_trains_and_predicts(network, tmp_path):
    if seg.missing_package(network):
        pytest.skip(f"{network} needs {seg.missing_package(network)!r}, not installed here (README, Segmentation)")
    torch.set_num_threads(1)
    rgb, mask = _toy(4, size=32)
    size = 64 if network == "swinunetr" else None  # SwinUNETR's 32x downsampling: 64 px leaves a 2x2 bottleneck
    model = seg.train_segmenter(rgb, mask, network=network, settings=SMALL[network], size=size, max_steps=2,
                                batch_size=2, lr=1e-3, seed=0, progress=False)
    prob = seg.predict(model, rgb)
    assert prob.shape == (4, 32, 32) and bool(((prob >= 0) & (prob <= 1)).all())
    s = seg.score(model, rgb, mask)
    assert s["n"] == 4 and 0 <= s["mdice"] <= 1
    seg.save_segmenter(model, tmp_path, {"network": network, "settings": SMALL[network], "size": size})
    again = seg.load_segmenter(tmp_path)
    assert type(again) is type(model) and torch.allclose(seg.predict(again, rgb), prob, atol=1e-6)


def test_input_size_resizes_for_the_network_only(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    rgb, mask = _toy(4, size=32)
    model = seg.train_segmenter(rgb, mask, network="unet", settings=SMALL["unet"], size=64, max_steps=2,
                                batch_size=2, progress=False)
    seen = []
    monkeypatch.setattr(model, "forward", lambda x, f=model.forward: seen.append(tuple(x.shape)) or f(x))
    prob = seg.predict(model, rgb)
    assert seen == [(4, 3, 64, 64)] and prob.shape == (4, 32, 32)   # network at 64 px, probabilities at 32 px
    seg.save_segmenter(model, tmp_path, {"network": "unet", "settings": SMALL["unet"], "size": 64})
    assert seg.load_segmenter(tmp_path).segmenter_size == 64
    # masks are resized bilinear then >= 0.5 (binary); a size equal to the images' is no resize at all
    y = mask.float().unsqueeze(1)
    assert set((seg._resize(y, 64) >= 0.5).unique().tolist()) <= {0.0, 1.0}
    assert seg._resize(y, 32) is y


def test_input_size_null_keeps_todays_unet():
    """network unet + input_size null is the UNet of before segment.network existed, bit for bit."""
    rgb, mask = _toy(8, size=16)
    kw = dict(max_steps=3, batch_size=4, lr=0.01, seed=2, progress=False)
    old = seg.train_segmenter(rgb, mask, channels=(4, 8), num_res_units=0, **kw)
    new = seg.train_segmenter(rgb, mask, network="unet", settings={"channels": [4, 8], "num_res_units": 0}, size=None, **kw)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_an_older_segmenter_folder_still_loads(tmp_path):
    seg.save_segmenter(seg.build_unet([4, 8], 0), tmp_path, {"channels": [4, 8], "num_res_units": 0})
    assert json.loads((tmp_path / seg.CONFIG).read_text()).get("network") is None
    assert seg.load_segmenter(tmp_path).segmenter_size is None


@pytest.mark.parametrize("changes,named", [
    ({"network": "pvt"}, "segment.network"),
    ({"segresnet": {"init_filters": 32, "blocks_down": [1, 2], "blocks_up": [1], "channels": [8, 16]}},
     "segment.segresnet.channels is not a setting of segresnet"),
    ({"channels": [16, 32]}, "segment.unet.channels"),
    ({"network": "swinunetr", "input_size": 350}, "segment.input_size must be divisible by 32"),
    ({"network": "swinunetr", "input_size": 352}, None),
    ({"network": "segresnet", "input_size": 352}, None),
])
def test_schema(changes, named):
    p = section("segment", **changes)
    if named is None:
        assert schema.validate_section("segment", p)["input_size"] == changes["input_size"]
        return
    with pytest.raises(SiamdiffError, match=named.replace(".", r"\.")):
        schema.validate_section("segment", p)


def test_an_image_size_the_network_cannot_take():
    rgb, mask = _toy(2, size=18)   # 3 levels: 18 px does not halve twice
    with pytest.raises(SiamdiffError, match=r"segment\.input_size is null and the images are 18 px.*e\.g\. 16"):
        seg.train_segmenter(rgb, mask, network="unet", settings={"channels": [4, 8, 16], "num_res_units": 0},
                            max_steps=1, progress=False)


def test_a_network_whose_package_is_missing_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(seg, "missing_package", lambda network: "einops" if network == "swinunetr" else None)
    rgb, mask = _toy(2, size=32)
    with pytest.raises(SiamdiffError, match="segment.network swinunetr needs the Python package 'einops'"):
        seg.train_segmenter(rgb, mask, network="swinunetr", settings=SMALL["swinunetr"], max_steps=1, progress=False)
