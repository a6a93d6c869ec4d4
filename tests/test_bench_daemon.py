"""The whole-daemon benchmark: its counting, and one short run with every part real."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from neuroauth.daemon.lslconfig import loopback_env

from neuroauth import local_broker
from neuroauth.bench_daemon import Score, missing_windows, parse_status, window_figures

REPOSITORY = Path(__file__).resolve().parents[1]


def test_missing_windows_counts_gaps_and_edges_not_jitter():
    grid = list(0.3 + np.arange(60.0))  # one window per second in [0, 60)
    assert missing_windows(grid, 0.0, 60.0, 1.0) == 0
    jittered = [t + 0.008 * (-1) ** i for i, t in enumerate(grid)]
    assert missing_windows(jittered, 0.0, 60.0, 1.0) == 0
    assert missing_windows(grid[:10] + grid[13:], 0.0, 60.0, 1.0) == 3  # a gap of four hops
    assert missing_windows(grid[2:], 0.0, 60.0, 1.0) == 2  # the first two
    assert missing_windows(grid[:-5], 0.0, 60.0, 1.0) == 5  # the last five
    assert missing_windows([], 0.0, 60.0, 1.0) == 60


def test_window_figures_keep_the_windows_of_the_interval():
    scores = [Score("a", t + 0.1, t, False) for t in np.arange(0.5, 10.0)]  # 100 ms each
    scores += [Score("b", t + 2.0, t, t == 3.5) for t in np.arange(0.5, 10.0) if t != 5.5]  # late, one gap
    scores += [Score("a", 12.0, 11.0, False)]  # after the interval
    latency, windows = window_figures(scores, ["a", "b"], 0.0, 10.0, 1.0)
    assert (windows.nominal, windows.delivered, windows.missing, windows.expected) == (20, 19, 1, 20)
    assert (windows.late, windows.refused) == (9, 1)
    assert latency.p50 == pytest.approx(0.1) and latency.max == pytest.approx(2.0)
    assert latency.mean == pytest.approx((10 * 0.1 + 9 * 2.0) / 19)
    assert window_figures([], ["a"], 0.0, 10.0, 1.0)[0] is None


def test_status_lines_give_the_daemons_figures():
    line = "STATUS=h000 OWNER, h001 UNKNOWN; broker connected; rss_mb=657.4 tasks=9 windows=14"
    assert parse_status(line) == {"rss_mb": 657.4, "tasks": 9.0, "windows": 14.0}
    assert parse_status("READY=1") is None


@pytest.mark.slow
def test_one_headset_is_scored_in_real_time_and_every_process_is_stopped(tmp_path):
    if local_broker.find() is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    out, plot = tmp_path / "daemon_scale.json", tmp_path / "daemon_scale.png"
    command = [sys.executable, str(REPOSITORY / "bench" / "daemon_scale.py"), "--headsets", "1"]
    command += ["--duration", "6", "--json", str(out), "--plot", str(plot), "--work", str(tmp_path / "work")]
    env = {k: v for k, v in loopback_env(os.environ).items() if not k.startswith("NEUROAUTH_")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["stopped_at"] is None and result["largest_passing"] == 1
    assert result["checkpoint"]["channels"] == ["T7", "F8", "Cz", "P4"]
    (run,) = result["runs"]
    assert run["headsets"] == run["headsets_scored"] == 1 and run["breaks"] is None
    windows = run["windows"]
    assert windows["delivered"] >= 4 and windows["expected"] == windows["delivered"] + windows["missing"]
    latency = run["latency_s"]
    assert all(math.isfinite(latency[k]) for k in ("p50", "p99", "max", "mean"))
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"] < 5.0
    for part in ("daemon", "outlets", "subscriber"):
        figures = run[part]
        assert figures["cpu_cores"] >= 0 and figures["rss_mb"] > 0 and figures["threads"] >= 1, part
    assert run["daemon"]["cpu_cores"] > 0 and run["daemon_cpu_cores_per_headset"] == pytest.approx(
        run["daemon"]["cpu_cores"], abs=1e-3
    )
    assert run["daemon_status"]["windows"] >= 1 and run["daemon_exit_status"] == 0
    assert plot.stat().st_size > 0
    # every process started is gone: broker and daemon run from this test's directory
    listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in listed and "neuroauth.bench_outlets" not in listed
