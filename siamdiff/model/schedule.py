"""The noise schedule of DESIGN.md section 1, used by every stage that adds or removes noise."""
from __future__ import annotations

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
BETA_SCHEDULE = "scaled_linear"
PREDICTION_TYPE = "epsilon"


def make_train_scheduler():
    """DDPMScheduler: T=1000, betas = linspace(sqrt(0.00085), sqrt(0.012), T)^2, epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_start=BETA_START,
        beta_end=BETA_END,
        beta_schedule=BETA_SCHEDULE,
        prediction_type=PREDICTION_TYPE,
        clip_sample=False,
    )


def make_sampling_scheduler(config=None):
    """DDIMScheduler on the same betas (eta 0 sampling); `config` = a saved scheduler's config."""
    from diffusers import DDIMScheduler

    config = dict(config or make_train_scheduler().config)
    return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def check_schedule(config, where: str = "scheduler") -> None:
    """Raise if a (pretrained) scheduler config is not the DESIGN.md schedule."""
    from siamdiff.utils import SiamdiffError

    want = {"num_train_timesteps": NUM_TRAIN_TIMESTEPS, "beta_start": BETA_START, "beta_end": BETA_END,
            "beta_schedule": BETA_SCHEDULE, "prediction_type": PREDICTION_TYPE}
    bad = {k: config.get(k, "epsilon" if k == "prediction_type" else None) for k in want
           if config.get(k, "epsilon" if k == "prediction_type" else None) != want[k]
           and not (isinstance(want[k], float) and abs(float(config.get(k) or 0) - want[k]) < 1e-9)}
    if bad:
        raise SiamdiffError(f"{where}: noise schedule {bad} differs from the pipeline's {want} "
                            "(DESIGN.md section 1); use an SD-1.x-style epsilon-prediction model")
