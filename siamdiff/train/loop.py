"""The Siamese-Diffusion training loop (accelerate): DESIGN.md section 1, released recipe by default.

One optimizer step s = 0..S-1:
    for each of `grad_accumulation` micro-batches (2:1 foreground/background rows):
        z0 = (mean + std * n) * scaling_factor   (a sample of the autoencoder posterior, as the released code)
        t ~ U{0..T-1}, eps ~ N(0, I), prompt -> "" with probability prompt_dropout (per sample)
        loss = siamese step (fused or naive; equal to 1e-5) / grad_accumulation; backward
    AdamW step over the DHI, the rest of the ControlNet and U's decoder; lr scheduler step.

All randomness of a step comes from one `torch.Generator` and the sampler's own numpy generator; both are
checkpointed (with the optimizer, lr scheduler and global RNGs) so a resumed run reaches bit-identical
weights on CPU. A non-finite loss stops the run before the weights are touched, naming the last good
checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from siamdiff.data.sampler import BalancedBatchSampler
from siamdiff.machine import choose_cpu_autocast
from siamdiff.model.siamese import STEPS, TERMS, SiameseBatch, StepConfig, freeze_unet_encoder, trainable_parameters
from siamdiff.train import checkpoints as ckpt
from siamdiff.train import performance as perf
from siamdiff.train.schedules import image_weight, lambda_c, make_lr_scheduler
from siamdiff.utils import SiamdiffError

# params that do not change the numbers (excluded from the checkpoint fingerprint)
NON_NUMERIC = ("checkpoint_every", "preview_every", "keep_checkpoints", "preview_images", "preview_steps",
               "preview_guidance", "gradient_checkpointing", "attention", "reduce_bucket_mb")
# params added later that do change the numbers: at these (released) values they stay out of the fingerprint,
# so checkpoints written before the param existed still resume
FINGERPRINT_UNLESS = {"optimizer": "adamw", "allow_tf32": False, "ema_decay": None}


@dataclass
class TrainConfig:
    """The `train` section (types, ranges and meaning: siamdiff/params_schema.py and params.yaml, which holds
    the values; there are no defaults here, so none can drift from params.yaml)."""
    loss: str
    prompt: str
    steps: int
    batch_size: int
    lr: float
    lr_from_scratch: float | None   # DHI + the ControlNet's zero convs; None = lr
    lr_controlnet: float | None     # the ControlNet's copy of U's encoder + middle block; None = lr
    lr_unet_decoder: float | None   # U's decoder; None = lr
    weight_decay: float
    betas: tuple
    prompt_dropout: float
    augment_t_max: int
    augment_after: float
    lambda_c: float
    lambda_c_warmup: int
    lr_warmup: int
    lr_schedule: str
    ema_decay: float | None         # EMA of the trained weights, saved as the model; None = off (released)
    grad_accumulation: int
    mixed_precision: str
    gradient_checkpointing: bool
    attention: str
    allow_tf32: bool
    optimizer: str
    reduce_bucket_mb: float
    balanced_batches: bool
    step_impl: str
    checkpoint_every: int
    keep_checkpoints: int
    preview_every: int
    preview_images: int
    preview_steps: int
    preview_guidance: float
    seed: int

    @classmethod
    def from_params(cls, p: dict) -> "TrainConfig":
        from siamdiff.params_schema import validate_section

        cfg = cls(**validate_section("train", p))
        cfg.betas = tuple(cfg.betas)
        return cfg

    def fingerprint(self, inputs: dict) -> str:
        numeric = {k: v for k, v in asdict(self).items()
                   if k not in NON_NUMERIC and not (k in FINGERPRINT_UNLESS and FINGERPRINT_UNLESS[k] == v)}
        blob = json.dumps({"params": numeric, "inputs": inputs}, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass
class TrainData:
    """The training rows, in memory: latent posterior + hint inputs."""
    latent_mean: torch.Tensor   # [N, C, h, w]
    latent_std: torch.Tensor    # [N, C, h, w]
    image: torch.Tensor         # [N, 3, S, S] working space in ~[-1, 1]
    mask: torch.Tensor          # [N, S, S] uint8 {0, 1}
    coverage: np.ndarray        # [N] mask fraction
    scaling_factor: float
    ids: list = field(default_factory=list)

    def __len__(self):
        return self.latent_mean.shape[0]


def make_batch(data: TrainData, rows: list[int], prompt_emb: torch.Tensor, empty_emb: torch.Tensor,
               generator: torch.Generator, cfg: TrainConfig, num_timesteps: int, device) -> SiameseBatch:
    """One micro-batch; every random draw from `generator`, in a fixed order."""
    idx = torch.as_tensor(rows, dtype=torch.long)
    mean, std = data.latent_mean[idx], data.latent_std[idx]
    b = len(rows)
    z0 = (mean + std * torch.randn(mean.shape, generator=generator)) * data.scaling_factor
    t = torch.randint(0, num_timesteps, (b,), generator=generator)
    noise = torch.randn(z0.shape, generator=generator)
    drop = torch.rand(b, generator=generator) < cfg.prompt_dropout
    text = torch.where(drop.view(-1, 1, 1), empty_emb.expand(b, -1, -1), prompt_emb.expand(b, -1, -1))
    mask = data.mask[idx].unsqueeze(1).float()
    image = (data.image[idx].float() + 1) / 2  # x~: working space mapped to [0, 1], three channels
    return SiameseBatch(z0=z0.to(device), noise=noise.to(device), t=t.to(device), text_emb=text.to(device),
                        mask=mask.to(device), image=image.to(device))


def _decoder_state(unet) -> dict[str, torch.Tensor]:
    return {n: p for n, p in unet.named_parameters() if p.requires_grad}


def _quiet(msg: str) -> None:
    """The log of the processes other than the main one."""


def _mean_across_processes(values: list[float], world: int, device) -> list[float]:
    """The mean of each value over the `world` processes (one small all-reduce). Each process's loss terms are
    means over its equal slice of the global batch, so their mean is the global batch's: what one process
    computes, and what gets logged and written."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world).tolist()


