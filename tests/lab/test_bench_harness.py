"""CI's smoke of the benchmark harness: two hosts, one run. It asserts that the harness
works and writes its results, never anything about time."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO


def test_the_benchmark_harness_runs_and_writes_its_results(lab, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench"), "--sizes", "2", "--runs", "1",
                           "--out", str(tmp_path), "--no-plot"], env=lab.env, text=True, capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    row = results["sizes"]["2"]
    assert len(row["loop"]) == len(row["nixtasks"]) == 1 and row["stages_median"]["activation"] > 0
    assert row["loop_cpu_median"] > 0 and row["nixtasks_cpu_median"] > 0  # the machine's CPU per deploy
    assert results["evaluations_per_deploy"] == 1 and results["ssh_connections_per_host"] >= 1
    assert "| 2 |" in (tmp_path / "latest.md").read_text()
