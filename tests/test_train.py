"""Training loop: frozen parts, released recipe, resume equality, NaN stop, sampler, schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from project_params import section
from siamdiff.data.sampler import BalancedBatchSampler
from siamdiff.model.schedule import make_train_scheduler
from siamdiff.model.siamese import naive_step, trainable_parameters, unet_frozen_modules
from siamdiff.train import loop as train_loop
from siamdiff.train.checkpoints import list_checkpoints
from siamdiff.train.loop import TrainConfig, TrainData, make_batch, train
from siamdiff.train.schedules import lambda_c, lr_factor
from siamdiff.utils import SiamdiffError
from test_siamese import LATENT, SIZE, tiny_models


def tiny_data(n: int = 12, seed: int = 0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, SIZE, SIZE, generator=g) > torch.linspace(0.2, 0.95, n).view(n, 1, 1)).to(torch.uint8)
    return TrainData(latent_mean=torch.randn(n, 4, LATENT, LATENT, generator=g),
                     latent_std=torch.rand(n, 4, LATENT, LATENT, generator=g) * 0.1,
                     image=torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1, mask=mask,
                     coverage=mask.float().mean((1, 2)).numpy(), scaling_factor=0.5,
                     ids=[(f"x-{i}", 0) for i in range(n)])


def text(seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randn(1, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)


def config(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=3, lr=1e-3, checkpoint_every=2, preview_every=0, augment_t_max=600,
                prompt="p", seed=0)
    base.update(kw)
    return TrainConfig.from_params(section("train", **base))


def run(tmp_path, cfg, stop_after=None, models=None):
    unet, controlnet = models or tiny_models(nonzero=False)
    prompt_emb, empty_emb = text()
    summary = train(cfg, unet=unet, controlnet=controlnet, scheduler=make_train_scheduler(), data=tiny_data(),
                    prompt_emb=prompt_emb, empty_emb=empty_emb, checkpoint_dir=tmp_path, inputs={"x": "1"},
                    stop_after=stop_after, log=lambda m: None, progress=False)
    return unet, controlnet, summary


def state(unet, controlnet):
    return {**{f"unet.{k}": v.clone() for k, v in unet.state_dict().items()},
            **{f"cn.{k}": v.clone() for k, v in controlnet.state_dict().items()}}


def test_frozen_parameters_bit_identical_after_steps(tmp_path):
    unet, controlnet = tiny_models(nonzero=False)
    frozen = {f"{i}.{k}": v.clone() for i, m in enumerate(unet_frozen_modules(unet)) for k, v in m.state_dict().items()}
    decoder = [p.detach().clone() for p in trainable_parameters(controlnet, unet)["unet_decoder"]]
    zero_convs = [p.detach().clone() for p in controlnet.controlnet_down_blocks.parameters()]
    run(tmp_path, config(steps=3, checkpoint_every=0), models=(unet, controlnet))
    after = {f"{i}.{k}": v for i, m in enumerate(unet_frozen_modules(unet)) for k, v in m.state_dict().items()}
    assert frozen.keys() == after.keys() and all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert any(not torch.equal(a, b) for a, b in zip(decoder, trainable_parameters(controlnet, unet)["unet_decoder"]))
    assert any(not torch.equal(a, b) for a, b in zip(zero_convs, controlnet.controlnet_down_blocks.parameters()))


def test_resume_gives_identical_weights(tmp_path):
    cfg = config()
    ua, ca, sa = run(tmp_path / "a", cfg)  # uninterrupted
    _, _, sb1 = run(tmp_path / "b", cfg, stop_after=3)  # "killed" after 3 steps; last checkpoint at 2
    assert sb1["completed_steps"] == 3
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2]
    ub, cb, sb = run(tmp_path / "b", cfg)  # fresh process state, resumes from step 2
    assert sb["resumed_from_step"] == 2 and sb["completed_steps"] == 6
    a, b = state(ua, ca), state(ub, cb)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    assert sa["final"] == sb["final"]


def test_ema_model_is_the_average_and_resumes_bit_identically(tmp_path):
    """train.ema_decay: the trained weights end as diffusers' EMA of the raw trajectory (computed here from the
    raw weights after each step); a run killed and resumed reaches the same EMA and the same raw checkpoint."""
    from diffusers.training_utils import EMAModel

    class Snapshots:  # a dvclive stand-in: the loop calls next_step() once after each optimiser step
        def __init__(self, params):
            self.params, self.taken = params, []

        def log_metric(self, *args, **kwargs):
            pass

        def next_step(self):
            self.taken.append([p.detach().clone().requires_grad_() for p in self.params])  # EMAModel copies frozen ones

    unet, controlnet = tiny_models(nonzero=False)
    prompt_emb, empty_emb = text()
    raw = Snapshots(train_loop.params_of(trainable_parameters(controlnet, unet)))
    train(config(checkpoint_every=0), unet=unet, controlnet=controlnet, scheduler=make_train_scheduler(),
          data=tiny_data(), prompt_emb=prompt_emb, empty_emb=empty_emb, checkpoint_dir=tmp_path / "raw",
          inputs={"x": "1"}, live=raw, log=lambda m: None, progress=False)
    per_step = raw.taken
    assert len(per_step) == 6
    fresh_unet, fresh_cn = tiny_models(nonzero=False)
    expected = EMAModel(train_loop.params_of(trainable_parameters(fresh_cn, fresh_unet)), decay=0.9)
    for params in per_step:
        expected.step(params)

    cfg = config(ema_decay=0.9, preview_every=3)  # 3 divides the 6 steps: the last preview is still the EMA's
    ua, ca = tiny_models(nonzero=False)
    got = train_loop.params_of(trainable_parameters(ca, ua))
    previewed = {}
    train(cfg, unet=ua, controlnet=ca, scheduler=make_train_scheduler(), data=tiny_data(), prompt_emb=prompt_emb,
          empty_emb=empty_emb, checkpoint_dir=tmp_path / "a", inputs={"x": "1"}, log=lambda m: None, progress=False,
          preview=lambda step: previewed.setdefault(step, []).append([p.detach().clone() for p in got]))
    assert all(torch.allclose(g, e, atol=1e-7) for g, e in zip(got, expected.shadow_params))
    assert not all(torch.equal(g, r) for g, r in zip(got, per_step[-1]))  # not the raw weights
    assert sorted(previewed) == [3, 6] and len(previewed[6]) == 1
    assert all(torch.equal(p, g) for p, g in zip(previewed[6][0], got))  # the final preview shows the model

    run(tmp_path / "b", cfg, stop_after=3)
    ub, cb, sb = run(tmp_path / "b", cfg)
    assert sb["resumed_from_step"] == 2
    a, b = state(ua, ca), state(ub, cb)
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    for name in ("controlnet.safetensors", "ema.safetensors"):
        assert (tmp_path / "a/step-000006" / name).read_bytes() == (tmp_path / "b/step-000006" / name).read_bytes()


def test_changed_params_do_not_resume(tmp_path):
    run(tmp_path, config(steps=2))
    _, _, s = run(tmp_path, config(steps=2, lr=2e-3))
    assert s["resumed_from_step"] is None and s["completed_steps"] == 2


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    real = train_loop.STEPS["fused"]

    def poisoned(unet, controlnet, scheduler, batch, step, total, cfg):
        out = real(unet, controlnet, scheduler, batch, step, total, cfg)
        if step == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setitem(train_loop.STEPS, "fused", poisoned)
    with pytest.raises(SiamdiffError) as e:
        run(tmp_path, config())
    msg = str(e.value)
    assert "nan" in msg and "step 3" in msg and "step-000002" in msg
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    monkeypatch.setitem(train_loop.STEPS, "fused", real)
    _, _, s = run(tmp_path, config())  # the kept checkpoint resumes
    assert s["resumed_from_step"] == 2


def test_options_off_equal_the_released_recipe(tmp_path):
    """Loop with defaults (constant lr, lambda_c 1, no warm-up, no accumulation) == naive step + AdamW(lr)."""
    cfg = TrainConfig.from_params(section("train", steps=2, batch_size=3, lr=1e-5, checkpoint_every=0,
                                          preview_every=0, step_impl="naive", prompt="p"))
    unet, controlnet, _ = run(tmp_path, cfg)
    # by hand, as the released code: AdamW(params, lr) with torch's defaults (betas 0.9/0.999, weight decay 0.01)
    u2, c2 = tiny_models(nonzero=False)
    params = list(c2.parameters()) + [p for m in (u2.up_blocks, u2.conv_norm_out, u2.conv_out) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-5)
    data, (pe, ee) = tiny_data(), text()
    sampler = BalancedBatchSampler(data.coverage, 3, seed=0)
    gen = torch.Generator().manual_seed(0)
    sched = make_train_scheduler()
    for s in range(2):
        batch = make_batch(data, sampler.next_batch(), pe, ee, gen, cfg, 1000, "cpu")
        opt.zero_grad()
        naive_step(u2, c2, sched, batch, s, 2).loss.backward()
        opt.step()
    a, b = state(unet, controlnet), state(u2, c2)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grad_accumulation_and_lambda_c_warmup_run(tmp_path):
    _, _, s = run(tmp_path, config(steps=2, grad_accumulation=2, lambda_c_warmup=10, lr_warmup=1,
                                   lr_schedule="cosine", checkpoint_every=0))
    assert s["completed_steps"] == 2 and np.isfinite(s["final"]["loss"])


def test_balanced_sampler_two_to_one_deterministic_resumable():
    cov = np.linspace(0, 1, 30)
    s1 = BalancedBatchSampler(cov, 9, seed=3)
    fg = set(np.flatnonzero(cov > np.median(cov)))
    batches = [s1.next_batch() for _ in range(5)]
    for b in batches:
        assert len(b) == 9 and sum(i in fg for i in b) == 6
    s2 = BalancedBatchSampler(cov, 9, seed=3)
    assert [s2.next_batch() for _ in range(5)] == batches
    saved = s2.state_dict()
    import json

    saved = json.loads(json.dumps(saved))
    want = [s2.next_batch() for _ in range(4)]
    s3 = BalancedBatchSampler(cov, 9, seed=99)
    s3.load_state_dict(saved)
    assert [s3.next_batch() for _ in range(4)] == want
    # every row of a queue is seen once per pass
    s4 = BalancedBatchSampler(cov, 3, seed=0)
    seen = [i for _ in range(5) for i in s4.next_batch()[:2]]
    assert len(set(seen)) == 10
    assert BalancedBatchSampler(cov, 4, balanced=False).next_batch() != []


def test_schedules():
    assert lr_factor(0, 100) == 1.0 and lr_factor(99, 100) == 1.0  # released: constant
    assert lr_factor(0, 100, warmup=10) == pytest.approx(0.1) and lr_factor(9, 100, warmup=10) == 1.0
    assert lr_factor(10, 100, 10, "cosine") == 1.0 and lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lambda_c(0, 1.0, 0) == 1.0 and lambda_c(0, 1.0, 600) == 0.0 and lambda_c(300, 1.0, 600) == 0.5
    assert lambda_c(900, 1.0, 600) == 1.0


def test_bad_params_are_clear():
    with pytest.raises(SiamdiffError, match="train.loss"):
        TrainConfig.from_params(section("train", loss="both"))
    with pytest.raises(SiamdiffError, match="train.bogus"):
        TrainConfig.from_params(section("train", bogus=1))
