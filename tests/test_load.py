"""The load test (bench/bench_load.py) against a real standalone server: 64 clients for two
minutes of mixed requests with hostile and abandoned ones among them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_64_clients_for_two_minutes(tmp_path: Path) -> None:
    report_file = tmp_path / "load.json"
    argv = ["bench_load.py", "--clients", "64", "--seconds", "120", "--json", str(report_file)]
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    report = json.loads(report_file.read_text())
    assert report["valid_failures"] == 0, report["failure_examples"]
    assert report["crosstalk_rows"] == 0
    assert report["hostile_unexpected"] == 0, report["hostile_examples"]
    assert min(report["requests"].get(kind, 0) for kind in ("hostile", "abandoned")) > 0
    rss = report["rss_mib"]  # flat: the second half's peak is no higher than the first's
    assert rss["second_half_max"] <= rss["first_half_max"] * 1.10, f"RSS kept growing: {rss}"
    assert proc.returncode == 0, proc.stdout[-2000:]
