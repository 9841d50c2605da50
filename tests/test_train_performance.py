"""GPU memory/speed options (siamdiff/train/performance.py) leave the method's numbers alone, on CPU."""
from __future__ import annotations

import pytest
import torch

from siamdiff.model.schedule import make_train_scheduler
from siamdiff.model.siamese import STEPS, StepConfig, trainable_parameters
from siamdiff.train import performance as perf
from test_siamese import tiny_batch, tiny_models


def _grads(impl, unet, controlnet, step):
    params = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    for p in params:
        p.grad = None
    out = STEPS[impl](unet, controlnet, make_train_scheduler(), tiny_batch(t=(3, 150, 700, 200), seed=2), step, 30,
                      StepConfig())
    out.loss.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return out, grads


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_gradient_checkpointing_gives_the_same_gradients(impl):
    """Late step (L3 on): every branch, U_sg (detached decoder weights) included, recomputed in backward."""
    unet, controlnet = tiny_models(seed=1)
    ref, g_ref = _grads(impl, unet, controlnet, 25)
    perf.set_gradient_checkpointing([unet, controlnet], True)
    assert unet.is_gradient_checkpointing and controlnet.is_gradient_checkpointing
    try:
        out, g = _grads(impl, unet, controlnet, 25)
    finally:
        perf.set_gradient_checkpointing([unet, controlnet], False)
    assert not unet.is_gradient_checkpointing
    assert float(out.augment_weight.sum()) > 0  # L3 ran, so its recomputation is covered
    torch.testing.assert_close(out.loss, ref.loss, atol=0, rtol=0)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)
    assert max(float(x.abs().max()) for x in g) > 0


def test_sdpa_and_classic_attention_agree():
    unet, controlnet = tiny_models(seed=3)
    assert perf.set_attention([unet, controlnet], "sdpa") == "AttnProcessor2_0"
    a, ga = _grads("fused", unet, controlnet, 25)
    assert perf.set_attention([unet, controlnet], "classic") == "AttnProcessor"
    b, gb = _grads("fused", unet, controlnet, 25)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-6)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_buckets_keep_order_dtype_and_size():
    ts = [torch.zeros(10), torch.zeros(300), torch.zeros(5), torch.zeros(2, dtype=torch.float16), torch.zeros(1)]
    assert perf.buckets(ts, 310 * 4) == [[0, 1], [2], [3], [4]]  # 10+300 floats fit, +5 not; a dtype change splits
    assert perf.buckets(ts[:3], 10) == [[0], [1], [2]]          # a tensor larger than a bucket gets its own
    assert perf.buckets([], 10) == []


def test_training_memory_counts_weights_gradients_and_adam_state():
    unet, controlnet = tiny_models()
    trainable = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    n_all = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in controlnet.parameters())
    n_train = sum(p.numel() for p in trainable)
    mem = perf.training_memory([unet, controlnet, unet], trainable)  # a module listed twice counts once
    assert mem == {"weights": 4 * n_all, "gradients": 4 * n_train, "optimizer_state": 8 * n_train}
    assert perf.training_memory([unet], trainable, "adamw8bit")["optimizer_state"] < 2.1 * n_train
    assert perf.format_bytes(3 * 2**30) == "3.00 GiB" and perf.format_bytes(512) == "512 B"


def test_adamw8bit_without_bitsandbytes_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    from siamdiff.utils import SiamdiffError

    with pytest.raises(SiamdiffError, match="adamw8bit needs bitsandbytes"):
        perf.make_optimizer("adamw8bit", [{"params": [torch.nn.Parameter(torch.zeros(2))]}], 1e-5, (0.9, 0.999), 0.01)


def test_training_with_checkpointing_equals_training_without(tmp_path):
    """The loop with gradient_checkpointing on reaches the same weights (3 steps, L3 on in the last), logs the
    memory its weights, gradients and AdamW state take, and keeps the checkpoint fingerprint (resumable)."""
    from project_params import section
    from siamdiff.train.loop import TrainConfig, train
    from test_train import state, text, tiny_data

    def run(name, **kw):
        cfg = TrainConfig.from_params(section("train", steps=3, batch_size=3, lr=1e-3, checkpoint_every=3,
                                              preview_every=0, augment_t_max=600, prompt="p", seed=0, **kw))
        unet, controlnet = tiny_models(nonzero=False)
        logs = []
        prompt_emb, empty_emb = text()
        train(cfg, unet=unet, controlnet=controlnet, scheduler=make_train_scheduler(), data=tiny_data(),
              prompt_emb=prompt_emb, empty_emb=empty_emb, checkpoint_dir=tmp_path / name, inputs={"x": "1"},
              log=logs.append, progress=False)
        perf.set_gradient_checkpointing([unet, controlnet], False)
        return state(unet, controlnet), logs, cfg.fingerprint({"x": "1"})

    a, logs_a, fp_a = run("off")
    b, logs_b, fp_b = run("on", gradient_checkpointing=True, reduce_bucket_mb=1.0)
    assert fp_a == fp_b
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-7, rtol=1e-6)
    assert any("gradient checkpointing on" in m for m in logs_b)
    assert any("attention AttnProcessor2_0" in m for m in logs_a)
    mem = next(m for m in logs_a if m.startswith("memory per process"))
    assert "weights" in mem and "gradients" in mem and "optimizer state" in mem and "adamw" in mem


def _reduce_worker(rank, world, port, queue):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    shapes = [(3, 4), (700,), (2, 2, 3), (1,), (300, 2)]
    grads = [torch.randn(s, generator=g) for s in shapes]
    a = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    b = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for i, (p, q, gr) in enumerate(zip(a, b, grads)):
        if not (rank == 1 and i == 3):  # a parameter without a gradient on one process counts as zeros
            p.grad, q.grad = gr.clone(), gr.clone()
    calls = perf.allreduce_mean_bucketed(a, world, bucket_mb=1000 * 4 / 2**20)
    perf.allreduce_mean_per_tensor(b, world)
    queue.put((rank, calls, *([t.numpy() for t in ts] for ts in ([p.grad for p in a], [q.grad for q in b], grads))))
    dist.destroy_process_group()


def test_bucketed_allreduce_equals_per_tensor_mean():
    import torch.multiprocessing as mp

    from siamdiff.net import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_reduce_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted((queue.get(timeout=120) for _ in procs), key=lambda r: r[0])
    for p in procs:
        p.join(timeout=60)
    (_, calls, a0, b0, g0), (_, _, a1, b1, g1) = [(r, c, *([torch.from_numpy(x) for x in xs] for xs in rest))
                                                   for r, c, *rest in got]
    assert calls == 2  # 12 + 700 + 12 + 1 elements fit 1000, the last 600 do not
    g1[3] = torch.zeros_like(g1[3])
    for i in range(len(g0)):
        expected = (g0[i] + g1[i]) / 2
        assert torch.equal(a0[i], b0[i]) and torch.equal(a0[i], a1[i])
        torch.testing.assert_close(a0[i], expected, atol=0, rtol=0)
