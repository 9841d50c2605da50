"""Stage `preprocess`: data/raw + data/split.csv -> data/prep/{train,val,test}.safetensors, index.csv, color_stats.json."""
from siamdiff.data.preprocess import run
from siamdiff.utils import load_params, main_guard

STAGE = "preprocess"


def main() -> None:
    run(load_params(STAGE), raw_dir="data/raw", split_csv="data/split.csv", out_dir="data/prep", stage=STAGE)


if __name__ == "__main__":
    main_guard(STAGE, main)
