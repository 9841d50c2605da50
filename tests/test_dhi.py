"""Dense Hint Input (DESIGN.md section 1) and the SiameseControlNet that carries it."""
from __future__ import annotations

import torch

from siamdiff.model.controlnet import SiameseControlNet, controlnet_residuals, dhi_widths
from siamdiff.model.dhi import DenseHintInput, PatchMerging, ResBlock
from test_siamese import FACTOR, LATENT, SIZE, tiny_unet


def test_dhi_at_sd15_widths_has_2_53m_parameters_plus_zero_conv():
    dhi = DenseHintInput(out_channels=320, downsample_factor=8)  # built only, random weights
    zero = sum(p.numel() for p in dhi.zero_conv.parameters())
    body = sum(p.numel() for p in dhi.parameters()) - zero
    assert zero == 256 * 320 * 9 + 320
    assert abs(body - 2.53e6) < 0.01e6, body
    assert not dhi.zero_conv.weight.any() and not dhi.zero_conv.bias.any()
    # three PatchMerging stages (log2 8), widths 64, 128, 256
    merges = [m for m in dhi.modules() if isinstance(m, PatchMerging)]
    assert [m.reduction.out_features for m in merges] == [64, 128, 256]
    assert [m.norm.normalized_shape[0] for m in merges] == [128, 256, 512]
    assert dhi_widths(8) == (16, 32, 64, 128, 256)


def test_dhi_structure_and_shapes():
    dhi = DenseHintInput(out_channels=24, downsample_factor=4)
    convs = [m for m in dhi.full_res if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 16), (16, 32)]
    assert [r.conv1.in_channels for r in dhi.full_res if isinstance(r, ResBlock)] == [16, 32]
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d)) for m in dhi.modules())
    x = torch.rand(2, 3, 32, 32)
    assert dhi(x).shape == (2, 24, 8, 8)
    assert not dhi(x).any()  # zero conv


def test_resblock_and_patch_merging_equations():
    torch.manual_seed(0)
    rb = ResBlock(4)
    x = torch.randn(1, 4, 6, 6)
    silu = torch.nn.functional.silu
    torch.testing.assert_close(rb(x), silu(rb.conv2(silu(rb.conv1(x))) + x))
    pm = PatchMerging(2)
    x = torch.randn(1, 2, 4, 4)
    y = pm(x)
    assert y.shape == (1, 4, 2, 2)
    # top-left output = Linear(LN([x00, x10, x01, x11]))
    v = torch.cat([x[0, :, 0, 0], x[0, :, 1, 0], x[0, :, 0, 1], x[0, :, 1, 1]])
    torch.testing.assert_close(y[0, :, 0, 0], pm.reduction(pm.norm(v)))


def test_controlnet_from_unet_roundtrip_and_residuals(tmp_path):
    unet = tiny_unet()
    cn = SiameseControlNet.from_unet(unet, downsample_factor=FACTOR)
    assert isinstance(cn.controlnet_cond_embedding, DenseHintInput)
    for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):  # copy of U's encoder + middle
        for a, b in zip(getattr(cn, name).state_dict().values(), getattr(unet, name).state_dict().values()):
            assert torch.equal(a, b)
    zero = list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters())
    assert zero and not any(p.any() for p in zero)
    with torch.no_grad():
        for p in cn.parameters():
            p.normal_(0, 0.05)
    cn.save_pretrained(tmp_path / "cn")
    back = SiameseControlNet.from_pretrained(tmp_path / "cn")
    assert isinstance(back.controlnet_cond_embedding, DenseHintInput)
    for (ka, a), (kb, b) in zip(cn.state_dict().items(), back.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    z, t, c, cond = torch.randn(2, 4, LATENT, LATENT), torch.tensor([1, 900]), torch.randn(2, 5, 16), torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        d1, m1 = back(z, t, c, controlnet_cond=cond, return_dict=False)
        d2, m2 = controlnet_residuals(back, z, t, c, back.controlnet_cond_embedding(cond))
    assert all(torch.equal(a, b) for a, b in zip(d1, d2)) and torch.equal(m1, m2)


def test_controlnet_from_sd_layout_folder(tmp_path):
    """paper path: a tiny SD-1.5-layout folder (8x autoencoder) through the same code."""
    from diffusers import UNet2DConditionModel

    from tiny_sd import make_tiny_sd

    make_tiny_sd(tmp_path / "sd")
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "sd", subfolder="unet", local_files_only=True)
    cn = SiameseControlNet.from_unet(unet, downsample_factor=8)
    assert cn.config.conditioning_embedding_out_channels == (16, 32, 64, 128, 256)
    emb = cn.controlnet_cond_embedding(torch.rand(1, 3, 64, 64))
    assert emb.shape == (1, unet.config.block_out_channels[0], 8, 8)
