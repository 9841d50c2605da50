"""Segmentation metrics: MONAI UNet training smoke, Dice/IoU definitions, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def _toy(n: int, size: int = 16, seed: int = 0):
    """Bright squares on a dark textured background; the mask marks the square."""
    g = torch.Generator().manual_seed(seed)
    rgb = (torch.rand(n, size, size, 3, generator=g) * 60).to(torch.uint8)
    mask = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
        mask[i, y:y + 6, x:x + 6] = 1
    rgb[mask.bool()] = 220
    return rgb, mask


def test_dice_iou_definitions():
    from siamdiff.metrics.segmentation import dice_iou

    gt = torch.zeros(3, 4, 4)
    gt[0, :2] = 1  # 8 px
    gt[1, :2] = 1
    prob = torch.zeros(3, 4, 4)
    prob[0, :2] = 0.9  # perfect
    prob[1, :1] = 0.7  # 4 of 8 px
    # image 2: empty mask, empty prediction -> 1 (MONAI ignore_empty=False)
    dice, iou = dice_iou(prob, gt)
    assert np.allclose(dice, [1.0, 2 * 4 / (4 + 8), 1.0])
    assert np.allclose(iou, [1.0, 4 / 8, 1.0])
    prob[2, 0, 0] = 0.6  # false positive on an empty mask -> 0
    dice, iou = dice_iou(prob, gt)
    assert dice[2] == 0 and iou[2] == 0
    prob[2, 0, 0] = 0.4  # below the 0.5 threshold
    assert dice_iou(prob, gt)[0][2] == 1


def test_segmenter_learns_and_round_trips(tmp_path):
    from siamdiff.metrics.segmentation import load_segmenter, predict, save_segmenter, score, train_segmenter

    rgb, mask = _toy(32)
    model = train_segmenter(rgb, mask, channels=(8, 16), epochs=6, batch_size=8, lr=0.01, seed=0,
                            progress=False, num_res_units=0)
    test_rgb, test_mask = _toy(8, seed=1)
    s = score(model, test_rgb, test_mask)
    assert s["n"] == 8 and s["mdice"] > 0.6, s
    save_segmenter(model, tmp_path / "seg", {"channels": [8, 16], "num_res_units": 0})
    again = load_segmenter(tmp_path / "seg")
    assert torch.allclose(predict(model, test_rgb), predict(again, test_rgb), atol=1e-6)


def test_max_steps_and_bad_folder(tmp_path):
    from siamdiff.metrics.segmentation import load_segmenter, train_segmenter
    from siamdiff.utils import SiamdiffError

    rgb, mask = _toy(4)
    train_segmenter(rgb, mask, channels=(4, 8), max_steps=3, batch_size=2, progress=False, num_res_units=0)
    with pytest.raises(SiamdiffError, match="segmenter"):
        load_segmenter(tmp_path)
