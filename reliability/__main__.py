"""``python -m reliability`` (``make reliability``): launches under faults, the canary
sweep, residue, fuzzing; a table on stdout and ``benchmarks/reliability.json``.

Exit status 0 when every target is met: no launch hung, ended unclearly or other than
its fault allows; no canary leaked; no residue; no fuzzing crash; and, in a full run, at
least 500 launches, at least 20% of them under an injected fault, and at least 100,000
inputs per parser. ``--quick`` (the part ``make test`` runs) checks the same on a few
launches of each kind and a few hundred inputs per parser.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import executor, sweep
from .launches import FAULTS, IMAGE_FAULTS, Lab, Launched, Outcome, execute, prepare, recover

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "reliability.json"
RESULTS = ("succeeded", "failed_clearly", "failed_unclearly", "hung")
KINDS = ("app", "pod")
#: The front ends and stores of launches made at once (``executor``: the executor).
CONCURRENT_STORES = ("local", "vault", "agent", "executor")

#: Full-run targets.
MIN_LAUNCHES = 500
MIN_FAULTED = 0.20
MIN_FUZZ_INPUTS = 100_000


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def schedule(repeats: int, baseline: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(fault, store, kind) for every launch made one at a time, shuffled."""
    plan = []
    for fault, stores in _faults().items():
        times = baseline if fault == "none" else repeats
        plan += [(fault, store, kind) for store in stores for kind in _kinds(fault, store)] * times
    rng.shuffle(plan)
    return plan


def _kinds(fault: str, store: str) -> tuple[str, ...]:
    """An app, a pod, and for some faults an app in a private image."""
    images = executor.IMAGE_FAULTS if store == "executor" else IMAGE_FAULTS
    return (*KINDS, "image") if fault in images else KINDS


def _faults() -> dict[str, tuple[str, ...]]:
    """fault -> the front ends and stores it applies to (``executor``: the executor)."""
    faults = {fault: stores for fault, (stores, _) in FAULTS.items()}
    for fault in executor.FAULTS:
        faults[fault] = (*faults.get(fault, ()), "executor")
    return faults


def quick_schedule(rng: random.Random) -> list[tuple[str, str, str]]:
    """Each fault once, from one of its stores, as an app, a pod or an image; and one
    launch from a private image."""
    plan = []
    for fault, stores in _faults().items():
        store = rng.choice(stores)
        plan.append((fault, store, rng.choice(_kinds(fault, store))))
    return [*plan, ("none", rng.choice(("local", "vault", "agent")), "image")]


class Run:
    """One run of the suite: its lab, what it found, its progress lines."""

    def __init__(self, lab: Lab, rng: random.Random) -> None:
        self.lab = lab
        self.rng = rng
        self.outcomes: list[Outcome] = []
        self.canaries: set[str] = set()
        self.problems: list[str] = []
        self.recovery_failures = 0

    def _keep(self, launched: Launched, leaks: list[str], residue: list[str]) -> None:
        outcome = launched.outcome
        outcome.leaks, outcome.residue = leaks, residue
        self.outcomes.append(outcome)
        self.canaries.update(launched.canaries)
        where = f"{outcome.fault}/{outcome.store}/{outcome.kind}"
        if not outcome.expected:
            self.problems.append(f"{where}: {outcome.result}: {outcome.detail}")
        self.problems += [f"{where}: leaked to {leak}" for leak in leaks]
        self.problems += [f"{where}: left {thing}" for thing in residue]

    def one(self, fault: str, store: str, kind: str) -> Outcome:
        before = sweep.baseline(self.lab)
        if store == "executor":
            launched = executor.executor_launch(self.lab, kind, fault, self.rng)
        else:
            launched = execute(self.lab, prepare(self.lab, kind, store, fault, self.rng), self.rng)
        if fault in ("run-killed", "executor-killed"):
            # The next front end on the node cleans up what the killed one left.
            if fault == "run-killed":
                recovery = recover(self.lab)
            else:
                recovery = executor.restart(self.lab, image=kind == "image")
            if recovery.exit_status != 0:
                self.recovery_failures += 1
                self.problems.append(f"recovery after {fault}: {recovery.detail}")
        leaks, residue = sweep.check(self.lab, launched, before)
        self._keep(launched, leaks, residue)
        return launched.outcome

    def concurrent(self, count: int) -> list[Outcome]:
        """``count`` launches at once on the one runtime directory and image store: apps,
        pods and apps in a private image (one in five, pulled at once), through ``run``
        from every store and through executors."""
        plan = [
            (CONCURRENT_STORES[i % len(CONCURRENT_STORES)], "image" if i % 5 == 4 else kind)
            for i, kind in enumerate(self.rng.choice(KINDS) for _ in range(count))
        ]
        for image in (False, True):  # the executors' configuration, written before any reads it
            executor.prepare_lab(self.lab, image=image)
        shutil.rmtree(self.lab.directory / "images", ignore_errors=True)
        before = sweep.baseline(self.lab)
        prepared = [
            None if store == "executor" else prepare(self.lab, kind, store, "none", self.rng)
            for store, kind in plan
        ]
        seeds = [self.rng.getrandbits(32) for _ in plan]

        def one(index: int) -> Launched:
            rng = random.Random(seeds[index])
            ready = prepared[index]
            if ready is None:
                kind = plan[index][1]
                return executor.executor_launch(self.lab, kind, "none", rng, fresh_pull=False)
            return execute(self.lab, ready, rng, fresh_pull=False)

        with ThreadPoolExecutor(max_workers=count) as pool:
            launched = list(pool.map(one, range(count)))
        for index, one in enumerate(launched):
            # The batch's residue once, charged to its first launch (all ran at once).
            leaks, residue = sweep.check(self.lab, one, before, residue_too=index == 0)
            one.outcome.fault = "concurrent"
            self._keep(one, leaks, residue)
        return [one.outcome for one in launched]


