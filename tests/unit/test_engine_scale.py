"""benchmarks/engine-scale, small: it runs the engine over fake hosts, every host ends ok, and
its results have what `make bench` reports (no timing is asserted, only that it is there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine-scale"
MEASURED = ("wall_s", "ideal_s", "wall_over_ideal", "cpu_s", "cpu_per_host_ms", "engine_cpu_per_host_ms",
            "harness_cpu_s", "children_cpu_s", "peak_rss_mib", "peak_traced_mib", "baseline_rss_mib")
PHASES = ["probes", "checks and copies", "plan and approval", "activations", "report"]


def test_the_engine_scale_benchmark_deploys_every_fake_host_and_writes_its_results(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "10,30", "--latency", "1", "--activation", "0",
                          "--out", str(tmp_path), "--no-plot"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "engine-scale.json").read_text())
    assert (results["latency_ms"], results["activation_s"], results["parallel"]) == (1.0, 0.0, 100)
    rows = results["sizes"]
    assert [r["hosts"] for r in rows] == [10, 30]
    for row in rows:
        assert row["outcomes"] == {"ok": row["hosts"]} and row["failure"] == ""
        assert all(isinstance(row[key], (int, float)) for key in MEASURED)
        assert list(row["phases_s"]) == PHASES
        trips = row["round_trips_per_host"]
        assert isinstance(trips, int) and 0 < row["round_trips_before_lock"] < trips
        assert row["waves"] == 1 and row["ideal_s"] == round(trips * 0.001, 3)  # no activation time
    assert list(results["targets"]) == ["engine CPU per host at 1,000 hosts (ms)", "peak memory at 1,000 hosts (MiB)",
                                        "wall / ideal at 1,000 hosts"]
    table = (tmp_path / "engine-scale.md").read_text()
    assert "| 30 | 1 |" in table and "30 ok |" in table
    assert not (tmp_path / "engine-scale.png").exists()  # --no-plot
