"""``benchmarks/accelerator.py`` at ``--tiny`` size on CPU, so the prepared GPU run cannot rot.

One tiny run (every core scan, one mixer) writes into a temporary folder; one test reads
its ``results.json`` and ``results.md`` (never timings). The budget, mismatch and
rule-fitting paths are checked with runs that compile little or nothing.
"""

from __future__ import annotations

import json
import sys
import types

import jax.numpy as jnp

from conftest import REPO

if str(REPO) not in sys.path:  # benchmarks/ lives at the repository root
    sys.path.insert(0, str(REPO))

from benchmarks import _accelerator_fla, accelerator, run  # noqa: E402
from benchmarks._accelerator_report import fastest_rules  # noqa: E402
from benchmarks._accelerator_scans import CASES, ScanCase, ScanSize, check  # noqa: E402

SCANS = {"linear_scan", "matrix_scan", "linear_attention", "softmax_scan", "delta_rule", "grid_scan", "fft_conv"}


def test_tiny_run_writes_complete_results(tmp_path, capsys):
    """One tiny run (one test, so that pytest-xdist never repeats it on several workers)."""
    returned = accelerator.main(["--tiny", "--out", str(tmp_path), "--only-mixers", "s5", "--budget-minutes", "60"])
    record = json.loads((tmp_path / "results.json").read_text())
    check_correctness(record)
    check_scan_timings(record)
    check_mixers(record)
    check_fla_section(record)
    check_files(tmp_path, record, returned)
    capsys.readouterr()
    accelerator.main(["--fit", str(tmp_path / "results.json")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(SCANS) * len(accelerator.PASSES)
    assert any(line.startswith("delta_rule fwd_bwd D=8: fastest ") for line in lines)


def check_correctness(record):
    assert {case.op for case in CASES} == SCANS
    checked = {(e["op"], e["method"]) for e in record["correctness"]}
    assert checked == {(case.op, m) for case in CASES for m in case.methods + ("auto",)}
    for entry in record["correctness"]:
        assert "failed" not in entry, entry
        assert entry["output_error"] <= record["options"]["tolerance"]
    first = record["verdicts"][0]
    assert first.startswith("every method of every core scan agrees") and "goal met" in first


def check_scan_timings(record):
    for case in CASES:
        for kind in accelerator.PASSES:
            entry = next(r for r in record["scans"] if r["op"] == case.op and r["pass"] == kind)
            assert set(case.methods) <= set(entry["ms"]), entry
            assert entry["fastest"] in case.methods and entry["auto_vs_best"] > 0
    delta = next(r for r in record["scans"] if r["op"] == "delta_rule")
    assert delta["auto"] == "sequential_forward_chunked_backward" and "auto" in delta["ms"]  # the CPU hybrid


def check_mixers(record):
    assert {(e["mixer"], e["dtype"]) for e in record["mixers"]} == {("s5", "bfloat16"), ("s5", "float32")}
    for entry in record["mixers"]:
        assert entry["seconds"] > 0 and entry["peak_bytes"] > 0 and "device_peak_bytes" in entry


def check_fla_section(record):
    reason = _accelerator_fla.unavailable()
    if reason is None:  # torch, fla and a CUDA device are all here: the comparison ran
        assert record["fla"]["status"] == "ran" and record["fla"]["results"]
        return
    assert record["fla"] == {"status": f"skipped: {reason}", "results": []}
    assert any(line.startswith("flash-linear-attention comparison: not run") for line in record["verdicts"])


def check_files(folder, record, returned):
    text = (folder / "results.md").read_text()
    for heading in ("## Verdicts", "## Correctness", "## Scans", "## Fastest method per shape",
                    "## flash-linear-attention", "## Mixers"):
        assert heading in text
    for op in SCANS:
        assert f"### {op}" in text
    assert record["device"]["platform"] == "cpu" and record["machine"]["jax"] in text and record["date"] in text
    assert (folder / "scans.png").exists() and (folder / "mixers.png").exists()
    assert returned["verdicts"] == record["verdicts"] and not any("failed" in r for r in returned["results"])


def test_fastest_rules_group_runs_of_lengths():
    rows = [{"op": "linear_scan", "pass": "forward", "D": 64, "L": L, "fastest": m, "auto": "associative",
             "auto_vs_best": r} for L, m, r in ((2048, "sequential", 1.5), (8192, "associative", 1.0),
                                                (32768, "associative", 1.0))]
    assert fastest_rules(rows) == ["linear_scan forward D=64: fastest sequential at L = 2048, associative for "
                                   "L = 8192…32768; auto = associative (worst 1.50× the fastest)"]


def test_an_exhausted_budget_skips_everything_with_notes(tmp_path):
    returned = accelerator.main(["--tiny", "--out", str(tmp_path), "--only-mixers", "s5", "--budget-minutes", "0"])
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["correctness"] == [] and record["mixers"] == []
    assert all(not r["ms"] and set(r["skipped"].values()) == {"time budget"} for r in record["scans"])
    assert any(note.startswith("skipped (time budget): correctness of linear_scan") for note in record["notes"])
    assert "missed" in returned["verdicts"][0]
    assert "## Skipped by the time budget" in (tmp_path / "results.md").read_text()


def test_sections_not_asked_for_are_left_out(tmp_path):
    returned = accelerator.main(["--tiny", "--out", str(tmp_path), "--sections", "fla"])
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["options"]["sections"] == ["fla"]
    assert record["correctness"] == record["scans"] == record["mixers"] == [] and not record["notes"]
    assert not any("agrees with reference.py" in line for line in returned["verdicts"])


def test_a_mismatch_or_an_error_is_reported_not_raised():
    linear = next(c for c in CASES if c.op == "linear_scan")
    wrong = ScanCase("linear_scan", ("sequential", "broken"), linear.make,
                     lambda m, a, b: ((jnp.asarray("x") if m == "broken" else linear.call(m, a, b)[0] + 1.0),),
                     lambda a, b: (linear.reference(a, b)[0],))
    entries = {e["method"]: e for e in check(wrong, ScanSize(1, 5, 1, 2), 1e-3, gradients=False)}
    assert entries["sequential"]["failed"].startswith("mismatch: relative error")
    assert entries["broken"]["failed"].startswith("TypeError")


def test_the_suite_is_wired_into_run_but_not_into_all(tmp_path, monkeypatch):
    calls = []
    record = {"verdicts": ["x: goal met (1 vs 1)"]}
    stand_in = types.SimpleNamespace(main=lambda argv=None: calls.append(argv) or record)
    monkeypatch.setitem(sys.modules, "benchmarks.accelerator", stand_in)
    assert run.main(["--suite", "accelerator", "--smoke", "--results", str(tmp_path)]) == 0
    assert calls == [["--smoke"]]
    assert run.suite_argv("accelerator", quick=False, smoke=False, only=None) == []
    assert "accelerator" in run.SUITES and "accelerator" in run.NOT_IN_ALL
