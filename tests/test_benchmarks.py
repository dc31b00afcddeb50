"""Smoke test of the benchmark suites through ``benchmarks/run.py``, below ``--quick`` size.

Each of our suites runs for real (``--smoke``: one or two tiny lengths, one repeat, two
mixers) into a temporary folder; the test checks that tables, verdict lines, JSON and
plots come out with the expected keys, never timings. ``routing``, ``delta`` and
``parallel`` have no size below ``--quick`` (and their own tests), so their wiring is
checked with stand-in modules.
"""

from __future__ import annotations

import json
import sys
import time
import types

import jax.numpy as jnp
import pytest

from conftest import REPO

if str(REPO) not in sys.path:  # benchmarks/ lives at the repository root
    sys.path.insert(0, str(REPO))

from benchmarks import generate, layer_gaps, mixers, run  # noqa: E402

MIXERS = ["s5", "attention"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One ``run --smoke`` over our five suites; returns its results folder and exit status."""
    folder = tmp_path_factory.mktemp("benchmarks")
    status = run.main(["--suite", "scans", "memory", "mixers", "generate", "compile", "--smoke",
                       "--only", *MIXERS, "--results", str(folder)])
    return folder, status


def load(folder, suite):
    record = json.loads((folder / f"{suite}_quick.json").read_text())
    assert {"machine", "results", "table", "verdicts", "mode"} <= set(record)
    assert record["mode"] == "smoke"
    assert record["machine"]["backend"] and record["machine"]["cpu_count"]
    assert record["table"].startswith("|") or "| " in record["table"]
    assert (folder / f"{suite}_quick.png").exists()
    return record


def test_run_succeeds_and_writes_a_summary(smoke):
    folder, status = smoke
    assert status == 0
    text = (folder / "summary_quick.md").read_text()
    for suite in ("scans", "memory", "mixers", "generate", "compile"):
        assert f"## {suite}" in text
    assert "goal met" in text or "missed:" in text


def test_scans_record(smoke):
    record = load(smoke[0], "scans")
    ops = {r["op"] for r in record["results"]}
    assert ops == {"linear_scan", "linear_attention"}
    for r in record["results"]:
        assert {"L", "auto", "forward_ms", "fwd_bwd_ms", "forward_auto_vs_best", "fwd_bwd_auto_vs_best"} <= set(r)
        assert "auto" in r["forward_ms"] and "sequential" in r["forward_ms"]
    linear = next(r for r in record["results"] if r["op"] == "linear_scan")
    assert "elementwise" in linear["GB/s"]
    matrix = next(r for r in record["results"] if r["op"] == "linear_attention")
    assert set(matrix["matmul_GFLOP/s"]) == {"forward", "fwd_bwd"}
    assert "chunked" in matrix["GFLOP/s"]["fwd_bwd_ms"]
    assert any(line.startswith("auto within 1.2×") for line in record["verdicts"])


def test_memory_record(smoke):
    record = load(smoke[0], "memory")
    cases = {(r["op"], r["method"]) for r in record["results"]}
    assert cases == {(op, m) for op in ("linear_attention", "delta_rule") for m in ("auto", "sequential")}
    for r in record["results"]:
        assert r["peak_bytes"] is None or r["peak_bytes"] > 0
        assert ("seconds" in r) == (r["method"] != "sequential")
    assert len(record["verdicts"]) == 2


def test_mixers_record(smoke):
    record = load(smoke[0], "mixers")
    assert {(r["mixer"], r["L"]) for r in record["results"]} == {(m, n) for m in MIXERS for n in (16, 32)}
    for r in record["results"]:
        assert "seconds" in r and "peak_bytes" in r and "compile_s" in r
    assert set(record["exponents"]) == set(MIXERS)
    assert any("quadratic" in line for line in record["verdicts"])


def test_generate_record(smoke):
    record = load(smoke[0], "generate")
    by = {(r["mixer"], r["L"]): r for r in record["results"]}
    assert set(by) == {(m, n) for m in MIXERS for n in (16, 32)}
    for r in by.values():
        assert {"step_s", "state_bytes", "forward_s", "speedup"} <= set(r)
    # attention's KV cache grows with the context; a recurrent state does not
    assert by["attention", 32]["state_bytes"] > by["attention", 16]["state_bytes"]
    assert by["s5", 32]["state_bytes"] == by["s5", 16]["state_bytes"]


def test_compile_record(smoke):
    record = load(smoke[0], "compile")
    assert [r["mixer"] for r in record["results"]] == MIXERS
    for r in record["results"]:
        assert r["lower_s"] > 0 and r["compile_s"] > 0
    assert len(record["verdicts"]) == 1


def test_too_large_cases_are_skipped_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQMODELS_BENCHMARK_RESULTS", str(tmp_path))
    record = mixers.main(["--smoke", "--only", "s5", "--max-gib", "1e-9"])
    assert all(r["skipped"].startswith("too large") and "seconds" not in r for r in record["results"])
    assert "skipped (too large)" in record["table"]
    assert record["exponents"]["s5"] is None


def test_time_prediction_skips_by_extrapolation():
    assert mixers.predicted_seconds([], [], 1024) is None
    assert mixers.predicted_seconds([256], [1.0], 1024) == pytest.approx(4.0)           # at least linear
    assert mixers.predicted_seconds([256, 1024], [1.0, 16.0], 4096) == pytest.approx(256.0)  # measured p = 2


def test_generation_skips_contexts_by_measured_prefill_time():
    assert generate.predicted_prefill_seconds([], 1024) is None
    assert generate.predicted_prefill_seconds([{"L": 256, "prefill_s": 1.0}], 1024) == pytest.approx(4.0)
    grown = [{"L": 256, "prefill_s": 1.0}, {"L": 1024, "prefill_s": 16.0}]
    assert generate.predicted_prefill_seconds(grown, 4096) == pytest.approx(256.0)


def test_generation_freezes_the_routing_clusters_and_sizes_the_kv_cache():
    size = generate.SIZES["full"]
    routing = generate.generation_options("routing", 256, size)
    assert routing["deterministic"] is True
    assert generate.generation_options("routing", 4096, size) == routing
    assert generate.generation_options("attention", 1024, size)["max_length"] == 1024 + generate.timed_calls(size)


def test_image_and_video_lengths_match_positions():
    assert mixers.input_shape("plstm2d", 1024, 8, 256) == (8, 32, 32, 256)
    assert mixers.input_shape("convs5", 4096, 8, 256) == (8, 16, 16, 16, 256)
    assert mixers.input_shape("s5", 4096, 8, 256) == (8, 4096, 256)


def test_other_suites_are_wired_and_missing_ones_skipped(tmp_path, monkeypatch, capsys):
    calls = {}

    def stand_in(name, record):
        def main(argv=None):
            calls[name] = argv
            return record
        return types.SimpleNamespace(main=main)

    routing_record = {"exponents": {"routing": 1.2, "local": 1.0, "full": 1.3}}
    monkeypatch.setitem(sys.modules, "benchmarks.routing", stand_in("routing", routing_record))
    monkeypatch.setitem(sys.modules, "benchmarks.delta", stand_in("delta", {"verdicts": ["delta: goal met (x vs y)"]}))
    monkeypatch.setitem(sys.modules, "benchmarks.parallel", None)   # not written yet: must be skipped
    status = run.main(["--suite", "routing", "delta", "parallel", "--smoke", "--only", "s5",
                       "--results", str(tmp_path)])
    assert status == 0
    assert calls == {"routing": ["--quick", "--repeats", "1"], "delta": ["--quick"]}
    out = capsys.readouterr().out
    assert "suite 'parallel' skipped" in out
    assert "growth exponent of routing: goal met (p = 1.20 vs p ≤ 1.6)" in out
    assert "growth exponent of full: missed: p = 1.30 vs 1.6 ≤ p ≤ 2.4" in out
    assert "[delta] delta: goal met (x vs y)" in out
    assert "skipped (module missing)" in (tmp_path / "summary_quick.md").read_text()


def test_budgeted_timing_runs_a_slow_case_once():
    from benchmarks._common import budgeted_seconds

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)
        return jnp.zeros(())

    seconds, timed = budgeted_seconds(slow, repeats=5, budget_s=0.01, slow_warmup_counts=True)
    assert timed == 0 and len(calls) == 1 and seconds >= 0.02
    calls.clear()
    _, timed = budgeted_seconds(slow, repeats=5, budget_s=0.01)   # jitted functions: warm-up never counts
    assert timed == 1 and len(calls) == 2


def test_a_failed_case_fails_the_run(tmp_path, monkeypatch):
    record = {"results": [{"mixer": "x", "failed": "ValueError: boom"}], "verdicts": []}
    monkeypatch.setitem(sys.modules, "benchmarks.delta", types.SimpleNamespace(main=lambda argv=None: record))
    assert run.main(["--suite", "delta", "--quick", "--results", str(tmp_path)]) == 1
    assert "1 case(s) failed" in (tmp_path / "summary_quick.md").read_text()


def test_layer_gaps_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQMODELS_BENCHMARK_RESULTS", str(tmp_path))
    record = layer_gaps.main(["--smoke"])
    saved = json.loads((tmp_path / "layer_gaps_smoke.json").read_text())
    assert saved["mode"] == "smoke" and set(saved["seconds"]) == set(record["seconds"])
    forward = [r for r in layer_gaps.RATIOS if "train step" not in r[0]]
    assert all(num in record["seconds"] and den in record["seconds"] for _, num, den, _ in forward)
    assert len(record["verdicts"]) == 2 and record["table"].count("\n") == len(forward) + 1
