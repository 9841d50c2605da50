"""`siamdiff` command line: assets, generate, publish, s3-serve, summary, doctor."""
from __future__ import annotations

import argparse
import sys

from siamdiff.utils import SiamdiffError


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


def _doctor(args):
    from siamdiff.doctor import run_doctor

    run_doctor()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siamdiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("assets", help="locate, verify (SHA-256) and convert metric weights (offline, idempotent)").set_defaults(fn=_assets)

    g = sub.add_parser("generate", help="generate image/mask pairs from your own masks")
    g.add_argument("--model", required=True, help="a models/siamese folder")
    g.add_argument("--masks", required=True, help="folder of mask images (any size)")
    g.add_argument("--out", required=True, help="output folder (written atomically)")
    g.add_argument("-k", type=int, default=1, help="samples per mask")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--guidance", type=float, default=9.0)
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

    sub.add_parser("summary", help="print where the metrics and images are").set_defaults(fn=_summary)
    sub.add_parser("doctor", help="check the installation and the machine").set_defaults(fn=_doctor)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except SiamdiffError as e:
        print(f"siamdiff {args.command}: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
