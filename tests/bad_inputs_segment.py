"""Bad-input cases for the segmenter's choice (issue 17, item 7): segment.network, its sub-mapping, segment.input_size.
Each must give one line naming the parameter, before any data is read or any network is trained."""
from __future__ import annotations

from bad_input_registry import case
from project_params import section


def _segment(**changes):
    from stages.segment import check_params
    return lambda: check_params(section("segment", **changes))


@case("segment: unknown network")
def _(tmp, mp):
    return _segment(network="polyp-pvt"), "segment.network"


@case("segment: a unet key under segresnet")
def _(tmp, mp):
    return _segment(segresnet={"init_filters": 32, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1],
                               "num_res_units": 1}), "segment.segresnet.num_res_units"


@case("segment: a network key at the section's top level (segment.channels)")
def _(tmp, mp):
    return _segment(channels=[16, 32, 64]), "segment.unet.channels"


@case("segment: swinunetr at an input_size not divisible by 32")
def _(tmp, mp):
    return _segment(network="swinunetr", input_size=384 - 8), "segment.input_size"


@case("segment: segresnet init_filters not a multiple of 8")
def _(tmp, mp):
    return _segment(segresnet={"init_filters": 12, "blocks_down": [1, 2], "blocks_up": [1]}), \
        "segment.segresnet.init_filters"


@case("segment: segresnet blocks_up not one shorter than blocks_down")
def _(tmp, mp):
    return _segment(segresnet={"init_filters": 16, "blocks_down": [1, 2], "blocks_up": [1, 1]}), \
        "segment.segresnet.blocks_up"


@case("segment: swinunetr feature_size not a multiple of 12")
def _(tmp, mp):
    return _segment(swinunetr={"feature_size": 20}), "segment.swinunetr.feature_size"


@case("segment: input_size null and images the network cannot take")
def _(tmp, mp):
    import torch

    from siamdiff.metrics.segmentation import train_segmenter
    rgb, mask = torch.zeros(2, 18, 18, 3, dtype=torch.uint8), torch.zeros(2, 18, 18, dtype=torch.uint8)
    return lambda: train_segmenter(rgb, mask, network="unet", settings={"channels": [4, 8, 16], "num_res_units": 0},
                                   max_steps=1, progress=False), "segment.input_size"


@case("segment: a network whose package is not installed")
def _(tmp, mp):
    from siamdiff.metrics import segmentation as seg
    from stages import segment

    mp.setattr(seg, "missing_package", lambda network: "einops" if network == "swinunetr" else None)
    return lambda: segment.run(section("segment", network="swinunetr"), root=tmp, progress=False), "segment.network"
