"""`rota plan`'s cost: a rented machine (price_per_hour, billed for the makespan) and a
shared cluster (price per booked GPU-hour and CPU-hour) are two figures, each named;
without a price the cost is `-`, never `$0.00`."""

from __future__ import annotations

import json

import pytest

from tests.helpers import rota, write_spec

SPEC = """
machines:
  vm:      {gpus: 1x16GB, cpus: 4, price_per_hour: 0.50}
  cluster: {gpus: 1x16GB, cpus: 4, price_per_gpu_hour: 0.35, price_per_cpu_hour: 0.10}
  both:    {gpus: 1x16GB, cpus: 4, price_per_hour: 0.50, price_per_gpu_hour: 0.35}
  free:    {gpus: 1x16GB, cpus: 4}
tasks:
  # The GPU works 1 h; the CPU step after it keeps the machine 3 h more.
  - {name: train, command: 'true', gpus: 1, estimate: 1h}
  - {name: post, command: 'true', needs: [train], cpus: 1, estimate: 3h}
"""


def test_rent_is_billed_for_the_makespan_usage_for_booked_hours(tmp_path):
    spec = write_spec(tmp_path, SPEC)
    d = json.loads(rota("plan", spec, *[a for m in ("vm", "cluster", "both", "free") for a in ("--machine", m)],
                        "--json", check=True).stdout)
    vm, cluster, both, free = (m["cost"] for m in d["machines"])
    assert d["machines"][0]["makespan_s"] == 4 * 3600
    # A rented VM pays every hour of the 4 h makespan, though its GPU works only 1 h.
    assert vm["rent_usd"] == pytest.approx(4 * 0.50) and vm["usage_usd"] is None
    assert vm["total_usd"] == pytest.approx(2.0)  # the documented field stays
    # A cluster charges what is booked: 1 GPU-h and 4 CPU-h.
    assert cluster["usage_usd"] == pytest.approx(1 * 0.35 + 4 * 0.10) and cluster["rent_usd"] is None
    assert both["rent_usd"] == pytest.approx(2.0) and both["usage_usd"] == pytest.approx(0.35)
    assert free["rent_usd"] is None and free["usage_usd"] is None
    for key in ("total_usd", "gpu_hours", "cpu_hours", "machine_hours", "gpu_usd", "cpu_usd", "machine_usd"):
        assert key in vm  # version 1 fields kept

    text = rota("plan", spec, "--machine", "vm", "--machine", "cluster", "--machine", "free", "--width", "100",
                check=True).stdout
    assert "cost, rented $2.00" in text and "makespan" in text.split("cost, rented", 1)[1].splitlines()[0]
    assert "cost, usage  $0.75" in text and "GPU 1.00 h booked x $0.35" in text
    assert "$0.00" not in text
    free_part = text.split("\nfree:", 1)[1]
    assert "  cost         -  (no prices" in free_part
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert "$2.00" in rows["vm"] and "$0.75" in rows["cluster"]
    assert [c.strip() for c in rows["free"].split("│")[11:13]] == ["-", "-"]
