"""Chaos test for ``swap-train``: stop a small run at random moments, resume, check, compare.

    python tools/chaos_train.py --kills 10 --report chaos.json
    python tools/chaos_train.py --kills 3 --short --faces A,B      # the fast version the tests run
    python tools/chaos_train.py --kills 6 --signals SIGINT,SIGTERM,SIGKILL   # graceful stops too

A tiny CPU run (the test suite's tiny overrides, ``num_workers=0``, a checkpoint every 3 steps)
is started as a subprocess and killed with SIGKILL, cycling through three moments:

* ``step``: at a random time during a training step, after the process has written a new checkpoint;
* ``checkpoint``: while a checkpoint is being written (its ``.progressive_swap.tmp.NAME.XXXX.tmp`` file exists);
* ``growth``: right around the start of the fade-in (when the process announces it).

With ``--signals`` including ``SIGINT`` or ``SIGTERM``, those stops are interleaved: the signal is
sent at a random time during a training step; the process must finish that step, write
``last.ckpt``, print "interrupted, saved at step N" and exit 130 / 143, and the resume must start
at exactly that N. Every event reports ``steps_lost``: optimizer steps completed before the stop
that the resume does not start from, estimated from the step rate of the uninterrupted run and
the time since the newest checkpoint (0 for a graceful stop by construction when the checks pass;
at most one checkpoint interval for SIGKILL).

After every kill it checks the run directory: the newest good checkpoint loads; no checkpoint
whose write had completed was lost (so at most one checkpoint interval of work is lost);
progress never goes backwards; stage and alpha match the schedule at ``batches_done``. The run
is then resumed with ``resume=auto``. At the end the final weights are compared with an
uninterrupted run of the same command (fixed seed, one CPU thread): they must be bitwise equal.
Prints a JSON report (and writes it with ``--report``); exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from progressive_swap.train.checkpoint import CKPT_KEY, good_checkpoints, load_weights, read_training_checkpoint
from progressive_swap.train.growth import GrowthSchedule

EVERY_STEPS = 3
MODEL = [
    "model.channel_base=256",
    "model.channel_max=16",
    "model.channel_min=8",
    "model.latent_channels=8",
    "model.latent_res=8",
]
STAGES_SHORT = [
    dict(res=16, images=48, batch=4, lr=1e-3),
    dict(res=32, images=32, fade=32, batch=4, lr=1e-3),
]  # 14 batches
STAGES_LONG = [
    dict(res=16, images=160, batch=4, lr=1e-3),
    dict(res=32, images=96, fade=96, batch=4, lr=1e-3),
]  # 44 batches
KINDS = ("step", "checkpoint", "growth")
GRACEFUL = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


def _stages_arg(stages: list[dict]) -> str:
    return "schedule.stages=[" + ",".join("{" + ",".join(f"{k}:{v}" for k, v in s.items()) + "}" for s in stages) + "]"


def train_args(faces: list[str], out: Path, stages: list[dict], *extra: str) -> list[str]:
    """The ``swap-train`` arguments of the chaos run."""
    return [
        "recipe=demo",
        "schedule_seconds=null",
        "data=facesets",
        f"data.faces=[{','.join(faces)}]",
        f"out={out}",
        *MODEL,
        _stages_arg(stages),
        "data.num_workers=0",
        "preview_every=0",
        f"checkpoint.every_steps={EVERY_STEPS}",
        "augment.warp=0.03",
        *extra,
    ]


class Run:
    """One ``swap-train`` subprocess, its output collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "progressive_swap.cli.train", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.t0 = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, sig: int, timeout: float) -> int:
        """Send ``sig`` (SIGINT/SIGTERM) and wait for the graceful exit; SIGKILL after ``timeout``."""
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self.reader.join(10.0)  # the lines still in the pipe (a busy machine reads them late)
        return rc


def _step_files(run_dir: Path) -> set[int]:
    return {int(p.stem[4:]) for p in run_dir.glob("step*.ckpt")}


def _tmp_files(run_dir: Path) -> list[str]:
    try:
        return [n for n in os.listdir(run_dir) if n.startswith(".") and n.endswith(".tmp") and ".ckpt." in n]
    except FileNotFoundError:
        return []


