"""Tensor-product benchmark: mlip backends against e3nn (and cuEquivariance when installed).

For L = 1..8: ``C x (0e+1o+...+L)`` ⊗ ``(0e+1o+...+L)`` (channelwise) or ``C x (...)`` (elementwise)
-> outputs up to L ("model": as inside a potential) and up to 2L ("full": as in the published
Gaunt/grid benchmarks). Per-sample weights ``[N, weight_numel]``; float32. ``fwd`` = forward
under no_grad, ``f+b`` = forward + backward of ``out.square().sum()`` w.r.t. x1, x2, weight.

Timing: warm-up calls, then the median of timed calls; a call over ``--cap`` seconds is
reported alone (one cold call); a case predicted (from the growth between the two previous
L) to exceed the cap is skipped. Each backend is compared with e3nn measured in the same run.

Writes ``benchmarks/results/tp[-quick].json`` (or ``--out``) and a PNG plot next to it.
``benchmarks/README.md`` is rewritten only when asked: ``--write-readme`` replaces its ``tp``
(``tp-cuda``) section; a ``--quick`` run never does (a smoke run is not the published table).

    python benchmarks/tp.py --quick          # small sizes: 3-5 minutes on 2 idle CPU cores
    python benchmarks/tp.py --write-readme   # full sweep (tens of minutes on 2 CPU cores), README updated
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from _readme import write_readme_section

from mlip.atomic import atomic_path, atomic_write_text
from mlip.kernels.tp import BACKENDS

HERE = Path(__file__).resolve().parent


def irreps_upto(L: int, mul: int) -> str:
    return "+".join(f"{mul}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


CLOCK = time.perf_counter


def time_call(fn, cap: float, repeats: int = 5, warmup: int = 2) -> dict:
    """Median time (ms) of ``fn()`` with warm-up; a call longer than ``cap`` s is timed alone."""
    t0 = CLOCK()
    fn()
    first = CLOCK() - t0
    if first > cap:
        return {"ms": first * 1e3, "n": 1, "note": "1 cold call"}
    if first < 10:  # slow calls are their own warm-up
        for _ in range(warmup - 1):
            fn()
    times = []
    budget = time.perf_counter() + cap
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
        if time.perf_counter() > budget:
            break
    return {"ms": statistics.median(times) * 1e3, "n": len(times)}


def build(impl: str, in1: str, in2: str, out: str, mode: str, device):
    """Return (module, weight_numel) for an implementation name."""
    if impl == "e3nn":
        from e3nn import o3

        from mlip.kernels import TensorProduct

        ins = TensorProduct(in1, in2, out, mode=mode, backend="cg").impl.instructions()
        m = o3.TensorProduct(in1, in2, out, ins, shared_weights=False, internal_weights=False)
        return m.to(device), m.weight_numel
    if impl == "cueq":
        import cuequivariance as cue
        import cuequivariance_torch as cuet
        from cuequivariance.group_theory.experimental.e3nn import O3_e3nn

        if mode != "channelwise":
            raise NotImplementedError("cuEquivariance comparison is channelwise only")
        m = cuet.ChannelWiseTensorProduct(
            cue.Irreps(O3_e3nn, in1), cue.Irreps(O3_e3nn, in2), cue.Irreps(O3_e3nn, out),
            layout=cue.mul_ir, shared_weights=False, internal_weights=False, device=device,
        )
        return m, m.weight_numel
    from mlip.kernels import TensorProduct

    m = TensorProduct(in1, in2, out, mode=mode, backend=impl)
    return m.to(device), m.weight_numel


def many_body_calls(impl, L, N, C, device) -> tuple[dict, dict]:
    """The many-body product of a potential layer (``kind = "manybody"``): backend ``impl``'s
    :func:`mlip.kernels.many_body_product` at correlation 3 on ``C x (0e+1o+...+L)`` onto the
    same irreps, one element: a chain of two elementwise tensor products for ``cg`` and
    ``cp``, pointwise powers on the sphere (``SymmetricPower``) for ``grid``. f+b: gradients
    of ``out.square().sum()`` w.r.t. the input and the weight tables."""
    from mlip.kernels import many_body_product

    if impl not in BACKENDS:
        raise NotImplementedError(f"{impl} has no many-body product")
    irr = irreps_upto(L, C)
    t0 = time.perf_counter()
    m = many_body_product(impl, irr, irr, 3, 1, generator=torch.Generator().manual_seed(0))
    m = m.to(device=device, dtype=torch.float32)
    build_s = time.perf_counter() - t0
    from e3nn import o3

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(N, o3.Irreps(irr).dim, generator=g).to(device).requires_grad_()
    element = torch.zeros(N, dtype=torch.long, device=device)
    params = list(m.parameters())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            m(x, element)
        sync()

    def fb():
        torch.autograd.grad(m(x, element).square().sum(), (x, *params))
        sync()

    row = {"impl": impl, "L": L, "mode": "channelwise", "kind": "manybody",
           "weight_numel": sum(p.numel() for p in params), "build_s": build_s}
    return row, {"fwd": fwd, "fb": fb}


def case_runs(mode, kind) -> bool:
    """Whether (mode, kind) is a case: the many-body product has no mode, it runs once (as
    channelwise); the stacked rows are the interaction's channelwise product."""
    return kind not in ("manybody", "rows") or mode == "channelwise"


