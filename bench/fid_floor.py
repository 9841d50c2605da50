"""FID floors of protocol A (as many images as the test split, vs the real test images).

    python bench/fid_floor.py PROJECT   # a project folder after `dvc repro autoencoder` (data/prep, models/autoencoder)

Prints, per draw of len(test) train frames (5 draws): FID of the real train frames (the floor a perfect generator
would meet at this set size), and of their autoencoder reconstructions (the floor of any generator that decodes
through this autoencoder), each against the real test images.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

root = sys.argv[1]
sys.path.insert(0, root)
from siamdiff.data.color import from_working, load_stats, to_working  # noqa: E402
from siamdiff.data.prep import load_split  # noqa: E402
from siamdiff.metrics.fid import fid_kid  # noqa: E402
from siamdiff.metrics.inception import inception_features  # noqa: E402
from siamdiff.model.autoencoder import load_autoencoder, reconstruct  # noqa: E402

R = Path(root)
_, test, _ = load_split(R / "data/prep", "test")
_, train, _ = load_split(R / "data/prep", "train")
stats = load_stats(R / "data/prep/color_stats.json")
vae = load_autoencoder(R / "models/autoencoder")
n = len(test)
ft = inception_features(test)
out = {"n_test": n, "n_train": len(train)}
rows = {"real train (other frames)": [], "AE recon of train frames": []}
for j in range(5):
    g = torch.Generator().manual_seed(j)
    idx = torch.randperm(len(train), generator=g)[:n]
    real = train[idx]
    rec = from_working(reconstruct(vae, to_working(real, stats).float()), stats)
    rows["real train (other frames)"].append(fid_kid(ft, inception_features(real), seed=j)["fid"])
    rows["AE recon of train frames"].append(fid_kid(ft, inception_features(rec), seed=j)["fid"])
for k, v in rows.items():
    out[k] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": [round(x, 2) for x in v]}
print(json.dumps(out, indent=1))