def _progress(total: int, initial: int, enabled: bool):
    from siamdiff.utils import progress

    return progress(total=total, initial=initial, desc="train", disable=not enabled, mininterval=5.0,
                    dynamic_ncols=True)


def params_of(groups: dict) -> list:
    return [p for g in groups.values() for p in g]


def _make_ema(params: list, decay: float | None):
    """diffusers EMAModel of the trained parameters (its default warm-up: decay min(decay, (1+n)/(10+n)))."""
    if not decay:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=float(decay))


def _step_config(cfg: TrainConfig, lambda_c: float) -> StepConfig:
    return StepConfig(loss=cfg.loss, lambda_c=lambda_c, augment_t_max=int(cfg.augment_t_max),
                      augment_after=float(cfg.augment_after))


def _probe_step(unet, controlnet, scheduler, data: TrainData, prompt_emb, empty_emb, cfg: TrainConfig) -> None:
    """One forward + backward of the training step on the first rows, with a generator of its own (the run's
    draws are untouched) and the gradients dropped: what choose_cpu_autocast times."""
    rows = list(range(min(len(data), int(cfg.batch_size))))
    batch = make_batch(data, rows, prompt_emb, empty_emb, torch.Generator().manual_seed(1), cfg,
                       scheduler.config.num_train_timesteps, "cpu")
    freeze_unet_encoder(unet)
    controlnet.requires_grad_(True)
    STEPS[cfg.step_impl](unet, controlnet, scheduler, batch, 0, int(cfg.steps),
                         _step_config(cfg, float(cfg.lambda_c))).loss.backward()
    unet.zero_grad(set_to_none=True)
    controlnet.zero_grad(set_to_none=True)


