"""CI's smoke of the benchmark harness: both profiles, two hosts, one run. It asserts that the
harness works, measures what it says and writes its results, never anything about time."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO, labctl


def test_the_benchmark_harness_runs_both_profiles_and_writes_their_results(lab, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench"), "--sizes", "2", "--runs", "1",
                           "--out", str(tmp_path), "--no-plot"], env=lab.env, text=True, capture_output=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for profile in ("lab", "wan"):
        results = json.loads((tmp_path / f"{profile}.json").read_text())
        row = results["sizes"]["2"]
        assert len(row["loop"]) == len(row["nixtasks"]) == 1 and row["stages_median"]["activation"] > 0
        for side in ("loop", "nixtasks"):
            assert row[f"{side}_cpu_median"] > 0  # the machine's CPU per deploy
            assert row[f"{side}_deployer_cpu_per_host"] > 0 and row[f"{side}_hosts_cpu_per_host"] > 0
            assert row[f"{side}_connections_per_host"] >= 1
        assert "| 2 |" in (tmp_path / f"{profile}.md").read_text()
    lab_row = json.loads((tmp_path / "lab.json").read_text())
    assert lab_row["evaluations_per_deploy"] == 1 and lab_row["sizes"]["2"]["nixtasks_round_trips_per_host"] is None
    wan = json.loads((tmp_path / "wan.json").read_text())
    assert wan["link"] == {"rtt_ms": 50, "rate_mbit": 100} and wan["knobs"]["payload_kib"] == 5120
    for side in ("loop", "nixtasks"):  # counted by the relay, whose own CPU is left out of the deployer's
        assert wan["sizes"]["2"][f"{side}_round_trips_per_host"] > 0 and wan["sizes"]["2"][f"{side}_relay_cpu"] > 0
    # The lab's link as the harness found it: none.
    assert "NIXTASKS_LAB_RTT_MS" not in labctl("env").stdout