def fuzz_all(inputs: int, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from . import fuzz  # noqa: PLC0415 (Hypothesis is only needed here)

    results = {}
    for parser in fuzz.PARSERS:
        result = fuzz.fuzz(parser, inputs, seed=seed, progress=progress)
        results[parser] = {
            "inputs": result.inputs,
            "crashes": result.crashes,
            "seconds": round(result.seconds, 1),
            "examples": result.examples,
        }
        progress(f"fuzz {parser}: {result.inputs} inputs, {result.crashes} crashes")
    return results


def summarize(
    outcomes: list[Outcome], fuzzed: dict[str, Any], leaked: int, recovery_failures: int
) -> dict[str, Any]:
    counts = {result: sum(1 for o in outcomes if o.result == result) for result in RESULTS}
    return {
        "launches": len(outcomes),
        # Under a fault that was applied (one that strikes while the launch runs may
        # find it over already).
        "faulted": sum(1 for o in outcomes if o.fault not in ("none", "concurrent") and o.injected),
        "fault_missed": sum(
            1 for o in outcomes if o.fault not in ("none", "concurrent") and not o.injected
        ),
        "succeeded": counts["succeeded"],
        "failed_clearly": counts["failed_clearly"],
        "failed_unclearly": counts["failed_unclearly"],
        "hung": counts["hung"],
        "unexpected": sum(1 for o in outcomes if not o.expected),
        "leaked_canaries": sum(1 for o in outcomes if o.leaks) + leaked,
        "residue": sum(1 for o in outcomes if o.residue),
        "recovery_failures": recovery_failures,
        "fuzz_inputs": sum(f["inputs"] for f in fuzzed.values()),
        "fuzz_crashes": sum(f["crashes"] for f in fuzzed.values()),
    }


def by_fault(outcomes: list[Outcome]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for fault in dict.fromkeys(o.fault for o in outcomes):
        mine = [o for o in outcomes if o.fault == fault]
        seconds = [o.seconds for o in mine]
        figures[fault] = {
            "launches": len(mine),
            **{result: sum(1 for o in mine if o.result == result) for result in RESULTS},
            "unexpected": sum(1 for o in mine if not o.expected),
            "fault_missed": sum(1 for o in mine if not o.injected),
            "leaks": sum(len(o.leaks) for o in mine),
            "residue": sum(len(o.residue) for o in mine),
            "stores": sorted({o.store for o in mine}),
            "seconds": {
                "median": round(statistics.median(seconds), 3),
                "max": round(max(seconds), 3),
            },
        }
    return figures


def targets(summary: dict[str, Any], fuzzed: dict[str, Any], *, full: bool) -> list[dict[str, Any]]:
    rows = [
        ("hung launches", summary["hung"], "0", summary["hung"] == 0),
        (
            "launches that ended unclearly",
            summary["failed_unclearly"],
            "0",
            summary["failed_unclearly"] == 0,
        ),
        (
            "launches that ended other than their fault allows",
            summary["unexpected"],
            "0",
            summary["unexpected"] == 0,
        ),
        ("leaked canaries", summary["leaked_canaries"], "0", summary["leaked_canaries"] == 0),
        ("launches with residue", summary["residue"], "0", summary["residue"] == 0),
        (
            "recoveries that failed",
            summary["recovery_failures"],
            "0",
            summary["recovery_failures"] == 0,
        ),
        ("fuzz crashes", summary["fuzz_crashes"], "0", summary["fuzz_crashes"] == 0),
    ]
    if full:
        share = summary["faulted"] / summary["launches"] if summary["launches"] else 0.0
        fewest = min((f["inputs"] for f in fuzzed.values()), default=0)
        rows += [
            (
                "launches",
                summary["launches"],
                f">= {MIN_LAUNCHES}",
                summary["launches"] >= MIN_LAUNCHES,
            ),
            (
                "share under injected faults",
                round(share, 3),
                f">= {MIN_FAULTED}",
                share >= MIN_FAULTED,
            ),
            (
                "fuzz inputs, fewest of any parser",
                fewest,
                f">= {MIN_FUZZ_INPUTS}",
                fewest >= MIN_FUZZ_INPUTS,
            ),
        ]
    return [{"what": w, "value": v, "goal": g, "met": m} for w, v, g, m in rows]


def table(results: dict[str, Any]) -> str:
    lines = [
        "| fault | launches | succeeded | failed clearly | unclearly | hung | unexpected "
        "| leaks | residue | median s | max s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fault, f in results["faults"].items():
        lines.append(
            f"| {fault} | {f['launches']} | {f['succeeded']} | {f['failed_clearly']} "
            f"| {f['failed_unclearly']} | {f['hung']} | {f['unexpected']} | {f['leaks']} "
            f"| {f['residue']} | {f['seconds']['median']:g} | {f['seconds']['max']:g} |"
        )
    if results["fuzz"]:
        lines += ["", "| parser | inputs | crashes | seconds |", "|---|---:|---:|---:|"]
        for parser, f in results["fuzz"].items():
            lines.append(f"| {parser} | {f['inputs']} | {f['crashes']} | {f['seconds']:g} |")
    lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
    for t in results["targets"]:
        lines.append(
            f"| {t['what']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reliability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few launches, a few hundred fuzz inputs (make test)"
    )
    parser.add_argument(
        "--repeats", type=int, default=8, help="launches per fault, store and kind (default 8)"
    )
    parser.add_argument(
        "--baseline",
        type=int,
        default=40,
        help="launches per store and kind without a fault (default 40)",
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=50,
        help="launches at once on one runtime directory (default 50)",
    )
    parser.add_argument(
        "--fuzz-inputs",
        type=int,
        default=MIN_FUZZ_INPUTS,
        help="inputs per parser (default 100000; 0: no fuzzing)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the random seed (default: a new one, printed)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=OUTPUT,
        help="where the JSON goes (default benchmarks/reliability.json)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        _print("reliability: needs root (containers, mounts, namespaces), as the tests do")
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    if args.quick:
        plan, concurrent, inputs = quick_schedule(rng), 5, min(args.fuzz_inputs, 300)
    else:
        plan, concurrent, inputs = (
            schedule(args.repeats, args.baseline, rng),
            args.concurrent,
            args.fuzz_inputs,
        )
    _print(
        f"reliability: seed {seed}; {len(plan)} launches one at a time, {concurrent} at once, "
        f"{inputs} fuzz inputs per parser"
    )
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="mesos-secrets-reliability-", dir="/var/tmp"))
    try:
        with Lab(directory / "lab", deadline=2.0 if args.quick else None) as lab:
            run = Run(lab, rng)
            for number, (fault, store, kind) in enumerate(plan, 1):
                outcome = run.one(fault, store, kind)
                _print(
                    f"[{number}/{len(plan)}] {fault} {store} {kind}: {outcome.result} "
                    f"({outcome.seconds:.2f} s){'' if outcome.expected else ' UNEXPECTED'}"
                )
            if concurrent:
                outcomes = run.concurrent(concurrent)
                done = sum(1 for o in outcomes if o.result == "succeeded")
                _print(f"{concurrent} at once: {done} succeeded")
            leaked = sweep.canaries_in_files([directory])
            stray = {
                path: values
                for path, values in leaked.items()
                if {v.decode() for v in values} & run.canaries
            }
            run.problems += [f"final sweep: canary in {path}" for path in stray]
        fuzzed = fuzz_all(inputs, seed, _print) if inputs else {}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    summary = summarize(run.outcomes, fuzzed, len(stray), run.recovery_failures)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
        },
        "seed": seed,
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "faults": by_fault(run.outcomes),
        "fuzz": fuzzed,
        "problems": run.problems[:100],
    }
    results["targets"] = targets(summary, fuzzed, full=not args.quick)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        args.output.unlink()
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results), end="")
    for problem in run.problems[:20]:
        _print(f"problem: {problem}")
    return 0 if all(t["met"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