def train(cfg: TrainConfig, *, unet, controlnet, scheduler, data: TrainData, prompt_emb: torch.Tensor,
          empty_emb: torch.Tensor, checkpoint_dir, inputs: dict | None = None, live=None,
          preview: Callable[[int], None] | None = None, stop_after: int | None = None,
          log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train `controlnet` and `unet`'s decoder in place. Returns a summary dict (metrics/train.json).

    `stop_after`: return after that many optimizer steps (simulates a kill; checkpoints as usual).
    """
    from accelerate import Accelerator

    use_cuda = torch.cuda.is_available()
    mixed = cfg.mixed_precision
    if mixed == "auto" and use_cuda:
        mixed = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif mixed == "auto":
        mixed = choose_cpu_autocast("auto", lambda: _probe_step(unet, controlnet, scheduler, data, prompt_emb,
                                                                 empty_emb, cfg), log=log)
    elif mixed != "no" and not use_cuda:
        log(f"train.mixed_precision={mixed} ignored on CPU (fp32; use auto: bf16 only where measured faster)")
        mixed = "no"
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=mixed)
    device, rank = accelerator.device, accelerator.process_index
    if not accelerator.is_main_process:  # one log, from the main process (the others train silently)
        log = _quiet
    total = int(cfg.steps)
    fingerprint = cfg.fingerprint(inputs or {})
    step_fn = STEPS[cfg.step_impl]

    freeze_unet_encoder(unet)
    controlnet.requires_grad_(True)
    unet.to(device).train()
    controlnet.to(device).train()
    attention = perf.set_attention([unet, controlnet], cfg.attention)
    perf.set_gradient_checkpointing([unet, controlnet], bool(cfg.gradient_checkpointing))
    if use_cuda:
        perf.set_tf32(bool(cfg.allow_tf32))
    log(f"attention {attention}; gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}; "
        f"autocast {mixed}" + (f"; TF32 matmuls {'on' if cfg.allow_tf32 else 'off'}" if use_cuda else ""))
    prompt_emb, empty_emb = prompt_emb.detach().cpu(), empty_emb.detach().cpu()

    groups = trainable_parameters(controlnet, unet)
    lrs = {"from_scratch": cfg.lr_from_scratch or cfg.lr, "controlnet": cfg.lr_controlnet or cfg.lr,
           "unet_decoder": cfg.lr_unet_decoder or cfg.lr}
    optimizer = perf.make_optimizer(
        cfg.optimizer,
        [{"params": groups[name], "lr": float(lrs[name]), "name": name} for name in ("from_scratch", "controlnet", "unet_decoder")],
        lr=float(cfg.lr), betas=tuple(float(b) for b in cfg.betas), weight_decay=float(cfg.weight_decay))
    lr_scheduler = make_lr_scheduler(optimizer, total, int(cfg.lr_warmup), cfg.lr_schedule)
    # Data parallel: every process draws the same global batch (same seeds) and trains on its slice, so N
    # processes reach the weights of one process with the same global batch (to float tolerance).
    world = accelerator.num_processes
    if int(cfg.batch_size) % world:
        raise SiamdiffError(f"params.yaml: train.batch_size={cfg.batch_size} must be divisible by the number of "
                            f"processes ({world}): it is the global batch, split across processes")
    params = params_of(groups)
    ema = _make_ema(params, cfg.ema_decay)
    sampler = BalancedBatchSampler(data.coverage, int(cfg.batch_size), seed=int(cfg.seed),
                                   balanced=bool(cfg.balanced_batches))
    generator = torch.Generator().manual_seed(int(cfg.seed) * 7919)
    optimizer = accelerator.prepare(optimizer)
    n_params = {k: sum(p.numel() for p in v) for k, v in groups.items()}
    mem = perf.training_memory([unet, controlnet], params, cfg.optimizer)
    log("memory per process before activations: " + " + ".join(
        f"{k.replace('_', ' ')} {perf.format_bytes(v)}" for k, v in mem.items())
        + f" = {perf.format_bytes(sum(mem.values()))} (weights of U and the ControlNet, frozen ones included; "
        f"{cfg.optimizer})")

    # resume
    start, history = 0, []
    checkpoint_dir = Path(checkpoint_dir)
    if accelerator.is_main_process:
        ckpt.remove_temporaries(checkpoint_dir)  # a killed checkpoint write's leftovers (never resumed)
    accelerator.wait_for_everyone()
    resume_path = ckpt.find_resumable(checkpoint_dir, fingerprint, rank=0, log=log)  # skips damaged ones, named

    def drop_stale() -> None:
        """Checkpoints of another configuration go only once this run has a whole one of its own: a run that
        fails before writing one (a bad param, a NaN loss, a full disk) leaves the previous run's alone."""
        removed = ckpt.remove_stale(checkpoint_dir, fingerprint)
        if removed:
            log(f"removed {len(removed)} checkpoint(s) of another configuration from {checkpoint_dir}")

    stale_pending = accelerator.is_main_process
    if resume_path is not None and stale_pending:
        drop_stale()
        stale_pending = False
    if resume_path is not None:
        state = ckpt.load_checkpoint(resume_path, controlnet=controlnet, unet=unet, optimizer=optimizer,
                                     lr_scheduler=lr_scheduler, sampler=sampler, generator=generator, ema=ema,
                                     rank=0)
        start, history = int(state["step"]), list(state.get("history", []))
        log(f"resumed from {resume_path} (step {start} of {total})")
        if live is not None:
            for row in history:
                for k, v in row.items():
                    if k != "step":
                        live.log_metric(k, v)
                live.next_step()
    log(f"training {n_params} parameters for {total - start} steps on {device} "
        f"({cfg.step_impl} step, loss {cfg.loss}, batch {cfg.batch_size} x {cfg.grad_accumulation}, "
        f"lr {lrs}, {len(data)} rows)")

    last_good = resume_path
    previewed = None  # the step whose preview this call drew last
    t_start = time.perf_counter()
    bar = _progress(total, start, progress and accelerator.is_local_main_process)
    for step in range(start, total):
        if stop_after is not None and step >= stop_after:
            break
        t0 = time.perf_counter()
        lam = lambda_c(step, float(cfg.lambda_c), int(cfg.lambda_c_warmup))
        step_cfg = _step_config(cfg, lam)
        sums = {k: 0.0 for k in TERMS}
        loss_sum, aug_rows = 0.0, 0
        for _ in range(int(cfg.grad_accumulation)):
            batch = make_batch(data, sampler.next_batch(), prompt_emb, empty_emb, generator, cfg,
                               scheduler.config.num_train_timesteps, device).shard(rank, world)
            with accelerator.autocast():
                out = step_fn(unet, controlnet, scheduler, batch, step, total, step_cfg)
            value = float(out.loss.detach())
            if not math.isfinite(value):
                terms = {k: float(v.detach().mean()) for k, v in out.terms.items()}
                where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
                raise SiamdiffError(
                    f"train: the loss became {value} at step {step} (terms {terms}); stopped before updating "
                    f"the weights; {where} (resume by rerunning after fixing the cause, e.g. lower train.lr)")
            accelerator.backward(out.loss / int(cfg.grad_accumulation))
            loss_sum += value
            for k, v in out.terms.items():
                sums[k] += float(v.detach().mean())
            if out.augment_weight is not None:
                aug_rows += int(out.augment_weight.sum())
        if world > 1:  # equal slices: the mean of the processes' gradients is the global batch's gradient
            # a few bucketed all-reduces, not one per tensor (a missing grad counts as zeros)
            perf.allreduce_mean_bucketed(params, world, float(cfg.reduce_bucket_mb))
        optimizer.step()
        if ema is not None:
            ema.step(params)
        lr_now = {g["name"]: g["lr"] for g in optimizer.param_groups}
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        if world > 1:  # the logged terms of the global batch, not of this process's slice
            loss_sum, *term_sums, aug_rows = _mean_across_processes([loss_sum, *sums.values(), aug_rows], world,
                                                                     device)
            sums, aug_rows = dict(zip(sums, term_sums)), round(aug_rows * world)
        k = int(cfg.grad_accumulation)
        row = {"step": step, "loss": loss_sum / k, **{f"loss_{name}": v / k for name, v in sums.items()},
               **{f"lr_{name}": v for name, v in lr_now.items()}, "lambda_c": lam,
               "image_weight": image_weight(step, total), "augment_rows": aug_rows,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if live is not None and accelerator.is_main_process:
            for name, v in row.items():
                if name != "step":
                    live.log_metric(name, v)
            live.next_step()
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{row['loss']:.4f}", L0=f"{row['loss_mask_diffusion']:.4f}")
        done = step + 1
        if accelerator.is_main_process and (done % int(cfg.checkpoint_every or total) == 0 or done == total):
            last_good = ckpt.save_checkpoint(
                checkpoint_dir, done, controlnet=accelerator.unwrap_model(controlnet),
                unet_decoder=_decoder_state(unet), optimizer=optimizer, lr_scheduler=lr_scheduler,
                sampler=sampler, generator=generator, fingerprint=fingerprint, history=history,
                keep=int(cfg.keep_checkpoints), ema=ema)
            if stale_pending:
                drop_stale()
                stale_pending = False
        # always at the last step: plots/train/preview.png is a declared DVC output, so
        # `preview_every: 0` means "final preview only", not "none" (else `dvc repro` fails). With EMA the last
        # one is drawn after the loop, from the averaged weights the model holds.
        due = done == total or (cfg.preview_every and done % int(cfg.preview_every) == 0)
        if preview is not None and accelerator.is_main_process and due and not (done == total and ema is not None):
            preview(done)
            previewed = done
    bar.close()
    if ema is not None and len(history) == total:
        ema.copy_to(params)  # the model is the average; the checkpoints keep the raw weights beside it
        log(f"the model holds the EMA of the weights (train.ema_decay {cfg.ema_decay})")
    # Resumed from the final checkpoint (a forced rerun, a changed preview/checkpoint param, a kill after the
    # last checkpoint): no step ran, but plots/train/preview.png is a declared output: draw it from the final
    # weights (fixed masks and seeds, so the same weights give the same file). With EMA it is drawn here.
    if (preview is not None and accelerator.is_main_process and len(history) == total and total > 0
            and previewed != total):
        if ema is None:
            log(f"resumed from the final checkpoint (step {total}): redrawing the preview from its weights")
        preview(total)
    seconds = time.perf_counter() - t_start
    ran = len(history) - start
    tail = history[-50:]
    summary = {
        "steps": total, "completed_steps": len(history), "resumed_from_step": start if resume_path else None,
        "step_impl": cfg.step_impl, "loss_mode": cfg.loss, "batch_size": int(cfg.batch_size),
        "grad_accumulation": int(cfg.grad_accumulation), "train_rows": len(data),
        "trainable_parameters": n_params, "device": str(device), "processes": accelerator.num_processes,
        "seconds": seconds, "seconds_per_step": seconds / max(1, ran),
        "final": {name: float(np.mean([r[name] for r in tail])) for name in
                  ["loss"] + [f"loss_{t}" for t in TERMS]} if tail else {},
    }
    return summary