def impl_runs(impl, mode, kind) -> bool:
    """Whether ``impl`` runs in case (mode, kind): cuEquivariance's product is channelwise only,
    and only mlip backends have a many-body product and the stacked-rows route."""
    return not ((impl == "cueq" and mode != "channelwise") or (kind in ("manybody", "rows") and impl not in BACKENDS))


def rows_calls(m, x1, x2, w, sync) -> dict:
    """The stacked-rows route as the potential's interaction runs it: inputs as component-major
    rows ``[D, N, C]`` (stacked once, outside the timing), ``forward_rows`` on chunks of the
    product's CPU chunk size along the sample axis, the chunks' losses summed before one
    backward. A backend without the route raises NotImplementedError (the case is skipped)."""
    if not m.supports_rows:
        raise NotImplementedError("no stacked-rows route")
    p1, p2, _ = m.rows_plans
    r1, r2 = (p.stack(x.detach()).requires_grad_() for p, x in ((p1, x1), (p2, x2)))
    k = m.chunk_size if x1.device.type == "cpu" and m.chunk_size else x1.shape[0]

    def pieces():
        return zip(r1.split(k, 1), r2.split(k, 1), w.split(k, 0))

    def fwd():
        with torch.no_grad():
            for a, b, c in pieces():
                m.forward_rows(a, b, c)
        sync()

    def fb():
        loss = sum(m.forward_rows(a, b, c).square().sum() for a, b, c in pieces())
        torch.autograd.grad(loss, (r1, r2, w))
        sync()

    return {"fwd": fwd, "fb": fb}


def calls(impl, L, mode, kind, N, C, device) -> tuple[dict, dict]:
    """Build one implementation for one case; returns its row stub and ``{"fwd": fn, "fb": fn}``."""
    if kind == "manybody":
        return many_body_calls(impl, L, N, C, device)
    in1 = irreps_upto(L, C)
    in2 = irreps_upto(L, 1) if mode == "channelwise" else irreps_upto(L, C)
    out = irreps_upto(2 * L if kind == "full" else L, C)
    t0 = time.perf_counter()
    m, numel = build(impl, in1, in2, out, mode, device)
    build_s = time.perf_counter() - t0
    g = torch.Generator(device="cpu").manual_seed(0)
    from e3nn import o3

    x1 = torch.randn(N, o3.Irreps(in1).dim, generator=g).to(device).requires_grad_()
    x2 = torch.randn(N, o3.Irreps(in2).dim, generator=g).to(device).requires_grad_()
    w = torch.randn(N, numel, generator=g).to(device).requires_grad_()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            m(x1, x2, w)
        sync()

    def fb():
        y = m(x1, x2, w)
        torch.autograd.grad(y.square().sum(), (x1, x2, w))
        sync()

    fns = {"fwd": fwd, "fb": fb}
    if kind == "rows":
        fns = rows_calls(m, x1, x2, w, sync)
    row = {"impl": impl, "L": L, "mode": mode, "kind": kind, "weight_numel": numel, "build_s": build_s}
    flops = getattr(getattr(m, "impl", None), "transform_flops", None)
    if flops is not None:  # GEMM work of the backend's transforms, by their shapes (forward, backward)
        f, b = flops(N)
        row["gemm_flops"] = {"fwd": f, "fb": f + b}
    return row, fns


