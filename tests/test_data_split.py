"""Patient-disjoint split: the published rule, reproducibility, loud failures, CVC sequences kept together."""
import hashlib
from collections import defaultdict

import pytest

from siamdiff.data.sources import cvc_items, kvasir_items
from siamdiff.data.split import HASH_COLUMNS, SPLIT_COLUMNS, assign, check, check_fractions, patient_u, split_of, to_csv
from siamdiff.utils import SiamdiffError


def fake_items(n_patients=200, frames=3, dataset="ds"):
    return [{"id": f"{dataset}-p{p:03d}-{f}", "dataset": dataset, "patient": f"p{p:03d}", "frame": str(f)}
            for p in range(n_patients) for f in range(frames)]


def test_rule_is_the_published_one():
    digest, u = patient_u("ds-p001")
    assert digest == hashlib.sha256(b"ds-p001").hexdigest()
    assert u == int(digest, 16) / 2 ** 256 and 0 <= u < 1
    f = [0.8, 0.1, 0.1]
    assert split_of(0.0, f) == "train" and split_of(0.7999, f) == "train"
    assert split_of(0.8, f) == "val" and split_of(0.8999, f) == "val"
    assert split_of(0.9, f) == "test" and split_of(0.99999, f) == "test"


def test_disjoint_reproducible_and_close_to_fractions():
    items = fake_items()
    rows, hashes = assign(items, [0.8, 0.1, 0.1])
    rows2, hashes2 = assign(list(reversed(items)), [0.8, 0.1, 0.1])
    assert to_csv(rows, SPLIT_COLUMNS) == to_csv(rows2, SPLIT_COLUMNS)  # byte for byte, order-independent
    assert to_csv(hashes, HASH_COLUMNS) == to_csv(hashes2, HASH_COLUMNS)
    where = defaultdict(set)
    for r in rows:
        where[r["patient"]].add(r["split"])
    assert all(len(v) == 1 for v in where.values())
    share = sum(h["split"] == "train" for h in hashes) / len(hashes)
    assert 0.7 < share < 0.9
    # the hash list reproduces the split from nothing but sha256
    for h in hashes:
        assert float(h["u"]) == int(hashlib.sha256(h["patient"].encode()).hexdigest(), 16) / 2 ** 256
    text = to_csv(hashes, HASH_COLUMNS)
    assert text.splitlines()[0] == "patient,sha256,u,split"


def test_patient_string_includes_the_dataset():
    rows, hashes = assign(fake_items(5, 1, "a") + fake_items(5, 1, "b"), [0.34, 0.33, 0.33])
    assert {h["patient"] for h in hashes} >= {"a-p000", "b-p000"}


@pytest.mark.parametrize("fractions", [[0.8, 0.1], [0.8, 0.1, 0.2], [1.2, -0.1, -0.1], [0.5, 0.5, "x"], None])
def test_bad_fractions(fractions):
    with pytest.raises(SiamdiffError, match="params.yaml: split.fractions"):
        check_fractions(fractions)


def test_empty_partition_fails_loudly():
    with pytest.raises(SiamdiffError, match="partition '(val|test)' is empty"):
        assign(fake_items(2, 2), [0.8, 0.1, 0.1])


def test_patient_crossing_fails_loudly():
    rows = [{"id": "d-p-0", "dataset": "d", "patient": "p", "frame": "0", "split": "train"},
            {"id": "d-p-1", "dataset": "d", "patient": "p", "frame": "1", "split": "test"},
            {"id": "d-q-0", "dataset": "d", "patient": "q", "frame": "0", "split": "val"}]
    with pytest.raises(SiamdiffError, match="patient 'p' of dataset 'd' is in"):
        check(rows)


def test_cvc_sequences_kept_together(polyps_dir):
    """On the real files: every CVC-ClinicDB video sequence lands in exactly one partition."""
    items = [{"id": it.id, "dataset": it.dataset, "patient": it.patient, "frame": it.frame}
             for src in (kvasir_items({"path": str(polyps_dir / "Kvasir-SEG")}),
                         cvc_items({"path": str(polyps_dir / "CVC-ClinicDB")}))
             for it in src]
    rows, hashes = assign(items, [0.8, 0.1, 0.1])
    seqs = defaultdict(set)
    for r in rows:
        if r["dataset"] == "cvc-clinicdb":
            seqs[r["patient"]].add(r["split"])
    assert len(seqs) >= 25
    assert all(len(v) == 1 for v in seqs.values()), seqs
    counts = defaultdict(int)
    for r in rows:
        counts[r["split"]] += 1
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
