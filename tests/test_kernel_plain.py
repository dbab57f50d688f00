"""The kernel's source run as plain Python (``NUMBA_DISABLE_JIT=1``, the debugging path) writes the same tables as
``Engine.tick`` too; and a changed rule can never run an old compiled kernel (the cache folder is keyed by a hash
of every source file the kernel compiles from)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _child(args: list[str], env: dict[str, str], cwd: Path = ROOT, *, stderr: list[str] | None = None) -> str:
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(cwd), **env})
    assert out.returncode == 0, out.stderr[-3000:]
    if stderr is not None:
        stderr.append(out.stderr)
    return out.stdout


@pytest.mark.parametrize(("seed", "name"), [(2, "default"), (5, "fees")])
def test_plain_python_kernel_writes_every_table_as_engine_tick(seed, name):
    got = _child(["tests/kernel_parity.py", str(seed), name, "1"], {"NUMBA_DISABLE_JIT": "1"})
    assert got.strip().splitlines()[-1] == "{}"


def test_the_cache_folder_follows_every_source_file(tmp_path):
    from core.research import kernel

    assert kernel.CACHE_DIR.name == kernel.source_hash()
    copies = []
    for f in kernel.SOURCES:
        c = tmp_path / f.name
        shutil.copy(f, c)
        copies.append(c)
    before = kernel.source_hash(tuple(copies))
    copies[1].write_text(copies[1].read_text() + "\n# a comment changes the hash too\n")  # rules/gates.py
    assert kernel.source_hash(tuple(copies)) != before
    assert any(f.name == "gates.py" for f in kernel.SOURCES) and any(f.name == "risk.py" for f in kernel.SOURCES)


CHILD = """
from datetime import date
from core.config import load_settings
from core.research.replay import run_replay
for path in ("kernel", "reference"):
    r = run_replay(load_settings(auto_mode=True), days=1, seed=3, start=date(2025, 3, 4), db_path=":memory:",
                   path=path)
    print(path, r.stats["suppressed"].get("below_cutoff", 0), r.stats["actionable"])
"""


def test_a_changed_rule_recompiles_the_kernel(tmp_path):
    """A copy of the project with one rule changed, sharing the compiled cache with this one: its kernel gives the
    changed rule's result (its own reference path's), not the cached kernel's."""
    from core.research import kernel

    cache = tmp_path / "cache"
    env = {"KERNEL_CACHE_DIR": str(cache)}
    # this project's kernel is compiled already (conftest): a copy of its folder spares the test a cold compile
    if kernel.CACHE_DIR.exists():
        shutil.copytree(kernel.CACHE_DIR, cache / kernel.CACHE_DIR.name)
    original = _child(["-c", CHILD], env).split("\n")
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "core", copy / "core", ignore=shutil.ignore_patterns("__pycache__"))
    gates = copy / "core" / "rules" / "gates.py"
    text = gates.read_text()
    assert "return OK if abs(score) >= cutoff else BELOW_CUTOFF" in text
    gates.write_text(text.replace("return OK if abs(score) >= cutoff else BELOW_CUTOFF",
                                  "return OK if abs(score) >= cutoff + 0.05 else BELOW_CUTOFF"))
    # the first run of the changed copy compiles its kernel, and the CLI says so
    said: list[str] = []
    _child(["-m", "core.research", "--days", "1", "--seed", "3", "--start", "2025-03-04", "--auto", "--json"],
           env, cwd=copy, stderr=said)
    assert "preparing the research engine (first run after install" in said[0] and "ready in" in said[0]
    changed = _child(["-c", CHILD], env, cwd=copy).split("\n")
    assert len(list(cache.iterdir())) == 2  # one compiled kernel per source hash
    k0, r0 = original[0].split(), original[1].split()
    k1, r1 = changed[0].split(), changed[1].split()
    assert k0[1:] == r0[1:] and k1[1:] == r1[1:]  # each copy's kernel agrees with its own Engine.tick
    assert int(k1[1]) > int(k0[1])  # the raised cutoff suppressed more: the changed rule ran
