"""A run killed with SIGKILL leaves nothing running: loader workers and the forkserver go with it.

Each run is started with a marker in its environment, which every process it starts inherits;
the processes of a run are found by that marker (``/proc/*/environ``), not by name.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from progressive_swap.phantom.dataset import generate_phantom_dataset

MARK = "PROGRESSIVE_SWAP_TEST_MARK"
GONE_WITHIN_S = 10.0  # the limit for "nothing left"
PROMPT_S = 3.0  # "within a few seconds": the loader's own 5 s liveness check is not enough

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")


def _marked(mark: str) -> dict[int, int]:
    """``pid: parent pid`` of every live process whose environment carries ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                continue
            state, ppid = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):  # exited meanwhile, or not ours to read
            continue
        if state != "Z":  # a zombie has exited already; it only waits to be reaped
            found[int(name)] = int(ppid)
    return found


def _kill_run_and_count_leftovers(cmd: list[str], cwd: Path, depth: int,
                                  ready: Callable[[], bool] = lambda: True) -> tuple[float, dict[int, int]]:
    """Start ``cmd``, wait for its loader workers, SIGKILL it; returns (seconds until all gone, leftovers).

    Args:
        depth: how many generations below the main process a loader worker is (1: forked by it;
            2: started by a forkserver that it started).
        ready: true once the workers have delivered batches, i.e. finished starting up.
    """
    mark = uuid.uuid4().hex
    log = cwd / "run.log"
    env = {**os.environ, MARK: mark, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            found = _marked(mark)
            generation = {proc.pid}
            for _ in range(depth):
                generation = {p for p, pp in found.items() if pp in generation}
            if generation and ready():
                break
            assert proc.poll() is None, f"the run ended before its loader workers showed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no working loader workers after 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        time.sleep(1.0)  # mid-run: workers busy, queues full
        assert proc.poll() is None, log.read_text()[-3000:]
        helpers = set(_marked(mark)) - {proc.pid}
        proc.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        proc.wait()
        while _marked(mark) and time.monotonic() - t0 < GONE_WITHIN_S:
            time.sleep(0.05)
        seconds, left = time.monotonic() - t0, _marked(mark)
        print(f"{len(helpers)} helper processes ({depth} generations deep workers) gone {seconds:.2f} s after SIGKILL"
              if not left else f"{len(left)} of {len(helpers)} helper processes still alive after {seconds:.1f} s")
        return seconds, left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _marked(mark):  # a failed run must not leave its orphans to the rest of the suite
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_swap_train_killed_leaves_no_loader_worker_or_forkserver(blob_sets, tmp_path):
    model = ["model.channel_base=256", "model.channel_max=16", "model.channel_min=8",
             "model.latent_channels=8"]
    cmd = [sys.executable, "-m", "progressive_swap.cli.train", "recipe=demo", "data=facesets",
           f"data.faces=[{blob_sets[0]},{blob_sets[1]}]", f"out={tmp_path / 'run'}", *model,
           "schedule.stages=[{res:16,images:400000,batch:4,lr:1e-3}]", "data.num_workers=1", "preview_every=0",
           "checkpoint.every_steps=2"]

    def ready() -> bool:  # a checkpoint: the worker has made batches
        return any((tmp_path / "run").glob("*.ckpt"))

    seconds, left = _kill_run_and_count_leftovers(cmd, tmp_path, depth=2, ready=ready)  # workers: the forkserver's
    assert not left, f"processes of the killed run still alive after {GONE_WITHIN_S:.0f} s: {left}"
    assert seconds < PROMPT_S, f"the helpers took {seconds:.1f} s to go"


def test_swap_mask_train_killed_leaves_no_loader_worker(tmp_path):
    faces = generate_phantom_dataset(tmp_path / "phantom", identities=1, faces=8, size=64, videos=0, occluders=0.5,
                                     seed=3, progress=False)["faces"]
    cmd = [sys.executable, "-m", "progressive_swap.cli.mask", "train", faces[0], f"out={tmp_path / 'm.safetensors'}",
           "size=32", "steps=100000", "batch=2", "workers=2", "threads=1", "encoder=tu-mobilenetv3_small_100",
           "context_channels=16", "fuse_channels=16", "aux_channels=8"]
    seconds, left = _kill_run_and_count_leftovers(cmd, tmp_path, depth=1)
    assert not left, f"processes of the killed run still alive after {GONE_WITHIN_S:.0f} s: {left}"
    assert seconds < PROMPT_S, f"the helpers took {seconds:.1f} s to go"


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_exit_with_ends_this_process_when_the_watched_one_dies(pidfd):
    """The watchdog alone, on a process that is not the parent, left a zombie (nobody reaps it)."""
    if pidfd and not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd on this system")
    lines = [
        "import os, subprocess, sys, time",
        "from progressive_swap.core import procs",
        "" if pidfd else "del os.pidfd_open  # as on a system without pidfd",
        "watched = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])",
        "print(watched.pid, flush=True)",
        "procs.exit_with(watched.pid)",
        "time.sleep(60)",
    ]
    code = "\n".join(lines)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        watched = int(proc.stdout.readline())
        time.sleep(0.3)
        assert proc.poll() is None
        os.kill(watched, signal.SIGKILL)
        t0 = time.monotonic()
        rc = proc.wait(timeout=5)
        print(f"watchdog ({'pidfd' if pidfd else 'polling'}) ended the process {time.monotonic() - t0:.2f} s "
              "after the watched one died")
        assert rc == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
