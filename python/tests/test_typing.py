"""The stubs: a program using every public method of Cache and AsyncCache
passes `mypy --strict`, and runs."""

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).parent / "typing_sample.py"


def test_sample_passes_mypy_strict(tmp_path):
    pytest.importorskip("mypy")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "mypy"), str(SAMPLE)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_sees_types_not_any(tmp_path):
    """A wrong use is an error: the stubs are read (without them the
    extension is Any and this passes)."""
    pytest.importorskip("mypy")
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import unicache_rs\n"
        "c = unicache_rs.Cache('memory://')\n"
        "n: str = c.incr('k')\n"
        "async def f(a: unicache_rs.AsyncCache) -> None:\n"
        "    x: int = await a.get('k')\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "mypy"), str(bad)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad.py:3" in r.stdout and "bad.py:5" in r.stdout, r.stdout


def test_sample_runs_on_every_backend(cache_url):
    r = subprocess.run([sys.executable, str(SAMPLE), cache_url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
