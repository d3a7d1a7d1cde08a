"""What the bench scripts share: where the real data is, timing a command, peak memory, the large catalogs.

Each script imports this module (`from common import ...`: Python puts bench/ on the path of a
script run from it) and no script imports another. Linux only: peak memory is read from the kernel
(`getrusage`, `wait4`, /proc), in MiB.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # the real data, beside the repository (../shared/data/README.md)
SMARTPRICE = [sys.executable, "-m", "smartprice", "-q"]  # the CLI as a user runs it, from this Python


HOW_TO_GET = (f"to run it, put the real data in {DATA}, a folder beside the checkout: train.csv, holdout.csv, "
              "stress_extremes.csv and test_unlabeled.csv, rows of the Amazon ML Challenge 2025 ('Smart Product "
              "Pricing') train and test files with columns sample_id, catalog_content, image_link[, price]")


def absent(*names: str) -> list[str]:
    """The named shared data files that are not there."""
    return [name for name in names if not (DATA / name).is_file()]


def require_data(script: str, *names: str, part: str = "its measurements") -> None:
    """Stop with status 2, before any work, when a file that `part` (what the run was asked for) needs is absent."""
    missing = absent(*names)
    if missing:
        print(f"{script}: cannot run {part}: {', '.join(missing)} absent from {DATA}; {HOW_TO_GET}", file=sys.stderr)
        sys.exit(2)


def optional_data(script: str, part: str, *names: str) -> str | None:
    """None when a side measure's files are there; else why it is skipped (also printed on stderr)."""
    missing = absent(*names)
    if not missing:
        return None
    reason = f"{', '.join(missing)} absent from {DATA}"
    print(f"{script}: skipping {part}: {reason}; {HOW_TO_GET}", file=sys.stderr, flush=True)
    return reason


def machine() -> str:
    """The CPU model and core count, printed beside every figure."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def peak_rss_mib() -> float:
    """This process's peak resident set so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants, as /proc lists them now."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):  # ended meanwhile
            continue
    family, pending = [pid], [pid]
    while pending:
        current = pending.pop()
        found = [child for child, parent in parents.items() if parent == current]
        family += found
        pending += found
    return family


def tree_memory_mib(pid: int, field: str = "VmHWM") -> dict[int, tuple[str, float]]:
    """pid -> (name, MiB) of a running process tree: "VmHWM" its peak so far, "VmRSS" its resident set now."""
    found = {}
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:  # ended meanwhile
            continue
        values = dict(line.split(":", 1) for line in status if ":" in line)
        if field in values:
            found[member] = (values["Name"].strip(), int(values[field].split()[0]) / 1024)
    return found


def run_timed(command: list[str], stdout: Any = subprocess.DEVNULL, env: dict[str, str] | None = None,
              sample: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run a command to completion; an error stops the bench with the end of its stderr.

    Returns wall seconds, CPU seconds and the peak RSS of its largest process (its whole tree, from
    `wait4`), and its stdout when `stdout` is subprocess.PIPE. `sample(pid)` is called every 0.1 s
    while it runs (to follow the memory of a tree whose processes come and go).
    """
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as captured:
        started = time.perf_counter()
        piped = stdout is subprocess.PIPE
        process = subprocess.Popen(command, stdout=captured if piped else stdout, stderr=errors, env=env)
        done = threading.Event()
        sampler = threading.Thread(target=_sample_until, args=(sample, process.pid, done), daemon=True)
        if sample is not None:
            sampler.start()
        _, status, usage = os.wait4(process.pid, 0)  # rusage of this command's process tree
        seconds = time.perf_counter() - started
        done.set()
        if sample is not None:
            sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            sys.exit(f"{' '.join(map(str, command))} failed ({process.returncode}): {errors.read().decode()[-3000:]}")
        captured.seek(0)
        result = {"seconds": round(seconds, 3), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                  "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
        if piped:
            result["stdout"] = captured.read().decode()
    return result


def _sample_until(sample: Callable[[int], None] | None, pid: int, done: threading.Event) -> None:
    while sample is not None and not done.is_set():
        sample(pid)
        done.wait(0.1)


def repeated_catalog(source: Path, times: int, target: Path) -> int:
    """Write `source` `times` times, each sample_id suffixed by its copy number; return the rows written."""
    import pandas as pd

    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    with open(target, "w", encoding="utf-8", newline="") as handle:
        for copy in range(times):
            frame.assign(sample_id=frame["sample_id"] + f"-{copy}").to_csv(handle, header=copy == 0, index=False)
    return len(frame) * times


def perturbed_copies(frame: Any, copies: int) -> Any:
    """`copies` versions of a labelled catalog, text perturbed (a word dropped, a suffix), prices jittered, ids unique.

    train.csv x11 is the 76k-row catalog, x110 the 760k-row one: sizes no real file of ours has.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    parts = [frame]
    for copy in range(1, copies):
        texts = []
        for text in frame.catalog_content:
            words = text.split(" ")
            drop = rng.integers(len(words))
            words = words[:drop] + words[drop + 1:] if len(words) > 3 else words
            texts.append(" ".join(words) + f" v{copy}")
        parts.append(frame.assign(sample_id=[f"{i}-{copy}" for i in frame.sample_id], catalog_content=texts,
                                  price=frame.price * rng.uniform(0.9, 1.1, len(frame))))
    return pd.concat(parts, ignore_index=True)


def large_train(copies: int, target: Path) -> Path:
    """train.csv as `copies` perturbed copies (11: ~76k rows, 110: ~760k), written to `target`."""
    from smartprice import read_catalog

    perturbed_copies(read_catalog(DATA / "train.csv", labelled=True), copies).to_csv(target, index=False)
    return target