def _kill_at(run: Run, run_dir: Path, kind: str, start: int, rng: random.Random, timeout: float) -> dict[str, Any]:
    """Wait for the trigger of ``kind`` and SIGKILL; returns what happened."""
    target = rng.choice(("last", "last", "step"))  # checkpoint kills: while writing last.ckpt or a step file
    delay = {"step": rng.uniform(0.0, 0.25), "growth": rng.uniform(0.0, 0.3)}.get(kind, 0.0)  # a step takes ~0.1-0.5 s
    armed_at: float | None = None
    max_complete = max(_step_files(run_dir), default=0)
    left_over = set(_tmp_files(run_dir))  # a previous kill's half-written file is not this run writing
    while run.proc.poll() is None:
        if time.monotonic() - run.t0 > timeout:
            run.kill()
            return {"trigger": "timeout", "max_complete_seen": max_complete}
        new = {s for s in _step_files(run_dir) if s > start}
        if kind == "checkpoint":
            tmps = [t for t in _tmp_files(run_dir) if t not in left_over]
            hit = (
                [t for t in tmps if t.startswith(".last.ckpt.")]
                if target == "last"
                else ([t for t in tmps if t.startswith(".step")] if new else [])
            )
            if hit:
                run.kill()
                return {"trigger": f"during write of {hit[0]}", "max_complete_seen": max_complete}
        elif armed_at is None and ((kind == "step" and new) or (kind == "growth" and run.saw("fading in"))):
            armed_at = time.monotonic()
        if armed_at is not None and time.monotonic() - armed_at >= delay:
            run.kill()
            what = (
                f"{delay:.2f} s after a new checkpoint" if kind == "step" else f"{delay:.2f} s after the fade-in began"
            )
            return {"trigger": what, "max_complete_seen": max(max_complete, *_step_files(run_dir), 0)}
        max_complete = max(max_complete, *_step_files(run_dir), 0)
        time.sleep(0.0005)
    return {"trigger": "finished before the kill", "rc": run.proc.returncode, "max_complete_seen": max_complete}


def _signal_at(run: Run, run_dir: Path, sig: int, start: int, rng: random.Random, timeout: float) -> dict[str, Any]:
    """Wait for a new checkpoint, then send ``sig`` at a random moment of a later step."""
    delay = rng.uniform(0.0, 0.4)
    armed_at: float | None = None
    while run.proc.poll() is None:
        if time.monotonic() - run.t0 > timeout:
            run.kill()
            return {"trigger": "timeout", "max_complete_seen": max(_step_files(run_dir), default=0)}
        if armed_at is None and {s for s in _step_files(run_dir) if s > start}:
            armed_at = time.monotonic()
        if armed_at is not None and time.monotonic() - armed_at >= delay:
            seen = max(_step_files(run_dir), default=0)
            t_sig = time.time()
            rc = run.stop(sig, timeout)
            m = re.search(r"interrupted, saved at step (\d+)", "\n".join(run.lines))
            return {
                "trigger": f"{signal.Signals(sig).name} {delay:.2f} s after a new checkpoint",
                "rc": rc,
                "expected_rc": 128 + int(sig),
                "saved_at": int(m.group(1)) if m else None,
                "signal_time": t_sig,
                "max_complete_seen": seen,
            }
        time.sleep(0.0005)
    return {"trigger": "finished before the kill", "rc": run.proc.returncode, "max_complete_seen": 0}


def _steps_before(run_dir: Path, t: float, step_s: float) -> int:
    """Optimizer steps the process had completed at time ``t``: the newest checkpoint written
    before ``t`` plus whole steps since (at the uninterrupted run's mean step time)."""
    written = sorted(((p.stat().st_mtime, p) for p in run_dir.glob("*.ckpt")), reverse=True)
    for mtime, p in written:  # the newest readable checkpoint written before t
        if mtime > t:
            continue
        try:
            n = int(read_training_checkpoint(p)[CKPT_KEY]["batches_done"])
        except Exception:  # noqa: BLE001 - a damaged file counts for nothing
            continue
        return n + int((t - mtime) / step_s)
    return 0


