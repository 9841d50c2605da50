"""GPU memory and speed of training (params.yaml `train`: gradient_checkpointing, attention, allow_tf32,
optimizer, reduce_bucket_mb; mixed_precision is accelerate's autocast in siamdiff/train/loop.py), data-parallel
gradient averaging in a few bucketed collectives, and the memory a training run will hold.

None of these changes the method: checkpointing recomputes the same activations in the backward pass,
SDPA and the classic attention are the same function, set_to_none only frees memory. TF32 matmuls, autocast
and 8-bit AdamW change the numbers and are off in params.yaml (the released recipe is fp32 throughout).

`allreduce_mean_bucketed(params, world, bucket_mb)`: after the backward pass(es) of a step, every process holds
the gradient of its slice of the global batch; this makes every `p.grad` the mean over the processes. The
gradients (a missing one counts as zeros) are packed in order into flat buckets of about `bucket_mb` MiB
(one dtype and device per bucket, as torch DDP's `bucket_cap_mb`), each bucket is summed with one
`all_reduce` launched asynchronously (the next bucket is packed while the previous ones are in flight), then
divided by `world` and unpacked. 756 per-tensor collectives per step at SD-1.5 scale become ~140 (25 MiB
buckets, 3.5 GB of fp32 gradients), and the result is the same sum element for element as reducing each
tensor on its own (bench/bench_allreduce.py measures both).

Why after the backward pass and not overlapped with it (torch DDP's hooks): one Siamese step runs the
ControlNet on both branches and U's decoder on several inputs, and whether the online-augmentation pass runs
depends on each process's own timesteps, so the order in which gradients become ready differs between
processes; DDP would need `find_unused_parameters` plus hooks that fire once per backward, not once per use.
Reducing after the backward pass is exact, order-independent and needs neither.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

DEFAULT_BUCKET_MB = 25


# ---------------------------------------------------------------------------------------- speed options

def set_attention(models: Sequence[torch.nn.Module], kind: str) -> str:
    """`sdpa`: diffusers' AttnProcessor2_0 (torch.nn.functional.scaled_dot_product_attention: flash /
    memory-efficient kernels on GPUs; diffusers' default with torch 2) on every attention layer;
    `classic`: AttnProcessor (explicit softmax(QK^T)V, the released code's). Returns a description."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    cls = {"sdpa": AttnProcessor2_0, "classic": AttnProcessor}[kind]
    names = set()
    for m in models:
        if getattr(m, "attn_processors", None):
            m.set_attn_processor(cls())
            names.update(type(p).__name__ for p in m.attn_processors.values())
    return ", ".join(sorted(names)) or "no attention layers"


def checkpoint_block(module: torch.nn.Module, *args):
    """diffusers' per-block checkpoint (non-reentrant torch.utils.checkpoint), recomputed in the backward pass
    with the weights the block ran with in the forward pass. Those differ from the module's own in U_sg, which
    runs U's decoder through `functional_call` with detached weights: a plain checkpoint would recompute it with
    the live (trainable) weights after `functional_call` has returned, a different graph (torch refuses it)."""
    from torch.func import functional_call
    from torch.utils.checkpoint import checkpoint

    weights = dict(module.named_parameters())
    if all(isinstance(w, torch.nn.Parameter) for w in weights.values()):
        return checkpoint(module, *args, use_reentrant=False)
    return checkpoint(lambda *a: functional_call(module, weights, a), *args, use_reentrant=False)


def set_gradient_checkpointing(models: Sequence[torch.nn.Module], enabled: bool) -> None:
    """diffusers' gradient checkpointing (per resnet / transformer block) on U and the ControlNet: their
    activations are recomputed in the backward pass instead of held. Blocks that run without grad (U's frozen
    encoder) are never checkpointed; the gradients are the same (tests/test_train_performance.py)."""
    for m in models:
        if enabled:
            m.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_block)
        elif getattr(m, "is_gradient_checkpointing", False):
            m.disable_gradient_checkpointing()


def set_tf32(allow: bool) -> None:
    """TF32 tensor-core matmuls (Ampere and newer; ~10-bit mantissa in the products). `False` leaves torch's
    defaults: fp32 matmuls, cuDNN convolutions TF32 (torch's default since 1.7, which the released code ran
    with). No effect without CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = bool(allow)
    if allow:
        torch.backends.cudnn.allow_tf32 = True


def make_optimizer(kind: str, groups: list[dict], lr: float, betas: tuple, weight_decay: float):
    """AdamW (`adamw`, torch) or 8-bit AdamW (`adamw8bit`, bitsandbytes: blockwise-quantised moments, a
    quarter of the optimiser state; needs bitsandbytes and a GPU)."""
    from siamdiff.utils import SiamdiffError

    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if kind == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise SiamdiffError("params.yaml: train.optimizer=adamw8bit needs bitsandbytes (pip install "
                                f"bitsandbytes; GPU only): {e}; or set train.optimizer: adamw") from e
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    raise SiamdiffError(f"params.yaml: train.optimizer must be adamw or adamw8bit, got {kind!r}")


def buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> list[list[int]]:
    """Indices of `tensors` grouped in order into runs of at most `bucket_bytes` (a larger tensor gets its own),
    one dtype and device per run."""
    out, cur, size, key = [], [], 0, None
    for i, t in enumerate(tensors):
        nbytes = t.numel() * t.element_size()
        k = (t.dtype, t.device)
        if cur and (k != key or size + nbytes > bucket_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += nbytes
        key = k
    if cur:
        out.append(cur)
    return out


def allreduce_mean_bucketed(params: Sequence[torch.nn.Parameter], world: int,
                            bucket_mb: float = DEFAULT_BUCKET_MB, group=None) -> int:
    """Average `p.grad` over the `world` processes of `group` in buckets. Returns the number of collectives."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    if world <= 1:
        return 0
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    pending = []
    for idx in buckets(grads, max(1, int(bucket_mb * 2**20))):
        flat = _flatten_dense_tensors([grads[i] for i in idx])
        pending.append((idx, flat, dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group, async_op=True)))
    for idx, flat, work in pending:
        work.wait()
        flat.div_(world)
        for i, g in zip(idx, _unflatten_dense_tensors(flat, [grads[i] for i in idx])):
            grads[i].copy_(g)
    return len(pending)


def allreduce_mean_per_tensor(params: Sequence[torch.nn.Parameter], world: int, group=None) -> int:
    """The previous scheme, kept for bench/bench_allreduce.py: one blocking all_reduce per tensor."""
    import torch.distributed as dist

    if world <= 1:
        return 0
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
        p.grad.div_(world)
    return len(params)


# ----------------------------------------------------------------------------------------------- memory

def _nbytes(params: Iterable[torch.nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def training_memory(modules: Sequence[torch.nn.Module], trainable: Sequence[torch.nn.Parameter],
                    optimizer: str = "adamw") -> dict[str, int]:
    """Bytes the weights, gradients and optimiser state of a run take (activations not included).

    weights: every parameter of `modules` (frozen ones too) at its dtype; gradients: one per trainable
    parameter at its dtype; AdamW: two fp32 moments per trainable element (`adamw8bit`: two uint8 moments
    plus one fp32 scale per 256-element block each, bitsandbytes' blockwise quantisation).
    """
    seen, weights = set(), 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                weights += p.numel() * p.element_size()
    n = sum(p.numel() for p in trainable)
    state = 2 * 4 * n if optimizer == "adamw" else 2 * (n + 4 * -(-n // 256))
    return {"weights": weights, "gradients": _nbytes(trainable), "optimizer_state": state}


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
