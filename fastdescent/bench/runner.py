"""Run cases: availability, build, correctness check, interleaved timing, derived figures.

Cases are taken group by group (``case.group``: same hot path and data, different implementations).
Within a group every implementation that is available is built and checked against the NumPy
reference first; then all of them are timed side by side (:func:`~fastdescent.bench.timing.
measure_interleaved`), unless their arrays together would exceed the memory budget, in which case they
are built, checked and timed one after the other (``"interleaved": false`` in the row).

Each case gives one *row* (a JSON-serialisable dict): ``status`` is ``"ok"``, ``"skipped"`` (with the
``reason`` it is unavailable), ``"check-failed"`` (its result disagrees with the reference: it is not
timed) or ``"error"`` (it raised).
"""

from __future__ import annotations

import gc
import os
import time
import traceback

from . import cases as C
from . import lowp as L
from .timing import measure_interleaved

__all__ = ["run", "run_group", "default_mem_budget"]

GiB = 1 << 30


def default_mem_budget():
    """Bytes a group may keep alive to be timed interleaved: min(6 GiB, half the available RAM)."""
    env = os.environ.get("FASTDESCENT_BENCH_MEM_GIB")
    if env:
        return int(float(env) * GiB)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    budget = 6 * GiB
    return min(budget, avail // 2) if avail else budget


def _base_row(case):
    row = {"id": case.id, "section": case.section, "group": case.group, "op": case.op,
           "impl": case.impl, "kind": case.kind, "status": None, "reason": None}
    layout = getattr(case, "layout", None)
    if layout is not None:
        row.update(layout=layout.name, elements=layout.elements, n_tensors=layout.n_tensors,
                   dtype=str(case.dtype))
    shape = getattr(case, "shape", None)
    if shape is not None:
        row.update(layout=shape.name, shape=dict(B=shape.B, M=shape.M, K=shape.K, N=shape.N,
                                                 Bw=shape.Bw), dtype=str(case.dtype))
    if getattr(case, "sizes", None) is not None and case.section == "mlp":
        row.update(layout=case.name)
    info = getattr(case, "row_info", None)  # (lowp: formats, bytes per parameter, ref_group)
    if info:
        row.update(info)
    return row


def _fail(row, status, exc, debug=False):
    row["status"] = status
    row["reason"] = f"{type(exc).__name__}: {exc}" if status == "error" else str(exc)
    if debug:
        row["traceback"] = traceback.format_exc()
    return row


def _prepare(case, row, debug=False):
    """Build and check one case; return the instance (or None, with ``row`` filled in)."""
    reason = case.unavailable()
    if reason is not None:
        row["status"], row["reason"] = "skipped", reason
        return None
    inst = None
    t0 = time.perf_counter()
    try:
        inst = case.build()
        row["check"] = case.check(inst)
        row["prepare_s"] = time.perf_counter() - t0
    except C.CheckError as exc:
        _fail(row, "check-failed", exc, debug)
    except Exception as exc:  # noqa: BLE001 - reported in the row, the run goes on
        _fail(row, "error", exc, debug)
    if row["status"] is not None:
        if inst is not None:
            inst.close()
        return None
    if inst.note:
        row["note"] = inst.note
    return inst


def _finish(row, inst, timing, interleaved):
    # the roofline probe is an upper bound on speed: its best round (the least disturbed pass over
    # the same bytes, same threads), not its median
    t = timing.min if row["impl"] == "roofline" else timing.median
    row["status"] = "ok"
    row["time_s"] = t
    row["timing"] = timing.as_dict()
    row["interleaved"] = interleaved
    if timing.over_budget:
        row["note"] = (f"over its time budget: {len(timing.rounds)} of {timing.asked} rounds timed"
                       + (f"; {row['note']}" if row.get("note") else ""))
    if inst.bytes_per_step:
        row["bytes_per_step"] = inst.bytes_per_step
        row["gbps"] = inst.bytes_per_step / t / 1e9
    if inst.flops_per_step:
        row["flops_per_step"] = inst.flops_per_step
        row["gflops"] = inst.flops_per_step / t / 1e9
    if getattr(inst, "steps_per_unit", None):
        row["steps_per_epoch"] = inst.steps_per_unit
        row["steps_per_s"] = inst.steps_per_unit / t
        try:
            row["test_accuracy"] = inst.accuracy()
        except Exception as exc:  # noqa: BLE001
            row["accuracy_error"] = repr(exc)
    if "elements" in row:
        row["elements_per_s"] = row["elements"] / t
        if inst.bytes_per_step and row["elements"]:
            row["bytes_per_param"] = inst.bytes_per_step / row["elements"]
    return row


#: below this probe time the "roofline" is call overhead, not memory traffic: no fraction is given
ROOFLINE_MIN_PROBE_S = 50e-6


def _ref(r):
    """The group whose roofline probe (and baseline) a row is compared with: its own, or the
    ``ref_group`` its case names (the lowp slow peers are timed apart from their probe)."""
    return r.get("ref_group") or r["group"]


def _relative_speed(r, p):
    """Row ``r``'s speed relative to probe row ``p``: probe time / kernel time, times the ratio of
    the bytes they move (= achieved GB/s / probe GB/s; the plain time ratio when the bytes are the
    same, as in every optimizer group)."""
    rb, pb = r.get("bytes_per_step"), p.get("bytes_per_step")
    return p["time_s"] / r["time_s"] * (rb / pb if rb and pb else 1.0)


def _derive(rows):
    """Roofline fraction (achieved bandwidth / the streaming probe's, i.e. probe time / kernel time
    where both move the same bytes) for the rows compared with a probe (:func:`_ref`), where the
    probe itself is bandwidth-bound (takes at least ROOFLINE_MIN_PROBE_S). The probe's time is its
    best round; a kernel that beats it shows that the probe was disturbed (it is not an upper bound
    in this run): no fraction is given for the group then, and the row says why. Rows whose case
    names a ``baseline`` implementation get ``time_vs_baseline`` = time / the baseline's time in
    the same ref group (lowp: torch's fused float32 Adam). Idempotent: :func:`run` applies it again
    over all rows for the comparisons across groups."""
    probe = {_ref(r): r for r in rows if r["impl"] == "roofline" and r["status"] == "ok"}
    disturbed = {_ref(r) for r in rows if r["status"] == "ok" and r["impl"] != "roofline"
                 and _ref(r) in probe and probe[_ref(r)]["time_s"] >= ROOFLINE_MIN_PROBE_S
                 and _relative_speed(r, probe[_ref(r)]) > 1.0}
    for r in rows:
        if r["status"] == "ok" and _ref(r) in probe and r["impl"] != "roofline":
            p = probe[_ref(r)]
            r.pop("roofline_fraction", None)
            if _ref(r) in disturbed:
                r["roofline_note"] = ("no roofline fraction: a kernel beat the best streaming-probe "
                                      "round, so the probe was disturbed in this run (machine load)")
            elif p["time_s"] >= ROOFLINE_MIN_PROBE_S:
                r.pop("roofline_note", None)
                r["roofline_fraction"] = _relative_speed(r, p)
                if "gbps" in p:
                    r["roofline_gbps"] = p["gbps"]
            else:
                r["roofline_note"] = (f"no roofline fraction: the streaming probe takes "
                                      f"{p['time_s'] * 1e6:.1f} us, under "
                                      f"{ROOFLINE_MIN_PROBE_S * 1e6:.0f} us (call overhead dominates)")
    base = {}
    for r in rows:
        if r.get("baseline") and r["status"] == "ok" and r["impl"] == r["baseline"]:
            base[(_ref(r), r["impl"])] = r["time_s"]
    for r in rows:
        key = (_ref(r), r.get("baseline"))
        if r.get("baseline") and r["status"] == "ok" and r["impl"] != "roofline" and key in base:
            r["time_vs_baseline"] = r["time_s"] / base[key]
    return rows


def run_group(group, *, rounds=5, min_time=0.05, warmup=1, mem_budget=None, on_row=None,
              debug=False, budget=None):
    """Run the cases of one group (same hot path and data); return their rows in order."""
    mem_budget = default_mem_budget() if mem_budget is None else mem_budget
    rows = [_base_row(c) for c in group]
    runnable = [i for i, c in enumerate(group) if c.unavailable() is None]
    total_mem = sum(group[i].memory_estimate for i in runnable)
    interleave = total_mem <= mem_budget
    if interleave:
        insts = {}
        for i, case in enumerate(group):
            inst = _prepare(case, rows[i], debug)
            if inst is not None:
                insts[i] = inst
            elif on_row is not None:
                on_row(case, rows[i])
        order = list(insts)
        try:
            timings = measure_interleaved([insts[i].step for i in order], rounds=rounds,
                                          min_time=min_time, warmup=warmup,
                                          budget=budget) if order else []
        except Exception as exc:  # noqa: BLE001 - time them one by one to find the culprit
            timings = None
            first = exc
        if timings is None:
            for i in order:
                try:
                    (tm,) = measure_interleaved([insts[i].step], rounds=rounds, min_time=min_time,
                                                warmup=0, budget=budget)
                    _finish(rows[i], insts[i], tm, False)
                except Exception as exc:  # noqa: BLE001
                    _fail(rows[i], "error", exc, debug)
            rows[order[0]].setdefault("note", f"interleaved timing failed: {first!r}")
        else:
            for i, tm in zip(order, timings):
                _finish(rows[i], insts[i], tm, True)
        for i in order:
            insts[i].close()
            if on_row is not None:
                on_row(group[i], rows[i])
        insts.clear()
    else:
        for i, case in enumerate(group):
            inst = _prepare(case, rows[i], debug)
            if inst is not None:
                try:
                    (tm,) = measure_interleaved([inst.step], rounds=rounds, min_time=min_time,
                                                warmup=warmup, budget=budget)
                    _finish(rows[i], inst, tm, False)
                except Exception as exc:  # noqa: BLE001
                    _fail(rows[i], "error", exc, debug)
                inst.close()
                del inst
                gc.collect()
            if on_row is not None:
                on_row(case, rows[i])
    gc.collect()
    return _derive(rows)


def groups_of(cases):
    """Cases grouped by ``case.group``, groups and members in first-seen order."""
    out = {}
    for c in cases:
        out.setdefault((c.section, c.group), []).append(c)
    return list(out.values())


def run(cases, *, rounds=5, min_time=0.05, warmup=1, mem_budget=None, on_row=None, debug=False,
        budget=None, deadline=None):
    """Run every case, group by group; return the rows.

    ``budget``: seconds each case may spend being timed (see :func:`.timing.measure_interleaved`);
    ``deadline``: a ``time.perf_counter()`` value after which no further group starts: the cases
    left are reported as skipped ("the run's time budget was spent"), not run.
    """
    rows = []
    for group in groups_of(cases):
        if deadline is not None and time.perf_counter() > deadline:
            for case in group:
                row = _base_row(case)
                row["status"] = "skipped"
                row["reason"] = "not run: the run's time budget was spent (--time-budget)"
                rows.append(row)
                if on_row is not None:
                    on_row(case, row)
            continue
        # a case may cap its group's rounds and timing budget (lowp: the slow peers, 1-4 s a step)
        caps = [c.max_rounds for c in group if getattr(c, "max_rounds", None)]
        g_rounds = min([rounds] + caps)
        budgets = [c.budget_s for c in group if getattr(c, "budget_s", None)]
        g_budget = min(budgets + ([budget] if budget is not None else [])) if budgets else budget
        rows.extend(run_group(group, rounds=g_rounds, min_time=min_time, warmup=warmup,
                              mem_budget=mem_budget, on_row=on_row, debug=debug, budget=g_budget))
    _derive([r for r in rows if r.get("ref_group")])  # comparisons across groups (lowp)
    C._base_data.cache_clear()
    C._reference_params.cache_clear()
    C._mm_data.cache_clear()
    C._mm_reference.cache_clear()
    L._prefix_reference.cache_clear()
    gc.collect()
    return rows
