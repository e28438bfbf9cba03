#!/usr/bin/env python3
"""Writes RESULTS_DIR/RESULTS-gpu.md from one GPU check run (scripts/gpu-check-run.sh).

Usage: gpu-report.py RESULTS_DIR

Reads RESULTS_DIR/steps.tsv (each step's exit status and seconds), RESULTS_DIR/logs/*.log
(the probe's device lines, the test binaries' `test result:` and `SKIPPED` lines, the bench's
`metric: KEY = VALUE` lines: benches/src/lib.rs, `metric`) and RESULTS_DIR/demo-summary.json.
Every number in the report comes from that one run. Standard library only.
"""

import datetime
import json
import os
import re
import sys


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def steps(results):
    rows = []
    for line in read(os.path.join(results, "steps.tsv")).splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append(parts)
    return rows


def outcome(rc):
    return {"0": "ok", "124": "TIMED OUT", "137": "KILLED (timeout)", "skip": "skipped (budget)"}.get(
        rc, f"FAILED (exit {rc})"
    )


def test_counts(log):
    passed = failed = ignored = 0
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", log):
        passed += int(m.group(1))
        failed += int(m.group(2))
        ignored += int(m.group(3))
    skipped = len(re.findall(r"SKIPPED", log))
    return passed, failed, ignored, skipped


def metrics(log):
    out = {}
    for m in re.finditer(r"^metric: (\S+) = (\S+)\s*$", log, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratios(ms):
    """Each path's jobs per second against its group's native baseline(s)."""
    rows = []
    for key, value in sorted(ms.items()):
        m = re.match(r"^vulkan\.(\w+)\.(\w+)\.jobs_per_s$", key)
        if not m or m.group(2).startswith("native"):
            continue
        group, path = m.groups()
        for base in ("native", "native_each", "native_one"):
            b = ms.get(f"vulkan.{group}.{base}.jobs_per_s")
            if b:
                rows.append((f"{group}: {path} / {base}", value / b))
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    results = sys.argv[1]
    logs = os.path.join(results, "logs")
    probe = read(os.path.join(logs, "probe.log"))
    env = read(os.path.join(logs, "env.log"))
    bench = read(os.path.join(logs, "bench-vulkan.log"))
    device = re.search(r"^vulkan device: (.+)$", probe, re.M)
    device = device.group(1).strip() if device else "unknown (the probe found no device)"
    out = ["# GPU check results", ""]
    out.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, "
               "all numbers from this one run.")
    out.append("")
    out.append(f"- device: **{device}**")
    for line in probe.splitlines():
        m = re.match(r"^\s+\d+: (.+?) \((\w+)\), api (\S+), driver (.+)$", line)
        if m and m.group(1) == device:
            out.append(f"- type {m.group(2)}, Vulkan {m.group(3)}, driver {m.group(4)}")
    for line in env.splitlines():
        if line.startswith(("nvidia-smi:", "icd:", "host:", "commit:", "built:", "vulkan packages:")):
            out.append(f"- {line}")
    fams = re.findall(r"^ring family: (.+)$", probe, re.M)
    if fams:
        out.append(f"- ring families: {'; '.join(fams)}")
    out += ["", "## Steps", "", "| step | outcome | seconds | passed | failed | ignored | SKIPPED lines |",
            "|---|---|---|---|---|---|---|"]
    for name, rc, secs in steps(results):
        p, f, i, s = test_counts(read(os.path.join(logs, f"{name}.log")))
        counts = [str(p), str(f), str(i), str(s)] if name.startswith("test-") else ["", "", "", ""]
        out.append(f"| {name} | {outcome(rc)} | {secs} | " + " | ".join(counts) + " |")
    out.append("")
    out.append("A test that prints SKIPPED did not exercise the device (no device, a missing "
               "layer): on a GPU run every count there should be 0.")

    ms = metrics(bench)
    if ms:
        out += ["", "## Benches: ratios to native", "", "| scenario | ratio |", "|---|---|"]
        for name, r in ratios(ms):
            out.append(f"| {name} | {r:.2f} |")
        out += ["", "## Benches: every metric", "", "| metric | value |", "|---|---|"]
        for key, v in sorted(ms.items()):
            out.append(f"| `{key}` | {fmt(v)} |")
        for line in bench.splitlines():
            if line.startswith("cross-ring chain of"):
                out += ["", line]

    summary = read(os.path.join(results, "demo-summary.json"))
    if summary:
        try:
            s = json.loads(summary)
        except ValueError:
            s = None
        if isinstance(s, dict):
            out += ["", "## Demo", "", "| field | value |", "|---|---|"]
            for k, v in s.items():
                if isinstance(v, (int, float, str, bool)) or v is None:
                    out.append(f"| {k} | {v} |")
            if s.get("per_priority"):
                out += ["", "Per priority: `" + json.dumps(s["per_priority"]) + "`"]
            out.append("")
            out.append("Trace: `demo-trace.json` (open in https://ui.perfetto.dev).")
    with open(os.path.join(results, "RESULTS-gpu.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