def measure(impl, L, mode, kind, N, C, device, cap) -> dict:
    """Time one implementation alone (warm-up, then the median)."""
    row, fns = calls(impl, L, mode, kind, N, C, device)
    row["fwd"] = time_call(fns["fwd"], cap)
    row["fb"] = time_call(fns["fb"], cap)
    return row


def measure_interleaved(impls, L, mode, kind, N, C, device, cap, repeats: int = 5, warmup: int = 2) -> list[dict]:
    """Time several implementations of one case in alternating order (one call of each per
    round), so that a change of machine load hits all of them alike; medians per impl.
    An implementation whose first call exceeds ``cap`` seconds keeps that one call."""
    built = []
    for impl in impls:
        try:
            built.append(calls(impl, L, mode, kind, N, C, device))
        except (RuntimeError, MemoryError, NotImplementedError) as exc:
            built.append(({"impl": impl, "L": L, "mode": mode, "kind": kind,
                           "fwd": {"skipped": type(exc).__name__}, "fb": {"skipped": str(exc)[:60]}}, None))
    times = {(i, k): [] for i in range(len(built)) for k in ("fwd", "fb")}
    slow = set()
    budget = time.perf_counter() + 4 * cap * max(1, len(built))
    for r in range(warmup + repeats):
        for i, (_, fns) in enumerate(built):
            for key in ("fwd", "fb"):
                if fns is None or (i, key) in slow:
                    continue
                t0 = CLOCK()
                fns[key]()
                dt = CLOCK() - t0
                if r == 0 and dt > cap:
                    times[(i, key)] = [dt]
                    slow.add((i, key))
                elif r >= warmup or (r == 0 and dt > 10):  # slow calls are their own warm-up
                    times[(i, key)].append(dt)
        if time.perf_counter() > budget and all(times[(i, k)] for i, (_, f) in enumerate(built) if f
                                                for k in ("fwd", "fb")):
            break
    rows = []
    for i, (row, fns) in enumerate(built):
        if fns is not None:
            for key in ("fwd", "fb"):
                t = times[(i, key)]
                row[key] = {"ms": statistics.median(t) * 1e3, "n": len(t),
                            **({"note": "1 cold call"} if (i, key) in slow else {})}
        rows.append(row)
    return rows


def gemm_peak(repeats: int = 5) -> float:
    """GFLOP/s of a 2048-cubed float32 matrix product in this process (median; on CLOCK)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        a @ b
        times.append(CLOCK() - t0)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def gemm_rate(row, key, peak=None) -> str:
    """The transforms' GEMM flops (by their shapes) over the time: GFLOP/s, and % of ``peak``."""
    f, e = row.get("gemm_flops", {}).get(key), row.get(key) or {}
    if not f or "ms" not in e:
        return "–"
    # the peak timed next to the row's case (just before and after its L), else its run's median
    peak = row.get("gemm_peak_local") or row.get("gemm_peak", peak)
    r = f / (e["ms"] * 1e6)
    return f"{r:.1f}" + (f" ({100 * r / peak:.0f} %)" if peak else "")


def _load_text(meta) -> str:
    """``"<command>: 1.1 -> 1.3"`` from a run's meta (``unknown`` where it was not recorded)."""
    a, b = meta.get("loadavg_start"), meta.get("loadavg_end")
    cmd = " ".join(meta.get("commands", [""])[0].split()[2:]) or "this run"
    when = meta.get("date", "")
    return f"`{cmd}` ({when}) " + (f"{a[0]:.1f} -> {b[0]:.1f}" if a and b else "unknown")


