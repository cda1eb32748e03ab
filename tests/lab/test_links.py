"""The lab's link (`labctl up --rtt MS --rate MBIT`): the relay and the rate cap are in the path,
connections and copies work through them, and `down` leaves no relay behind. What they do to
time is printed by `labctl measure`, never asserted."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from nixlab import config as lab_config
from nixlab.proc import pid_is

from .conftest import bring_up, labctl


def relay_records() -> list[dict[str, object]]:
    path = lab_config.RELAY_STATS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def qdisc() -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", lab_config.BRIDGE], text=True, capture_output=True,
                          check=True).stdout


def test_rtt_and_rate_put_the_relay_and_tbf_in_every_connection_and_are_taken_away_with_0(lab):
    try:
        labctl("up", "--rtt", "40", "--rate", "200")  # the running lab's link; no host booted
        assert labctl("status").stdout.splitlines()[-1] == (
            f"link: round trip +40 ms on every ssh connection (through {lab_config.RELAY}); "
            f"deployer uplink capped at 200 Mbit/s (tbf on {lab_config.BRIDGE})")
        assert f" {lab_config.RELAY} --rtt 40 " in lab_config.SSH_CONFIG.read_text()
        assert "tbf" in qdisc() and "rate 200Mbit" in qdisc()
        env = labctl("env").stdout.splitlines()
        assert "export NIXTASKS_LAB_RTT_MS=40" in env and "export NIXTASKS_LAB_RATE_MBIT=200" in env
        before = len(relay_records())
        assert lab.ssh("web1", "hostname").stdout.strip() == "web1"
        assert lab.ssh("deploy@db1", "sudo -n id -u").stdout.strip() == "0"
        records = relay_records()[before:]
        assert [(r["name"], r["address"], r["connections"]) for r in records] == [
            ("web1", lab.address("web1"), 1), ("db1", lab.address("db1"), 1)]
        assert all(int(r["round_trips"]) >= 3 and int(r["bytes_up"]) > 0 for r in records)  # type: ignore[call-overload]
        # A fresh `ssh true` and a copy of a known size, through both, against what they predict.
        proc = labctl("measure", "web2", "--runs", "2", "--size-mib", "2")
        print(proc.stdout)
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("ssh web2 true, fresh connection: ") and "through the relay" in lines[0]
        assert lines[1].startswith("nix copy of 2 MiB to web2: ") and "at 200 Mbit/s" in lines[1]
        assert lab.exec("web2", "sh", "-c", "ls -d /nix/store/*-labctl-measure", check=False).returncode != 0
    finally:
        labctl("up", "--rtt", "0", "--rate", "0")
    assert "ProxyCommand" not in lab_config.SSH_CONFIG.read_text() and "tbf" not in qdisc()
    assert "NIXTASKS_LAB_RTT_MS" not in labctl("env").stdout and "link:" not in labctl("status").stdout
    assert lab.ssh("web1", "true").returncode == 0


def test_down_kills_a_relay_left_behind_by_its_pid(lab):
    labctl("up", "--rtt", "20")
    client = subprocess.Popen(["ssh", "-F", str(lab_config.SSH_CONFIG), "-N", "web1"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = lab_config.RELAY_DIR / "pids"
        deadline = time.monotonic() + 30
        while not (pids.is_dir() and any(pids.iterdir())):
            assert time.monotonic() < deadline and client.poll() is None, "no relay started"
            time.sleep(0.1)
        [relay] = [int(p.name) for p in pids.iterdir()]
        client.send_signal(signal.SIGSTOP)  # its client can no longer end it: only `down` can
        labctl("down")
        assert not pid_is(relay, str(lab_config.RELAY))
        assert not lab_config.STATE.exists()
    finally:
        client.kill()
        client.wait()
        bring_up(lab.workspace)  # the session's lab again, without the link
