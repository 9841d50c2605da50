"""Stage `split`: data/raw (manifest verified first) -> data/split.csv + data/split-hashes.csv."""
from collections import Counter

from siamdiff.data import manifest
from siamdiff.data.split import HASH_COLUMNS, SPLIT_COLUMNS, SPLITS, assign, check_fractions, to_csv
from siamdiff.utils import load_params, log, main_guard, write_text

STAGE = "split"


def main() -> None:
    params = load_params(STAGE)
    fractions = check_fractions(params.get("fractions"))
    m = manifest.verify("data/raw")  # refuses before any work if a file changed after ingest
    log(STAGE, f"read {len(m['items'])} items from data/raw/{manifest.MANIFEST_NAME} (verified)")
    rows, hashes = assign(m["items"], fractions)
    write_text("data/split.csv", to_csv(rows, SPLIT_COLUMNS))
    write_text("data/split-hashes.csv", to_csv(hashes, HASH_COLUMNS))
    items = Counter(r["split"] for r in rows)
    patients = Counter(h["split"] for h in hashes)
    log(STAGE, "; ".join(f"{s}: {items[s]} items, {patients[s]} patients" for s in SPLITS))
    log(STAGE, "wrote data/split.csv, data/split-hashes.csv")


if __name__ == "__main__":
    main_guard(STAGE, main)
