"""The report of ``benchmarks/accelerator.py``: Markdown tables, verdict lines, and the
fastest method per scan, pass, head size and length (what ``auto``'s accelerator rules in
``seqmodels/scans/_dispatch.py`` are to be fitted to).
"""

from __future__ import annotations

from ._accelerator_scans import CASES
from ._common import format_bytes, markdown_table, verdict
from .scans import AUTO_GOAL

NOTES_SHOWN = 30  # budget notes listed in results.md (results.json keeps all)
FLA_GOAL = 3.0  # issue 20: a scan more than 3× slower than fla's kernel is a gap to close


def fastest_rules(scans: list[dict]) -> list[str]:
    """One line per (scan, pass, D): the fastest method over runs of lengths, what ``auto``
    picks today and its worst time over the fastest."""
    groups: dict[tuple, list[dict]] = {}
    for row in scans:
        if "fastest" in row:
            groups.setdefault((row["op"], row["pass"], row["D"]), []).append(row)
    lines = []
    for (op, kind, dim), rows in groups.items():
        runs: list[list] = []  # [method, first L, last L]
        for row in sorted(rows, key=lambda r: r["L"]):
            if runs and runs[-1][0] == row["fastest"]:
                runs[-1][2] = row["L"]
            else:
                runs.append([row["fastest"], row["L"], row["L"]])
        text = ", ".join(f"{m} at L = {a}" if a == b else f"{m} for L = {a}…{b}" for m, a, b in runs)
        ratios = [r["auto_vs_best"] for r in rows if "auto_vs_best" in r]
        worst = f"worst {max(ratios):.2f}× the fastest" if ratios else "not timed"
        lines.append(f"{op} {kind} D={dim}: fastest {text}; auto = {rows[0]['auto']} ({worst})")
    return lines


def verdicts(record: dict) -> list[str]:
    checked = record["correctness"]
    bad = [f"{e['op']} {e['method']}" for e in checked if "failed" in e]
    errors = [max(e["output_error"], e.get("gradient_error", 0.0)) for e in checked if "output_error" in e]
    worst = f", worst relative error {max(errors):.1e}" if errors else ""
    unchecked = [case.op for case in CASES if case.op not in {e["op"] for e in checked}]
    lines = []
    if "correctness" in record["options"]["sections"]:
        lines.append(verdict("every method of every core scan agrees with reference.py (float32)",
                             not bad and not unchecked, f"{len(checked) - len(bad)}/{len(checked)} agree{worst}"
                             + (f"; mismatch: {', '.join(bad)}" if bad else "")
                             + (f"; not checked: {', '.join(unchecked)}" if unchecked else ""),
                             f"relative error ≤ {record['options']['tolerance']:.0e}"))
    ratios = [r for r in record["scans"] if "auto_vs_best" in r]
    if ratios:
        top = max(ratios, key=lambda r: r["auto_vs_best"])
        lines.append(verdict(f"auto within {AUTO_GOAL}× of the fastest method at every measured shape",
                             top["auto_vs_best"] <= AUTO_GOAL,
                             f"worst {top['auto_vs_best']:.2f}× ({top['op']} {top['pass']}, L = {top['L']}, "
                             f"D = {top['D']}: auto = {top['auto']}, fastest {top['fastest']})", f"≤ {AUTO_GOAL}×"))
    fla = record["fla"]
    if not fla["results"]:
        lines.append(f"flash-linear-attention comparison: not run ({fla['status']})")
    for op in dict.fromkeys(r["op"] for r in fla["results"]):
        rows = [r for r in fla["results"] if r["op"] == op and "fwd_bwd_ratio" in r]
        if rows:
            top = max(rows, key=lambda r: r["fwd_bwd_ratio"])
            lines.append(verdict(f"{op} forward+backward within {FLA_GOAL:g}× of {top['theirs']}",
                                 top["fwd_bwd_ratio"] <= FLA_GOAL,
                                 f"worst {top['fwd_bwd_ratio']:.2f}× (L = {top['L']}, D = {top['D']})",
                                 f"≤ {FLA_GOAL:g}×"))
        compared = [r for r in fla["results"] if r["op"] == op and "agree" in r]
        if compared:
            top = max(compared, key=lambda r: r["relative_difference"])
            lines.append(verdict(f"{op} outputs agree with {top['theirs']} (bfloat16)",
                                 all(r["agree"] for r in compared),
                                 f"worst relative difference {top['relative_difference']:.1e}",
                                 "≤ 2e-2"))
    return lines


