"""A normal (non-editable) install carries every subpackage and the recipes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_finds_recipes_from_any_directory(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (target / "progressive_swap" / "recipes" / "recipe" / "1024.yaml").is_file()
    code = (
        "import progressive_swap, progressive_swap.cli.config as c;"
        "print(progressive_swap.__file__); print(c.recipes_dir());"
        "from progressive_swap.cli import train; raise SystemExit(train.main(['recipe=1024', '--cfg', 'job']))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1] == str(target / "progressive_swap" / "recipes")
    assert "res: 1024" in r.stdout