def _peaks_text(runs) -> str:
    """The GEMM peak of each run (GFLOP/s; range of its timings where there were several)."""
    out = []
    for d in runs:
        m = d["meta"]
        if not m.get("gemm_peak_gflops"):
            continue
        xs = m.get("gemm_peak_samples") or [m["gemm_peak_gflops"]]
        spread = f", timings {min(xs):.1f}-{max(xs):.1f}" if len(xs) > 1 else ""
        out.append(f"{m['gemm_peak_gflops']:.1f} GFLOP/s ({m.get('date', '')}{spread})")
    return "; ".join(out)


def fmt(entry) -> str:
    if entry is None:
        return "–"
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    s = f"{entry['ms']:,.1f}" if entry["ms"] < 100 else f"{entry['ms']:,.0f}"
    return s + (f" ({entry['note']})" if "note" in entry else "")


def table(rows, impls, mode, kind, key, peak=None) -> str:
    by = {(r["impl"], r["L"]): r for r in rows if r["mode"] == mode and r["kind"] == kind}
    rated = [i for i in impls if any("gemm_flops" in r for (j, _), r in by.items() if j == i)]
    Ls = sorted({r["L"] for r in rows if r["mode"] == mode and r["kind"] == kind})
    # ratio columns: e3nn's time over each backend's, and cg's over each other mlip backend's
    pairs = [("e3nn", b) for b in impls if b != "e3nn"] if "e3nn" in impls else []
    if "cg" in impls:
        pairs += [("cg", b) for b in impls if b not in ("cg", "e3nn", "cueq")]
        if "cueq" in impls:
            pairs.append(("cueq", "cg"))
    head = ("| L | " + " | ".join(impls) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs)
            + "".join(f" | {i} GEMM GFLOP/s" for i in rated) + " |")
    lines = [head, "|" + "---|" * (1 + len(impls) + len(pairs) + len(rated))]
    for L in Ls:
        cells = [fmt(by.get((i, L), {}).get(key)) for i in impls]
        ratios = []
        for a, b in pairs:
            ref, e = by.get((a, L), {}).get(key), by.get((b, L), {}).get(key)
            ok = ref and e and "ms" in ref and "ms" in e
            ratios.append(f"{ref['ms'] / e['ms']:.2f}x" if ok else "–")
        rates = "".join(f" | {gemm_rate(by.get((i, L), {}), key, peak)}" for i in rated)
        lines.append(f"| {L} | " + " | ".join(cells) + " | " + " | ".join(ratios) + rates + " |")
    return "\n".join(lines)