def _ms(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def correctness_table(entries: list[dict]) -> str:
    rows = [[e["op"], e["method"] + (f" (= {e['same_as']})" if "same_as" in e else ""),
             " ".join("×".join(map(str, s)) for s in e["shape"]),
             f"{e['output_error']:.1e}" if "output_error" in e else "–",
             f"{e['gradient_error']:.1e}" if "gradient_error" in e else "–",
             e.get("failed", "ok")] for e in entries]
    return markdown_table(["scan", "method", "input shapes", "output error", "gradient error", "status"], rows)


def scan_tables(entries: list[dict]) -> list[str]:
    parts = []
    for op in dict.fromkeys(r["op"] for r in entries):
        rows = [r for r in entries if r["op"] == op]
        methods = list(dict.fromkeys(m for r in rows for m in list(r["ms"]) + list(r["skipped"])))
        body = []
        for r in rows:
            cells = [_ms(r["ms"][m]) if m in r["ms"] else ("skipped" if m in r["skipped"] else "–") for m in methods]
            ratio = f"{r['auto_vs_best']:.2f}×" if "auto_vs_best" in r else "–"
            body.append([r["L"], r["D"], r["pass"]] + cells + [r["auto"] or "(auto timed)", ratio])
        parts.append(f"### {op}\n\n" + markdown_table(["L", "D", "pass"] + [f"{m} ms" for m in methods]
                                                      + ["auto picks", "auto / fastest"], body))
        reasons = sorted({f"{m}: {why}" for r in rows for m, why in r["skipped"].items()})
        if reasons:
            parts.append("Skipped: " + "; ".join(reasons[:6]) + (" …" if len(reasons) > 6 else ""))
    return parts


def fla_table(fla: dict) -> str:
    if not fla["results"]:
        return f"Not run: {fla['status']}."
    rows = []
    for r in fla["results"]:
        if "failed" in r:
            rows.append([r["op"], "", r["L"], r["D"]] + ["–"] * 7 + [f"failed ({r['failed'][:80]})"])
            continue
        ours, theirs = r["ours"], r["theirs_ms"]
        rows.append([r["op"], r["theirs"], r["L"], r["D"], _ms(ours["forward_ms"]), _ms(theirs["forward_ms"]),
                     f"{r['forward_ratio']:.2f}×" if "forward_ratio" in r else "–",
                     _ms(ours["fwd_bwd_ms"]), _ms(theirs["fwd_bwd_ms"]),
                     f"{r['fwd_bwd_ratio']:.2f}×" if "fwd_bwd_ratio" in r else "–",
                     f"{r['relative_difference']:.1e}" if "relative_difference" in r else "–",
                     ours.get("skipped", "ok" if r.get("agree") else "outputs differ")])
    return markdown_table(["op", "theirs", "L", "D", "ours fwd ms", "theirs fwd ms", "fwd ratio", "ours fwd+bwd ms",
                           "theirs fwd+bwd ms", "fwd+bwd ratio", "rel. difference", "status"], rows)


def mixer_table(entries: list[dict]) -> str:
    lengths = sorted({e["L"] for e in entries})
    by_key = {(e["mixer"], e["dtype"], e["L"]): e for e in entries}

    def cell(e):
        if e is None:
            return "–"
        if "seconds" in e:
            return f"{1e3 * e['seconds']:.3g} ms / {format_bytes(e.get('peak_bytes'))}"
        return "skipped" if "skipped" in e else f"failed ({e['failed'].split(':')[0]})"

    rows = []
    for name, dtype in dict.fromkeys((e["mixer"], e["dtype"]) for e in entries):
        peaks = [by_key[name, dtype, n].get("device_peak_bytes") for n in lengths if (name, dtype, n) in by_key]
        device_peak = max((p for p in peaks if p is not None), default=None)
        rows.append([name, dtype] + [cell(by_key.get((name, dtype, n))) for n in lengths] + [format_bytes(device_peak)])
    return markdown_table(["mixer", "activations"] + [f"L={n} (time / compiled peak)" for n in lengths]
                          + ["device peak in use so far"], rows)


def report(record: dict) -> str:
    device, info, options = record["device"], record["machine"], record["options"]
    parts = [f"# Accelerator benchmark ({record['mode']})", "",
             f"Device: {device['kind']} ({device['platform']}, {device['count']} device(s)); jax {info['jax']}, "
             f"flax {info['flax']}, Python {info['python']}; host {info['processor']}, {info['cpu_count']} cores. "
             f"Date {record['date']}; wall {record['wall_s']:.0f} s of a {options['budget_minutes']:g}-minute "
             f"budget; cases over {options['max_gib']:g} GiB compiled memory skipped.", "", "## Verdicts", ""]
    parts += [f"- {line}" for line in record["verdicts"]]
    parts += ["", f"## Correctness (float32 against reference.py, relative error, tolerance "
                  f"{options['tolerance']:.0e})", "", correctness_table(record["correctness"]), "",
              "## Scans (median ms; forward, and forward+backward of Σ outputs² + Σ final state²)", ""]
    parts += [p + "\n" for p in scan_tables(record["scans"])]
    parts += ["## Fastest method per shape (fit `_dispatch.py`'s accelerator rules to this)", "", "```"]
    parts += fastest_rules(record["scans"]) + ["```", "", "## flash-linear-attention (bfloat16, ratio = ours / theirs)",
                                                "", fla_table(record["fla"]), "",
                                                "## Mixers (one train step: forward, mean(y²), gradients)", "",
                                                mixer_table(record["mixers"]) if record["mixers"] else "None ran.", ""]
    if record["notes"]:
        shown = record["notes"][:NOTES_SHOWN]
        more = len(record["notes"]) - len(shown)
        parts += ["## Skipped by the time budget", ""] + [f"- {note}" for note in shown]
        parts += [f"- … and {more} more (results.json, \"notes\")", ""] if more else [""]
    return "\n".join(parts)
