"""The `paper` profile's data side = the released code (issue 17, item 1): uniform shuffled batches when
`train.balanced_batches: false`, and one un-augmented view (`encode.views: 1`) that encode and train accept."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from siamdiff.data.sampler import BalancedBatchSampler  # noqa: E402
from siamdiff.train import loop as train_loop  # noqa: E402


def test_sampler_without_balancing_draws_uniform_shuffled_epochs():
    cov = np.linspace(0, 1, 30)  # a foreground half (above the median) and a background half
    fg = set(np.flatnonzero(cov > np.median(cov)).tolist())
    s = BalancedBatchSampler(cov, 5, seed=4, balanced=False)
    assert len(s.queues) == 1
    batches = [s.next_batch() for _ in range(60)]  # 10 epochs of 6 batches
    for e in range(10):
        epoch = [i for b in batches[6 * e:6 * e + 6] for i in b]
        assert sorted(epoch) == list(range(30)), "each row exactly once per epoch, whatever its coverage"
    epochs = [tuple(i for b in batches[6 * e:6 * e + 6] for i in b) for e in range(10)]
    assert len(set(epochs)) == 10 and tuple(range(30)) not in epochs  # reshuffled every epoch, never in order
    per_batch_fg = [sum(i in fg for i in b) for b in batches]
    assert len(set(per_batch_fg)) >= 3, "foreground count per batch must vary (no 2:1 quota)"
    assert min(per_batch_fg) <= 1 or max(per_batch_fg) == 5  # a 2:1 quota gives 3 of 5, always
    # deterministic per seed, another seed another order
    again = BalancedBatchSampler(cov, 5, seed=4, balanced=False)
    assert [again.next_batch() for _ in range(3)] == batches[:3]
    assert BalancedBatchSampler(cov, 5, seed=5, balanced=False).next_batch() != batches[0]
    # whereas balanced: always round(2/3 B) foreground rows
    b = BalancedBatchSampler(cov, 6, seed=4)
    assert all(sum(i in fg for i in b.next_batch()) == 4 for _ in range(20))


def _recording_sampler(monkeypatch):
    seen = {"batches": [], "balanced": []}

    class Recording(BalancedBatchSampler):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen["balanced"].append(self.balanced)

        def next_batch(self):
            rows = super().next_batch()
            seen["batches"].append(rows)
            return rows

    monkeypatch.setattr(train_loop, "BalancedBatchSampler", Recording)
    return seen


def test_train_loop_balanced_batches_false_gives_uniform_batches(tmp_path, monkeypatch):
    from test_train import config, run, tiny_data

    data = tiny_data()  # 12 rows, coverage from ~0.05 to ~0.8
    fg = set(np.flatnonzero(data.coverage > np.median(data.coverage)).tolist())
    seen = _recording_sampler(monkeypatch)
    _, _, summary = run(tmp_path / "uniform", config(steps=4, batch_size=3, checkpoint_every=0,
                                                     balanced_batches=False))
    assert summary["completed_steps"] == 4 and seen["balanced"] == [False]
    rows = [i for b in seen["batches"] for i in b]
    assert sorted(rows) == list(range(12)) and rows != list(range(12))  # one shuffled pass over every row
    uniform_fg = [sum(i in fg for i in b) for b in seen["batches"]]
    # the same run balanced: 2 of every 3 rows from the foreground queue
    seen = _recording_sampler(monkeypatch)
    run(tmp_path / "balanced", config(steps=4, batch_size=3, checkpoint_every=0, balanced_batches=True))
    assert seen["balanced"] == [True] and [sum(i in fg for i in b) for b in seen["batches"]] == [2, 2, 2, 2]
    assert uniform_fg != [2, 2, 2, 2]


def test_one_view_encodes_the_identity_and_trains(tmp_path):
    """`encode.views: 1`: every train row is view 0, the un-augmented preprocessed pair, and train runs on it."""
    from siamdiff.data.color import load_stats, to_working
    from siamdiff.data.latent_cache import LatentCache
    from siamdiff.data.prep import load_split
    from siamdiff.model.autoencoder import build_autoencoder
    from siamdiff.model.schedule import make_train_scheduler
    from stages.encode import run as encode
    from stages.train import load_train_data
    from test_latent_cache import ENCODE, make_prep
    from test_siamese import tiny_models
    from test_train import config

    make_prep(tmp_path, n_train=6, n_val=1, n_test=1, size=16)
    build_autoencoder(4, 4, (8, 8, 8), 2, size=16).save_pretrained(tmp_path / "models" / "autoencoder")
    summary = encode({**ENCODE, "views": 1}, tmp_path, progress=False)
    assert summary["entries"] == 8
    with open(tmp_path / "data" / "encoded.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 6 and {r["view"] for r in rows} == {"0"}
    prep_rows, rgb, mask = load_split(tmp_path / "data" / "prep", "train", as_numpy=True)
    stats = load_stats(tmp_path / "data" / "prep" / "color_stats.json")
    with LatentCache(tmp_path / "data" / "latents.lmdb", readonly=True) as cache:
        for r in train_rows:
            i = [p["id"] for p in prep_rows].index(r["id"])
            entry = cache.get(r["key"])
            assert np.array_equal(entry["mask"].numpy(), mask[i])  # identity: the preprocessed pair itself
            assert torch.equal(entry["image"], to_working(torch.as_tensor(rgb[i:i + 1]), stats)[0].float())
    data = load_train_data(tmp_path)
    assert len(data) == 6 and all(v == 0 for _, v in data.ids) and data.latent_mean.shape[-1] == 4
    unet, controlnet = tiny_models(nonzero=False)
    e = torch.randn(1, 5, 16)
    out = train_loop.train(config(steps=2, batch_size=3, checkpoint_every=0, balanced_batches=False), unet=unet,
                           controlnet=controlnet, scheduler=make_train_scheduler(), data=data, prompt_emb=e,
                           empty_emb=torch.zeros_like(e), checkpoint_dir=tmp_path / "ckpt", inputs={"x": "1"},
                           log=lambda m: None, progress=False)
    assert out["completed_steps"] == 2 and np.isfinite(out["final"]["loss"])