def check_run_dir(run_dir: Path, schedule: GrowthSchedule, previous: int, max_complete: int) -> dict[str, Any]:
    """The state a resume would start from, and whether it is consistent."""
    warnings: list[str] = []
    found = good_checkpoints(run_dir, warn=warnings.append)
    if not found:
        return {"ok": previous == 0 and max_complete == 0, "batches_done": 0, "checkpoint": None, "warnings": warnings}
    batches, path = found[0]
    ckpt = read_training_checkpoint(path)  # the full load must work, not only the peek
    info = ckpt[CKPT_KEY]
    pos = schedule.at(batches - 1)
    alpha = pos.alpha if pos.res > schedule.start_res else 1.0
    checks = {
        "loads": True,
        "never_backwards": batches >= previous,
        "no_completed_checkpoint_lost": batches >= max_complete,
        "global_step_matches": int(ckpt["global_step"]) == batches,
        "stage_matches": int(info["stage_res"]) == pos.res,
        "alpha_matches": abs(float(info["alpha"]) - alpha) < 1e-9,
        "last_ckpt_loads": not (run_dir / "last.ckpt").exists() or any(p.name == "last.ckpt" for _, p in found),
    }
    return {
        "ok": all(checks.values()),
        "batches_done": batches,
        "checkpoint": path.name,
        "stage_res": info["stage_res"],
        "alpha": info["alpha"],
        "checks": checks,
        "warnings": warnings,
    }


def _late_signal(how: str, kill: dict) -> bool:
    """A graceful signal that arrived after the last step (the run had finished its work and was
    shutting down): exit 0, the signal's exit code, or death by the signal are all fine then."""
    expected = kill.get("expected_rc")
    return (how in GRACEFUL and kill.get("trigger") == "finished before the kill" and expected is not None
            and kill.get("rc") in (0, expected, 128 - expected))


