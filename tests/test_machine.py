"""siamdiff.machine: the runtime record, and the precision choice made by measurement, not assumption."""
import json
import time

import torch

from siamdiff import machine


def _probe(fp32_s: float, bf16_s: float, calls: list):
    def probe():
        bf16 = torch.is_autocast_enabled("cpu")
        calls.append(bf16)
        torch.rand(1)  # draws from the global generator: the choice must put its state back
        time.sleep(bf16_s if bf16 else fp32_s)
    return probe


def test_without_a_bf16_isa_fp32_is_chosen_without_running_the_probe():
    calls, logged = [], []
    assert machine.choose_cpu_autocast("auto", _probe(0.01, 0.001, calls), log=logged.append,
                                       flags={"avx2", "fma"}) == "no"
    assert calls == [] and "neither AVX512-BF16 nor AMX" in logged[0]


def test_bf16_is_chosen_only_where_it_measures_clearly_faster():
    calls, logged = [], []
    torch.manual_seed(3)
    before = torch.get_rng_state()
    assert machine.choose_cpu_autocast("auto", _probe(0.03, 0.005, calls), log=logged.append,
                                       flags={"amx_bf16", "avx512_bf16"}) == "bf16"
    assert torch.equal(torch.get_rng_state(), before)
    assert calls.count(True) == calls.count(False) == 4 and "bf16 autocast" in logged[0]
    # a machine where bf16 autocast is no faster (AVX512-BF16 but overhead-bound): fp32
    assert machine.choose_cpu_autocast("auto", _probe(0.01, 0.01, []), log=logged.append,
                                       flags={"avx512_bf16"}) == "no"
    assert "fp32" in logged[-1] and "needs >= 1.3x" in logged[-1]


def test_an_explicit_setting_is_used_as_given():
    calls = []
    assert machine.choose_cpu_autocast("bf16", _probe(0.0, 0.0, calls), log=print, flags=set()) == "bf16"
    assert machine.choose_cpu_autocast("no", _probe(0.0, 0.0, calls), log=print, flags={"amx_bf16"}) == "no"
    assert calls == []


def test_the_stage_record_names_the_machine_and_the_choice(tmp_path):
    machine.note(precision="fp32")
    path = machine.record_stage("backbone", 12.34, root=tmp_path)
    rec = json.loads(path.read_text())
    assert path == tmp_path / "metrics/runtime/backbone.json"
    assert rec["seconds"] == 12.3 and rec["threads"] == torch.get_num_threads() and rec["precision"] == "fp32"
    assert rec["cpu"] and set(rec["isa"]) <= set(machine.ISA_FLAGS) and rec["device"] == "cpu"
    assert machine.read_runtimes(tmp_path) == {"backbone": rec}


def test_summary_lists_stage_times_in_dvc_yaml_order(tmp_path):
    from siamdiff.summary import runtime_lines

    (tmp_path / "dvc.yaml").write_text("stages:\n  zeta: {cmd: x}\n  alpha: {cmd: y}\n")
    (tmp_path / "metrics" / "runtime").mkdir(parents=True)
    for name, seconds in [("alpha", 120), ("zeta", 60), ("extra", 30)]:
        record = {"seconds": seconds, "cpu": "C", "isa": ["avx2"], "threads": 2}
        (tmp_path / "metrics" / "runtime" / f"{name}.json").write_text(json.dumps(record))
    first = runtime_lines(tmp_path)[0]
    assert first.index("zeta 1.0") < first.index("alpha 2.0") < first.index("extra 0.5")
    assert first.endswith("total 3.5 min")
