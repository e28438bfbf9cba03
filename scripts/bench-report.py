#!/usr/bin/env python3
"""Writes benches/RESULTS.md from one `make bench` run.

Usage: bench-report.py LOG CRITERION_DIR SINCE OUT

LOG            the run's captured output: the benches print their headline numbers as
               `metric: KEY = VALUE` lines (benches/src/lib.rs, `metric`), the Vulkan bench
               prints `vulkan device: NAME`. A key printed several times (the checker summaries
               rerun interleaved) keeps its smallest value: these are best-of times.
CRITERION_DIR  target/criterion: every `*/new/benchmark.json` + `estimates.json` written after
               SINCE (a Unix time: older ones are from earlier runs) gives criterion's median.
OUT            the markdown file to write.

Each table row sets a baseline against ours from the benches' own interleaved loops (ratio =
ours / baseline unless the row says otherwise), criterion's median ratio for the same pair
where criterion measured both, and the project's target where it has one. Standard library only.
"""

import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys


def load_metrics(log):
    metrics, device = {}, None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^metric: (\S+) = (\S+)\s*$", line)
            if m:
                key, value = m.group(1), float(m.group(2))
                metrics[key] = min(value, metrics.get(key, value))
                continue
            m = re.match(r"^vulkan device: (.+?)\s*$", line)
            if m:
                device = m.group(1)
    return metrics, device


def load_criterion(root, since):
    """full_id -> median ns per element (per job where the group declares Elements)."""
    out = {}
    for bench in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        est = os.path.join(os.path.dirname(bench), "estimates.json")
        if not os.path.exists(est) or os.path.getmtime(est) < since:
            continue
        with open(bench) as f:
            b = json.load(f)
        with open(est) as f:
            e = json.load(f)
        median = e["median"]["point_estimate"]
        tp = b.get("throughput") or {}
        if "Elements" in tp:
            median /= tp["Elements"]
        out[b["full_id"]] = median
    return out


def fmt_value(v, unit):
    if v is None:
        return "–"
    if unit == "ns":
        if v >= 1e6:
            return f"{v / 1e6:.2f} ms"
        if v >= 1e3:
            return f"{v / 1e3:.1f} µs"
        return f"{v:.0f} ns"
    if unit == "/s":
        if v >= 1e6:
            return f"{v / 1e6:.2f} M/s"
        if v >= 1e3:
            return f"{v / 1e3:.1f} k/s"
        return f"{v:.0f}/s"
    if unit == "share":
        return f"{v:.3f}"
    if unit == "B":
        return f"{v:.0f} B"
    return f"{v:.3g}"


class Report:
    def __init__(self, metrics, crit):
        self.m, self.c = metrics, crit
        self.lines = []
        self.missed = []

    def section(self, title, note=None):
        self.lines += ["", f"## {title}", ""]
        if note:
            self.lines += [note, ""]
        self.lines += [
            "| measure | baseline | ours | ratio | criterion ratio | target | met |",
            "|---|---|---|---|---|---|---|",
        ]

    def row(self, label, base, ours, unit="ns", crit=None, target=None, invert=False,
            ratio_key=None):
        """base/ours: metric keys (or literal numbers); crit: (baseline id, ours id);
        target: (text, predicate(base, ours, ratio)); invert: ratio = base / ours;
        ratio_key: a metric holding the ratio itself (a median of interleaved rounds' ratios),
        used instead of ours / base when the bench printed it."""
        b = self.m.get(base) if isinstance(base, str) else base
        o = self.m.get(ours) if isinstance(ours, str) else ours
        ratio = None
        if b is not None and o is not None and (o if invert else b) > 0:
            ratio = b / o if invert else o / b
        if ratio_key is not None and ratio_key in self.m:
            ratio = self.m[ratio_key]
        cr = "–"
        if crit:
            cb, co = self.c.get(crit[0]), self.c.get(crit[1])
            if cb and co:
                cr = f"{(cb / co if invert else co / cb):.2f}×"
        met, ttext = "", "–"
        if target:
            ttext = target[0]
            if ratio is None and b is None and o is None:
                met = "not run"
            else:
                try:
                    ok = target[1](b, o, ratio)
                except TypeError:
                    ok = None
                met = "n/a" if ok is None else ("met" if ok else "**missed**")
        rtext = f"{ratio:.2f}×" if ratio is not None else "–"
        if target and met == "**missed**":
            self.missed.append(f"{label} ({rtext if ratio is not None else fmt_value(o, unit)}"
                               f" vs {ttext})")
        self.lines.append(
            f"| {label} | {fmt_value(b, unit)} | {fmt_value(o, unit)} | {rtext} | {cr} | "
            f"{ttext} | {met} |"
        )

    def text(self, *lines):
        self.lines += ["", *lines]


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return cpu, os.cpu_count(), platform.release(), commit