def chaos(
    faces: list[str],
    work: Path,
    kills: int = 10,
    short: bool = False,
    seed: int = 0,
    timeout: float = 300.0,
    log=print,
    signals: tuple[str, ...] = ("SIGKILL",),
) -> dict[str, Any]:
    """Run the chaos test; returns the report (``report["ok"]`` says whether every check passed)."""
    t_start = time.monotonic()
    rng = random.Random(seed)
    stages = STAGES_SHORT if short else STAGES_LONG
    schedule = GrowthSchedule(stages, identities=len(faces))
    fade_end = next(p.end_batch for p in schedule.phases if p.fading)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "400",
        "PROGRESSIVE_SWAP_CACHE": str(work / "cache"),
    }
    ref_dir, run_dir = work / "reference", work / "chaos"

    log(f"reference run ({schedule.total_batches} batches) ...")
    ref = Run(train_args(faces, ref_dir, stages), env)
    ref_rc = ref.wait(timeout)
    ref_s = time.monotonic() - ref.t0
    step_s = ref_s / schedule.total_batches  # start-up included: errs towards fewer steps, i.e. less loss
    report: dict[str, Any] = {
        "kills_planned": kills,
        "total_batches": schedule.total_batches,
        "every_steps": EVERY_STEPS,
        "reference_rc": ref_rc,
        "events": [],
    }
    if ref_rc != 0:
        report.update(ok=False, error="reference run failed", output=ref.lines[-20:])
        return report

    resume_point, ok, previous_ckpt = 0, True, None
    for i in range(kills):
        how = signals[i % len(signals)]
        kind = KINDS[(i // len(signals)) % len(KINDS)] if how == "SIGKILL" else how.lower()
        if kind == "growth" and resume_point >= fade_end:
            kind = "step"  # the fade is behind us
        run = Run(train_args(faces, run_dir, stages, "resume=auto"), env)
        t_before = time.time()
        if how in GRACEFUL:
            kill = _signal_at(run, run_dir, GRACEFUL[how], resume_point, rng, timeout)
        else:
            kill = _kill_at(run, run_dir, kind, resume_point, rng, timeout)
            t_before = time.time()
        run.reader.join(10.0)  # every line the process wrote, before reading what it said
        stale = _tmp_files(run_dir)
        state = check_run_dir(run_dir, schedule, resume_point, kill["max_complete_seen"])
        m = re.search(r"\(resuming (.+?\.ckpt)\)", "".join(run.lines))
        resumed_from = m.group(1) if m else None
        event = {
            "kill": i + 1,
            "kind": kind,
            **kill,
            "seconds": round(time.monotonic() - run.t0, 1),
            "resumed_from": resumed_from,
            "stale_tmp_files": stale,
            **state,
        }
        if previous_ckpt is not None and not str(resumed_from or "").endswith(previous_ckpt):
            event["ok"] = False  # the process did not start from the checkpoint the last check found
        previous_ckpt = state["checkpoint"]
        t_stop = kill.pop("signal_time", t_before)
        event["steps_lost"] = max(0, _steps_before(run_dir, t_stop, step_s) - state["batches_done"])
        if how in GRACEFUL and kill.get("saved_at") is None and state["batches_done"] == schedule.total_batches:
            kill["trigger"] = "finished before the kill"  # the signal came after the last step: nothing to save
            event["trigger"] = kill["trigger"]
            event["steps_lost"] = 0
        if how in GRACEFUL and kill["trigger"] != "finished before the kill":
            graceful_ok = (
                kill.get("rc") == kill.get("expected_rc")
                and kill.get("saved_at") == state["batches_done"]
                and state.get("checkpoint") == "last.ckpt"
                and not stale
            )
            if not graceful_ok:
                event["ok"] = False
                event["output"] = run.lines[-10:]
        elif "rc" in kill and kill["rc"] != 0 and not _late_signal(how, kill):
            event["ok"] = False
            event["output"] = run.lines[-10:]
        ok &= bool(event["ok"])
        report["events"].append(event)
        log(
            f"kill {i + 1}/{kills} ({kind}, {kill['trigger']}): resume at batch {state['batches_done']} "
            f"from {state['checkpoint']}, {'ok' if event['ok'] else 'FAILED'}"
        )
        resume_point = state["batches_done"]
        if kill["trigger"] == "finished before the kill":
            break

    final = Run(train_args(faces, run_dir, stages, "resume=auto"), env)
    final_rc = final.wait(timeout)
    result: dict[str, Any] = {"rc": final_rc, "stale_tmp_files": _tmp_files(run_dir)}
    if final_rc == 0:
        a, b = load_weights(ref_dir / "last.ckpt"), load_weights(run_dir / "last.ckpt")
        diff = (
            max(float((a[k].double() - b[k].double()).abs().max()) for k in a) if a.keys() == b.keys() else float("inf")
        )
        end = read_training_checkpoint(run_dir / "last.ckpt")[CKPT_KEY]
        result.update(
            same_keys=a.keys() == b.keys(),
            max_abs_diff=diff,
            bitwise_equal=a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
            batches_done=end["batches_done"],
            safetensors_equal=_same(ref_dir / "model.safetensors", run_dir / "model.safetensors"),
        )
    else:
        result["output"] = final.lines[-20:]
    result["ok"] = (
        final_rc == 0
        and bool(result.get("bitwise_equal"))
        and not result["stale_tmp_files"]
        and result.get("batches_done") == schedule.total_batches
    )
    report["final"] = result
    report["kills_done"] = len(report["events"])
    report["step_seconds"] = round(step_s, 3)
    report["steps_lost"] = {
        how: [e["steps_lost"] for e in report["events"] if e["trigger"].startswith(how) or (
            how == "SIGKILL" and not any(e["trigger"].startswith(g) for g in GRACEFUL))]
        for how in signals
    }
    report["ok"] = ok and result["ok"]
    report["seconds"] = round(time.monotonic() - t_start, 1)
    log(
        f"final: rc {final_rc}, bitwise equal to the uninterrupted run: {result.get('bitwise_equal')} "
        f"(max |diff| {result.get('max_abs_diff')})"
    )
    return report


def _same(a: Path, b: Path) -> bool:
    x, y = load_weights(a), load_weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--short", action="store_true", help="the 14-batch schedule (fewer kills fit)")
    ap.add_argument("--faces", default="", help="two face sets A,B (default: a small phantom set)")
    ap.add_argument("--work", default="", help="working directory (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--report", default="", help="write the JSON report here too")
    ap.add_argument("--signals", default="SIGKILL", help="stops to cycle through: SIGKILL,SIGINT,SIGTERM")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        faces = args.faces.split(",") if args.faces else None
        if faces is None:
            from progressive_swap.phantom.dataset import generate_phantom_dataset

            faces = generate_phantom_dataset(
                out=work / "phantom", identities=2, faces=16, size=32, videos=0, progress=False
            )["faces"]
        report = chaos(
            [str(f) for f in faces],
            work,
            kills=args.kills,
            short=args.short,
            seed=args.seed,
            log=lambda m: print(m, file=sys.stderr),
            signals=tuple(s.strip().upper() for s in args.signals.split(",") if s.strip()),
        )
    text = json.dumps(report, indent=1)
    print(text)
    if args.report:
        from progressive_swap.core.io import atomic_write_text

        atomic_write_text(Path(args.report), text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
