"""Stage `ingest`: configured sources -> data/raw/{dataset}/{img,mask}/*.png + data/raw/manifest-v1.json.

Also writes plots/ingest/examples.png (a grid of examples, mask outlined in green) for `dvc plots`.
"""
from siamdiff.data.sources import ingest
from siamdiff.utils import load_params, log, main_guard

STAGE = "ingest"


def main() -> None:
    params = load_params(STAGE)
    log(STAGE, f"sources: {', '.join(str(s.get('type')) for s in params.get('sources') or [] if isinstance(s, dict))}")
    ingest(params, raw_dir="data/raw", plot_path="plots/ingest/examples.png", stage=STAGE)


if __name__ == "__main__":
    main_guard(STAGE, main)