def main():
    log, crit_dir, since, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    m, device = load_metrics(log)
    c = load_criterion(crit_dir, since)
    cpu, ncpu, kernel, commit = machine()
    r = Report(m, c)
    le = lambda x: (lambda b, o, ratio: ratio <= x)  # noqa: E731
    ge = lambda x: (lambda b, o, ratio: ratio >= x)  # noqa: E731

    r.section(
        "1. Fences",
        "Per operation. Wake latency is one way (ping-pong round trip / 2). Ours: medians of "
        "21 rounds, the three routines interleaved round by round; ratios are the medians of "
        "each round's ratio.",
    )
    for g, label in [
        ("create_signal", "create + signal"),
        ("add_callback_signal", "add_callback + signal"),
        ("wake_latency", "cross-thread signal → wake"),
        ("wake_latency_nospin", "cross-thread signal → wake, spin off"),
    ]:
        tgt = ("≤ 1.1× Condvar", le(1.1)) if g == "wake_latency" else None
        r.row(f"{label} vs Condvar", f"fence.{g}.condvar_ns", f"fence.{g}.fence_ns",
              crit=(f"{g}/condvar", f"{g}/fence"), target=tgt,
              ratio_key=f"fence.{g}.fence_condvar_ratio")
        tgt = ("≤ 1.2×", le(1.2)) if g == "create_signal" else None
        r.row(f"{label} vs bare Event", f"fence.{g}.event_ns", f"fence.{g}.fence_ns",
              crit=(f"{g}/event", f"{g}/fence"), target=tgt,
              ratio_key=f"fence.{g}.fence_event_ratio")
    r.row("bytes per pending fence, with its `Arc` (counting allocator)", None,
          "fence.alloc.pending_bytes", unit="B",
          target=("≤ 128 B", lambda b, o, ratio: o <= 128))
    r.row("bytes per pending fence with one callback reserved (`prepare(1)`)", None,
          "fence.alloc.prepared_1cb_bytes", unit="B")
    r.row("bytes per pending fence with one `add_callback` (closure box included)", None,
          "fence.alloc.with_callback_bytes", unit="B")

    r.section(
        "2. Checker cost",
        "Mock-ring throughput (ns per job, immediate ring, 100k jobs, best of 5 × 3 "
        "interleaved rounds). \"Compiled out\" is the same bench built with "
        "`--no-default-features`; the two builds' summaries run alternately.",
    )
    for e in (1, 8):
        r.row(f"{e} entit{'y' if e == 1 else 'ies'}: enabled vs compiled out",
              f"checker_sched.out.entities_{e}.ns_per_job",
              f"checker_sched.in.entities_{e}.on_ns_per_job",
              crit=(f"checker_sched_compiled_out/entities_{e}/compiled_out",
                    f"checker_sched/entities_{e}/checker_on"),
              target=("≤ 1.5×", le(1.5)))
        r.row(f"{e} entit{'y' if e == 1 else 'ies'}: enabled vs `Policy::Off`",
              f"checker_sched.in.entities_{e}.off_ns_per_job",
              f"checker_sched.in.entities_{e}.on_ns_per_job",
              crit=(f"checker_sched/entities_{e}/checker_off",
                    f"checker_sched/entities_{e}/checker_on"))
    r.row("fence create + signal: on vs off", "checker.fence_create_signal.off_ns",
          "checker.fence_create_signal.on_ns",
          crit=("checker/fence_create_signal/checker_off",
                "checker/fence_create_signal/checker_on"))
    r.row("annotated mutex lock/unlock vs std", "checker.mutex_lock_unlock.std_ns",
          "checker.mutex_lock_unlock.on_ns",
          crit=("checker/mutex_lock_unlock/std_mutex",
                "checker/mutex_lock_unlock/lockdep_mutex_on"))

    r.section("3. Reservation objects")
    r.row("lock / add_fence / unlock (no ctx) vs std `Mutex<Vec>`",
          "resv.lock_add_unlock.std_ns", "resv.lock_add_unlock.no_ctx_ns",
          crit=("resv_lock_add_unlock/std_mutex_vec_baseline", "resv_lock_add_unlock/resv_no_ctx"),
          target=("≤ 3×", le(3.0)), ratio_key="resv.lock_add_unlock.no_ctx_ratio")
    r.row("lock / add_fence / unlock (AcquireCtx) vs std `Mutex<Vec>`",
          "resv.lock_add_unlock.std_ns", "resv.lock_add_unlock.ctx_ns",
          crit=("resv_lock_add_unlock/std_mutex_vec_baseline",
                "resv_lock_add_unlock/resv_acquire_ctx"),
          ratio_key="resv.lock_add_unlock.ctx_ratio")
    r.row("lock / add_fence / unlock (no ctx), a new fence each time, vs std `Mutex<Vec>`",
          "resv.lock_add_unlock.fresh_std_ns", "resv.lock_add_unlock.fresh_no_ctx_ns",
          ratio_key="resv.lock_add_unlock.fresh_no_ctx_ratio")
    r.row("reader under a writer: unlocked snapshot vs locked (reads/s, ratio = speed-up)",
          "resv.readers.locked_reads_per_s", "resv.readers.unlocked_reads_per_s", unit="/s",
          crit=("resv_readers_under_writer/unlocked_snapshot_reader",
                "resv_readers_under_writer/locked_reader_baseline"))
    r.row("writer commits/s beside an unlocked vs a locked reader",
          "resv.readers.writes_per_s_with_locked", "resv.readers.writes_per_s_with_unlocked",
          unit="/s")
    r.row("`Exec` over 16 objects, 1 thread vs 16 std mutexes", "resv.exec16.std_sorted_alone_ns",
          "resv.exec16.alone_ns")
    r.row("`Exec` over 16 objects: 2 threads (other in reverse order) vs 1", "resv.exec16.alone_ns",
          "resv.exec16.contended_ns",
          crit=("resv_exec_16/one_thread_baseline", "resv_exec_16/two_threads_contending"),
          target=("≤ 8×", le(8.0)), ratio_key="resv.exec16.contended_ratio")
    r.row("`Exec` over 16 objects: 2 threads in the same order vs 1", "resv.exec16.alone_ns",
          "resv.exec16.same_order_contended_ns")
    r.row("2 threads: `Exec` (reverse order) vs 16 std mutexes in one global order",
          "resv.exec16.std_sorted_contended_ns", "resv.exec16.contended_ns")
    bo = m.get("resv.exec16.backoffs_per_lock_all")
    cpu_c, rq_c = m.get("resv.exec16.contended_cpu_ns"), m.get("resv.exec16.contended_runqueue_ns")
    sl_c = m.get("resv.exec16.contended_sleeps_per_lock_all")
    if None not in (bo, cpu_c, rq_c, sl_c):
        r.text(
            f"Contended `lock_all` profile (measuring thread, `/proc/thread-self/schedstat`, "
            f"medians of the interleaved rounds): {fmt_value(cpu_c, 'ns')} on a CPU, "
            f"{fmt_value(rq_c, 'ns')} runnable but waiting for one, the rest of the wall time "
            f"asleep; {sl_c:.3f} sleeps and {bo:.3f} back-offs (wound/wait `-EDEADLK` retries) "
            "per `lock_all`. The ratio depends on whether the two threads get a CPU each: "
            "time-shared (run-queue wait ≈ CPU time) they rarely overlap, and the ratio is "
            "about 2× (the other thread's share of the CPU); running in parallel they back off "
            "about once per `lock_all` and wait for each other. Std mutexes taken in one global "
            "order let the running thread barge back in and so stay near their uncontended "
            "cost; they are the floor, not a like-for-like lock (no deadlock avoidance across "
            "orders)."
        )

    r.section(
        "4. Scheduler on the mock ring",
        "Immediate `MockRing` (hardware fences signal inside `run_job`); baseline: the ring "
        "alone through the `Backend` trait. ns per job, best of 3 × 100k jobs.",
    )
    raw = "scheduler.raw_mockring.ns_per_job"
    for v, label in [
        ("entities_1", "1 entity"),
        ("entities_8", "8 entities"),
        ("entities_64", "64 entities"),
        ("chain_same_sched", "dependency chain, one scheduler"),
        ("chain_cross_sched", "dependency chain, two schedulers"),
    ]:
        r.row(label, raw, f"scheduler.{v}.ns_per_job",
              crit=("scheduler_jobs/raw_mockring", f"scheduler_jobs/{v}"))
    e1, rw = m.get("scheduler.entities_1.ns_per_job"), m.get(raw)
    r.row("1 entity: jobs/s (ours = 1e9 / ns per job)", None,
          1e9 / e1 if e1 else None, unit="/s",
          target=("≥ 1 M jobs/s", lambda b, o, ratio: o >= 1e6))
    r.row("1 entity: per-job overhead over the raw ring (ours − baseline)", None,
          e1 - rw if e1 and rw else None,
          target=("< 1 µs", lambda b, o, ratio: o < 1000))
    r.text(
        "Scaling (`sched_scale` bench, checker on): ns per job, medians of 7 interleaved "
        "rounds of 100k jobs; ratios are medians of the rounds' own ratios. *Queued*: "
        "1,000,000 jobs armed and pushed over 10,000 entities behind one gate fence, then "
        "released; baseline the same jobs on one entity (median of 5 interleaved rounds). "
        "Bytes: heap bytes still allocated per queued job (counting `#[global_allocator]`), "
        "less the payload, including the job's callback on the gate. Allocations: reports of "
        "the checker's `CheckingAllocator` inside signalling sections over the whole bench.",
        "",
        "| measure | baseline | ours | ratio | criterion ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    )
    r.row("1 entity vs the raw ring", "scale.raw_mockring.ns_per_job",
          "scale.entities_1.ns_per_job", ratio_key="scale.entities_1.vs_raw",
          target=("≤ 2.0×", lambda b, o, ratio: ratio <= 2.0))
    for n in (64, 4096):
        r.row(f"{n} entities vs 1 entity", "scale.entities_1.ns_per_job",
              f"scale.entities_{n}.ns_per_job", ratio_key=f"scale.entities_{n}.vs_1",
              target=("≤ 1.15×", lambda b, o, ratio: ratio <= 1.15))
    r.row("1,000,000 jobs queued over 10,000 entities vs over 1 entity",
          "scale.queued.entities_1.ns_per_job", "scale.queued.entities_many.ns_per_job",
          ratio_key="scale.queued.vs_1", target=("≤ 1.5×", lambda b, o, ratio: ratio <= 1.5))
    r.row("bytes per queued job besides its payload (scheduler's own)", None,
          "scale.queued.bytes_per_job",
          unit="B", target=("≤ 512 B", lambda b, o, ratio: o <= 512))
    r.row("bytes per queued job besides its payload, with the mock backend's prepare_job", None,
          "scale.queued.bytes_per_job_with_backend", unit="B")
    r.row("allocations inside signalling sections (whole bench)", None,
          "scale.signalling_allocations", unit="",
          target=("0", lambda b, o, ratio: o == 0))
    r.text(
        "Fairness: a `High` and a `Low` client each keep 8 jobs of 50 µs queued on a timed "
        "ring of one credit for 1 s; baseline: `Low` alone on the ring. Share = `Low`'s "
        "fraction of the completions; `Fair` weights are 2 (High) : 8 (Low), i.e. 0.20 "
        "expected; strict-priority policies give 0.",
        "",
        "| policy | Low's share | Low's jobs/s vs alone |",
        "|---|---|---|",
    )
    for p in ("fair", "round_robin", "fifo"):
        s, v = m.get(f"fairness.{p}.low_share"), m.get(f"fairness.{p}.low_vs_alone")
        r.lines.append(
            f"| {p} | {fmt_value(s, 'share')} | {f'{v:.2f}×' if v is not None else '–'} |"
        )

    r.section(
        "5. Against native queues",
        f"Device: **{device or 'none (Vulkan bench skipped)'}**. Baseline (a): one "
        "`vkQueueSubmit` per job of a pre-recorded command buffer signalling a timeline "
        "semaphore, then one wait. (b) the same jobs through the scheduler, batching off; "
        "(c) batching on. Throughput: best of 8 interleaved rounds; latency: submit → "
        "host-visible completion of single jobs, all rounds. Throughput ratios are "
        "ours / native jobs/s (higher is better); latency ratios ours / native. Cross-ring "
        "chain: 32 empty jobs, each depending on the one before, alternating between two rings "
        "of one device (on lavapipe both rings share its one queue), with GPU-side waits (the "
        "dependant waits for the other job's submission, then on its timeline semaphore inside "
        "its own submission) or host waits (for the other job's finished fence); native: the "
        "same chain of pre-recorded command buffers over two queues, the GPU waiting.",
    )
    for k, name in [("empty", "empty job"), ("saxpy", "SAXPY 1 MiB")]:
        grp = "vulkan_empty_job" if k == "empty" else "vulkan_saxpy_1mib"
        r.row(f"{name}: (b)/(a) throughput", f"vulkan.{k}.native.jobs_per_s",
              f"vulkan.{k}.scheduler.jobs_per_s", unit="/s",
              crit=(f"{grp}/scheduler", f"{grp}/native"), invert=False,
              target=("≥ 0.9×", ge(0.9)))
        r.row(f"{name}: (c)/(a) throughput", f"vulkan.{k}.native.jobs_per_s",
              f"vulkan.{k}.batched.jobs_per_s", unit="/s",
              crit=(f"{grp}/scheduler_batched", f"{grp}/native"),
              target=("≥ 2× on a real GPU (n/a on lavapipe)", lambda b, o, ratio: None))
        for path, tag in [("scheduler", "(b)"), ("batched", "(c)")]:
            tgt = ("≤ 1.3×", le(1.3)) if path == "scheduler" else None
            r.row(f"{name}: latency p50 {tag}/(a)", f"vulkan.{k}.native.p50_ns",
                  f"vulkan.{k}.{path}.p50_ns", target=tgt)
            r.row(f"{name}: latency p99 {tag}/(a)", f"vulkan.{k}.native.p99_ns",
                  f"vulkan.{k}.{path}.p99_ns")
    r.row("burst of 32 released by one signal: batching off / (a1) one submit each",
          "vulkan.burst.native_each.jobs_per_s", "vulkan.burst.scheduler.jobs_per_s", unit="/s",
          crit=("vulkan_burst/scheduler", "vulkan_burst/native_each"))
    r.row("burst of 32 released by one signal: batching on / (a1) one submit each",
          "vulkan.burst.native_each.jobs_per_s", "vulkan.burst.batched.jobs_per_s", unit="/s",
          crit=("vulkan_burst/scheduler_batched", "vulkan_burst/native_each"))
    r.row("burst of 32 released by one signal: batching on / (a2) all in one submit",
          "vulkan.burst.native_one.jobs_per_s", "vulkan.burst.batched.jobs_per_s", unit="/s",
          crit=("vulkan_burst/scheduler_batched", "vulkan_burst/native_one_submit"))
    r.row("cross-ring chain: one ring / native chain", "vulkan.chain.native.jobs_per_s",
          "vulkan.chain.one_ring.jobs_per_s", unit="/s",
          crit=("vulkan_cross_ring_chain/one_ring", "vulkan_cross_ring_chain/native"))
    r.row("cross-ring chain: two rings, GPU-side waits / native chain",
          "vulkan.chain.native.jobs_per_s", "vulkan.chain.cross_ring.jobs_per_s", unit="/s",
          crit=("vulkan_cross_ring_chain/cross_ring", "vulkan_cross_ring_chain/native"))
    r.row("cross-ring chain: two rings, GPU-side waits / host waits",
          "vulkan.chain.cross_ring_host.jobs_per_s", "vulkan.chain.cross_ring.jobs_per_s",
          unit="/s",
          crit=("vulkan_cross_ring_chain/cross_ring", "vulkan_cross_ring_chain/cross_ring_host"),
          target=("≥ 2× on a real GPU (lavapipe: one queue)", lambda b, o, ratio: None))
    bjps = m.get("vulkan.burst.batched.jobs_per_submit")
    if bjps is not None:
        r.text(f"Burst batching: {bjps:.2f} jobs per `vkQueueSubmit` (32 jobs released by "
               "one signal, batching on).")
    jps = m.get("vulkan.empty.batched.jobs_per_submit")
    busy = m.get("vulkan.saxpy.scheduler.completion_thread_busy")
    cpu_n, cpu_s = m.get("vulkan.saxpy.native.cpu_ns_per_job"), m.get(
        "vulkan.saxpy.scheduler.cpu_ns_per_job")
    if jps is not None:
        r.text(f"Batching: {jps:.2f} jobs per `vkQueueSubmit` in the empty-job loop.")
    for k, name in [("empty", "empty job"), ("saxpy", "SAXPY 1 MiB")]:
        rmin = m.get(f"vulkan.{k}.scheduler.round_ratio_min")
        rmed = m.get(f"vulkan.{k}.scheduler.round_ratio_median")
        if rmin is not None and rmed is not None:
            r.text(f"{name}, (b)/(a) throughput per interleaved round (the paths back to back "
                   f"in each of 8 rounds): min {rmin:.2f}×, median {rmed:.2f}×.")
    e_n, e_s = m.get("vulkan.empty.native.cpu_ns_per_job"), m.get(
        "vulkan.empty.scheduler.cpu_ns_per_job")
    e_busy = m.get("vulkan.empty.scheduler.completion_thread_busy")
    if e_n and e_s and e_busy is not None:
        r.text(
            f"Profile, empty jobs (every thread's CPU from `/proc/self/task/*/schedstat`, "
            f"throughput loops): CPU per job native {e_n / 1e3:.1f} µs vs scheduler (b) "
            f"{e_s / 1e3:.1f} µs ({e_s / e_n:.2f}×); the completion thread is on a CPU "
            f"{e_busy * 100:.0f}% of the wall time (it also runs the jobs that completions "
            "let onto the ring)."
        )
    if busy is not None and cpu_n and cpu_s:
        r.text(
            f"Profile (per-thread CPU from `/proc/self/task/*/schedstat`, SAXPY throughput "
            f"loops): CPU per job native {cpu_n / 1e3:.0f} µs vs scheduler {cpu_s / 1e3:.0f} µs; "
            f"the device's completion thread is on a CPU {busy * 100:.0f}% of the wall time "
            "(native: 0%)."
        )

    r.section(
        "6. Recovery (mock ring)",
        "Timed `MockRing`, a hung job with an innocent job queued behind it on the ring, "
        "timestamps taken inside the backend. Overshoot baseline = the configured timeout "
        "(ratio = time to the handler / timeout). Reset → innocent running: baseline = a job's "
        "push → `run_job` on an idle ring.",
    )
    for t in (2, 20):
        for q in ("p50", "p99"):
            ov = m.get(f"recovery.t{t}ms.overshoot.{q}_ns")
            r.row(f"{t} ms timeout: hang → handler ({q})", t * 1e6,
                  t * 1e6 + ov if ov is not None else None)
        for q in ("p50", "p99"):
            r.row(f"{t} ms timeout: reset start → innocent running ({q})",
                  f"recovery.t{t}ms.idle_push_to_run.{q}_ns",
                  f"recovery.t{t}ms.reset_to_running.{q}_ns")
        r.row(f"{t} ms timeout: reset start → innocent done (p50)", None,
              f"recovery.t{t}ms.reset_to_done.p50_ns")
    for key, label in [
        ("fences_failed", "Vulkan device loss: lose_device → every in-flight fence DeviceLost"),
        ("generation_ready", "Vulkan device loss: lose_device → next generation ready"),
        ("first_job_done", "Vulkan device loss: lose_device → first job on it done"),
    ]:
        # Baseline for the generation rows: a logical device created from scratch and its
        # first job done (`VulkanDevice::sibling`).
        base = "vulkan.loss.fresh_device_first_job.p50_ns" if key != "fences_failed" else None
        r.row(f"{label} (p50)", base, f"vulkan.loss.{key}.p50_ns")
        r.row(f"{label} (max)", None, f"vulkan.loss.{key}.max_ns")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (scripts/bench-report.py) on {now}, commit `{commit}`.",
        "",
        f"- Vulkan device: **{device or 'none'}**",
        f"- Machine: {ncpu} CPUs ({cpu}), Linux {kernel}",
        "- Every ratio compares numbers measured in the same run; \"ratio\" comes from the "
        "benches' own interleaved loops, \"criterion ratio\" from criterion's medians "
        "(short measurement times). Targets are the project's performance goals; they are reported, not "
        "tested.",
        "- The machine is shared with other jobs (2 cores) and noisy: single numbers vary by "
        "±30% between runs; ratios less so.",
    ]
    if r.missed:
        head += ["", "Missed targets: " + "; ".join(r.missed) + ". See Notes."]
    notes = [
        "",
        "## Notes",
        "",
        "Where the time goes, profiles, before/after measurements of changes and the floor of "
        "each missed target: [NOTES.md](NOTES.md) (written by hand, dated; this script leaves "
        "it alone).",
    ]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(head + r.lines + notes) + "\n")
    print(f"wrote {out}: {len(m)} metrics, {len(c)} criterion estimates, "
          f"{len(r.missed)} missed targets")


if __name__ == "__main__":
    main()
