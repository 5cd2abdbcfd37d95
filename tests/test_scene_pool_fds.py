"""The demo's scene pool keeps no file descriptor per tensor it received from its render workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCRIPT = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (96, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from fourds.demo.scenes import render_pool
pool = render_pool(sys.argv[1], split_seed=3, count=24, frames=4, size=32, num_tracks=4, chunk=24, workers=2)
print(len(pool))
"""


def test_pool_rendered_by_workers_survives_a_low_open_file_limit(tmp_path):
    # 24 scenes x ~10 tensors kept alive: without the copy out of shared memory each one holds a file
    # descriptor and the process fails with "Too many open files" far below 96.
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "pool")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "24"
