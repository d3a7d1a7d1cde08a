"""bench/gpu.py --tiny: the GPU benchmark's whole path (every preset, the option flips) on tiny encoders, on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the GPU benchmark needs the nn extra")
pytest.importorskip("transformers", reason="the GPU benchmark needs the nn extra")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
PRESETS = ("ultra", "fast", "blazing", "optimized")


def test_tiny_benchmark_reports_every_preset():
    """Runs as users run it (real data when ../shared/data is there, else the example catalog)."""
    result = subprocess.run([sys.executable, str(BENCH), "--tiny"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tiny"] and set(summary["presets"]) == set(PRESETS)
    for name, row in summary["presets"].items():
        assert "error" not in row, (name, row)
        for key in ("samples_per_s", "it_per_s", "optimizer_steps_per_s", "inference_rows_per_s", "ratio",
                    "seed_p100_samples_per_s"):
            assert row[key] > 0, (name, key, row[key])
        assert row["optimizer_steps_per_s"] == pytest.approx(row["it_per_s"] / row["grad_accum"])
        assert row["measured_rows"] > 0
        flipped = row["options"]["length_grouping"]  # the one option that runs on any CPU
        assert flipped["on"]["samples_per_s"] > 0 and flipped["off"]["samples_per_s"] > 0
        assert flipped["on"]["settings"]["length_grouping"] and not flipped["off"]["settings"]["length_grouping"]
        bf16 = row["options"]["bf16"]  # on a CPU the preset runs fp32; the flip runs bf16 autocast
        assert bf16["on"]["settings"]["mixed_precision"] == "bf16" and bf16["on"]["samples_per_s"] > 0
    assert summary["presets"]["fast"]["settings"]["attention"] == "sdpa"   # RoBERTa has SDPA kernels
    assert summary["presets"]["ultra"]["settings"]["attention"] == "eager"  # DeBERTa-v2/v3: eager only