def plot(rows, impls, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = [(m, k) for m in ("channelwise", "elementwise") for k in ("model", "full")]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8), sharex=True)
    for col, (mode, kind) in enumerate(combos):
        for r_i, key in enumerate(("fwd", "fb")):
            ax = axes[r_i, col]
            for impl in impls:
                pts = [
                    (r["L"], r[key]["ms"])
                    for r in rows
                    if r["impl"] == impl and r["mode"] == mode and r["kind"] == kind and "ms" in r.get(key, {})
                ]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=impl)
            ax.set_yscale("log")
            ax.set_title(f"{mode}, out<= {'L' if kind == 'model' else '2L'}, "
                         f"{'forward' if key == 'fwd' else 'fwd+bwd'}")
            ax.set_xlabel("L")
            ax.set_ylabel("ms")
            ax.grid(alpha=0.3)
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="L=1..3, N=1000, every implementation, mode and kind: a smoke run of 3-5 minutes on 2 idle "
                        "CPU cores (11 minutes measured with other jobs on the machine); never rewrites the README")
    p.add_argument("--L", type=int, nargs="+", help="degrees to run (default 1..8, quick 1..3)")
    p.add_argument("--N", type=int, help="samples per call (default 10000, quick 1000)")
    p.add_argument("--C", type=int, default=32, help="channels (default 32)")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS),
                   help="mlip backends to time (default: every registered one)")
    p.add_argument("--modes", nargs="+", default=["channelwise", "elementwise"])
    p.add_argument("--kinds", nargs="+", default=["model", "full"], choices=["model", "full", "manybody", "rows"],
                   help="model: out<=L; full: out<=2L; manybody: a layer's many-body product (correlation 3: "
                   "cg's and cp's chain of elementwise products, grid's SymmetricPower), channelwise runs only; "
                   "rows: out<=L on stacked component-major rows in CPU chunks, the route the potential's "
                   "interaction runs (mlip backends that have it, channelwise runs only)")
    p.add_argument("--no-cueq", action="store_true", help="skip cuEquivariance even when installed")
    p.add_argument("--no-e3nn", action="store_true", help="skip the e3nn reference")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cap", type=float, default=60.0,
                   help="seconds: one call longer than this ends the sweep of that case")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time with 1 thread, robust when "
                   "other jobs share the machine (times then are single-thread times)")
    p.add_argument("--interleave", action="store_true",
                   help="per L, time all implementations in alternating order (robust to load changes "
                   "on a shared machine) instead of one sweep per implementation")
    p.add_argument("--note", action="append", help="a paragraph to add to the README section (repeatable)")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite this run's section of benchmarks/README.md (full runs and --from-json only); "
                        "without it a run writes only its JSON and plot")
    p.add_argument("--no-readme", action="store_true",
                   help="the default (leave benchmarks/README.md alone); kept so recorded commands still run")
    p.add_argument("--out", type=Path, help="JSON output path")
    p.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                   help="measure nothing: merge these result files (e.g. runs split by --modes) and "
                   "write the table, plot and README section from them")
    args = p.parse_args(argv)
    if args.write_readme and (args.quick or args.no_readme):
        p.error("--write-readme: " + ("a --quick run never rewrites benchmarks/README.md" if args.quick
                                      else "contradicts --no-readme"))
    started = time.perf_counter()
    load_start = os.getloadavg()
    Ls = args.L or ([1, 2, 3] if args.quick else list(range(1, 9)))
    N = args.N or (1000 if args.quick else 10_000)
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    impls = list(args.backends) + ([] if args.no_e3nn else ["e3nn"])
    if not args.no_cueq:
        try:
            import cuequivariance_torch  # noqa: F401

            impls.append("cueq")
        except ImportError:
            pass
    rows = []
    # the GEMM peak is timed at the start, before and after each L of an interleaved sweep and at
    # the end (a VM's speed moves within a run): a row's rate divides by the median of the two
    # timings next to its L, the run's median is kept as well
    peaks: list[float] = []

    def time_peak() -> float | None:  # one more timing (CPU runs only); the median so far
        if args.from_json or device.type != "cpu":
            return None
        peaks.append(gemm_peak())
        return statistics.median(peaks)

    peak = time_peak()
    if peak:
        print(f"float32 GEMM 2048^3 in this process: {peak:.1f} GFLOP/s", flush=True)
    for mode in ([] if args.from_json else args.modes):
        for kind in args.kinds:
            if not case_runs(mode, kind):
                continue
            if args.interleave:
                hist: dict = {}
                lacking: dict = {}  # impl -> its skipped entries where it lacks the case's route
                for L in Ls:
                    peak = time_peak()
                    live = []
                    for impl in impls:
                        if not impl_runs(impl, mode, kind):
                            continue
                        if impl in lacking:
                            rows.append({"impl": impl, "L": L, "mode": mode, "kind": kind, **lacking[impl]})
                            continue
                        h = hist.get(impl, [])
                        est = h[-1] * h[-1] / h[-2] / 1e3 if len(h) >= 2 else None
                        if (est is not None and est > args.cap) or (h and h[-1] > args.cap * 1e3):
                            why = f"est. {est:.0f} s/call" if est is not None else "previous L over cap"
                            rows.append({"impl": impl, "L": L, "mode": mode, "kind": kind,
                                         "fwd": {"skipped": why}, "fb": {"skipped": why}})
                        else:
                            live.append(impl)
                    before = peaks[-1] if peaks else None
                    done = measure_interleaved(live, L, mode, kind, N, args.C, device, args.cap)
                    peak = time_peak()
                    for r in done:
                        if peak:
                            r["gemm_peak_local"] = statistics.median([before, peaks[-1]])
                        rows.append(r)
                        if r["fwd"].get("skipped") == "NotImplementedError":
                            lacking[r["impl"]] = {"fwd": r["fwd"], "fb": r["fb"]}
                        hist.setdefault(r["impl"], []).append(r["fb"].get("ms", float("inf")))
                        print(f"{mode:11s} {kind:5s} L={L} {r['impl']:5s} fwd {fmt(r['fwd']):>12s} ms   "
                              f"f+b {fmt(r['fb']):>12s} ms   GEMM GFLOP/s {gemm_rate(r, 'fwd', peak)} / "
                              f"{gemm_rate(r, 'fb', peak)}", flush=True)
                continue
            for impl in impls:
                if not impl_runs(impl, mode, kind):
                    continue
                hist: list[float] = []
                lacks = None  # its skipped entries where it lacks the case's route
                for L in Ls:
                    if lacks:
                        rows.append({"impl": impl, "L": L, "mode": mode, "kind": kind, **lacks})
                        continue
                    if len(hist) >= 2 and hist[-1] * hist[-1] / hist[-2] > args.cap * 1e3:
                        est = hist[-1] * hist[-1] / hist[-2] / 1e3
                        rows.append({"impl": impl, "L": L, "mode": mode, "kind": kind,
                                     "fwd": {"skipped": f"est. {est:.0f} s/call"},
                                     "fb": {"skipped": f"est. {est:.0f} s/call"}})
                        continue
                    if hist and hist[-1] > args.cap * 1e3:
                        rows.append({"impl": impl, "L": L, "mode": mode, "kind": kind,
                                     "fwd": {"skipped": "previous L over cap"},
                                     "fb": {"skipped": "previous L over cap"}})
                        continue
                    try:
                        r = measure(impl, L, mode, kind, N, args.C, device, args.cap)
                    except (RuntimeError, MemoryError, NotImplementedError) as exc:  # e.g. out of memory
                        r = {"impl": impl, "L": L, "mode": mode, "kind": kind,
                             "fwd": {"skipped": type(exc).__name__}, "fb": {"skipped": str(exc)[:60]}}
                        if isinstance(exc, NotImplementedError):
                            lacks = {"fwd": r["fwd"], "fb": r["fb"]}
                        hist.append(float("inf"))
                        rows.append(r)
                        continue
                    rows.append(r)
                    hist.append(r["fb"]["ms"])
                    print(f"{mode:11s} {kind:5s} L={L} {impl:5s} fwd {fmt(r['fwd']):>12s} ms   "
                          f"f+b {fmt(r['fb']):>12s} ms   GEMM GFLOP/s {gemm_rate(r, 'fwd', peak)} / "
                          f"{gemm_rate(r, 'fb', peak)}", flush=True)
    if peaks:
        peak = time_peak()
        for r in rows:
            r["gemm_peak"] = peak
    meta = {
        "N": N, "C": args.C, "dtype": "float32", "clock": args.clock, "device": str(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "gemm_peak_gflops": peak, "gemm_peak_samples": peaks,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    try:
        import e3nn

        meta["e3nn"] = e3nn.__version__
    except ImportError:
        pass
    if args.from_json:
        loaded = [json.loads(f.read_text()) for f in args.from_json]
        rows = [r for d in loaded for r in d["rows"]]
        for d in loaded:  # runs written before rows carried their peak
            for r in d["rows"]:
                r.setdefault("gemm_peak", d["meta"].get("gemm_peak_gflops"))
        meta = {**loaded[0]["meta"], "merged_from": [str(f) for f in args.from_json]}
        peak = meta.get("gemm_peak_gflops")
        N, args.C, args.clock = meta["N"], meta.get("C", args.C), meta.get("clock", "wall")
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        args.modes = list(dict.fromkeys(r["mode"] for r in rows))
        args.kinds = list(dict.fromkeys(r["kind"] for r in rows))
        cmds = loaded[0]["meta"].get("commands", [])
        meta["commands"] = [c for d in loaded for c in d["meta"].get("commands", [])] or cmds
    else:
        meta["commands"] = ["python benchmarks/tp.py " + " ".join(argv if argv is not None else sys.argv[1:])]
    tag = "tp-quick" if args.quick else "tp"
    if device.type == "cuda":
        tag += "-cuda"
    out = args.out or HERE / "results" / f"{tag}.json"
    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    png = out.with_suffix(".png")
    plot(rows, impls, png)
    clock_text = ("CPU time of the process (steadier than wall time when other jobs share the machine)"
                  if args.clock == "cpu" else "wall-clock time")
    parts = [
        f"## Tensor products ({'quick run' if args.quick else 'full sweep'}, {device.type})",
        "",
        f"N = {N:,} samples, C = {args.C} channels, float32, per-sample weights; {meta['threads']} thread(s), "
        f"{clock_text}; "
        f"torch {meta['torch']}, e3nn {meta.get('e3nn', '-')}; {meta['date']}; {meta.get('gpu', meta['machine'])}. "
        "Times in ms (median after warm-up); the ratio columns `a / b` are a's time over b's "
        "(> 1 means b is faster), measured in the same run: e3nn over every backend, cg over the other mlip backends, "
        "cuEquivariance over cg. `GEMM GFLOP/s`: the GEMM flops that a backend's transforms need by their "
        "shapes (`transform_flops`: for `grid`, the full-grid maps to and from the sphere, forward and, for "
        "f+b, once more for the backward; recomputation not counted) over the time, and in brackets their "
        "share of a 2048-cubed float32 GEMM timed in the same process: in interleaved runs that record it, "
        "the median of its two timings just before and just after the row's L (the VM's speed moves within "
        "a run), else the median of its timings over the run (at the start, before each L and at the end). "
        "The runs' medians"
        + (f": {_peaks_text(loaded if args.from_json else [{'meta': meta}])}." if peak else "."),
        "",
        "Load average (1 min) at the start and end of each run: "
        + ("; ".join(_load_text(d["meta"]) for d in loaded) if args.from_json else _load_text(meta)) + ".",
        "",
        "Reproduce: " + "; ".join(f"`{c.strip()}`" for c in meta["commands"])
        + ("; then `python benchmarks/tp.py --from-json ... --write-readme` merged them" if args.from_json else "")
        + f" (JSON: `benchmarks/results/{out.name}`, plot: `benchmarks/results/{png.name}`).",
        "",
        f"![tp benchmark](results/{png.name})",
    ]
    for note in args.note or []:
        parts += ["", note]
    for mode in args.modes:
        for kind in args.kinds:
            if not case_runs(mode, kind):
                continue
            for key, label in (("fwd", "forward"), ("fb", "forward + backward")):
                title = (f"many-body product (correlation 3) on irreps up to L, {label}" if kind == "manybody"
                         else f"channelwise, outputs up to L, stacked rows in CPU chunks (the potential's "
                              f"route), {label}" if kind == "rows"
                         else f"{mode}, outputs up to {'L' if kind == 'model' else '2L'}, {label}")
                parts += ["", f"**{title}**", "",
                          table(rows, [i for i in impls if kind not in ("manybody", "rows") or i in BACKENDS],
                                mode, kind, key, peak)]
    written = [str(out), str(png)]
    if args.write_readme:
        write_readme_section("tp" + ("-cuda" if device.type == "cuda" else ""), "\n".join(parts))
        written.append("benchmarks/README.md")
    print(f"wrote {', '.join(written)} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
