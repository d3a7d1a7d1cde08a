"""Level 1 of large inputs in worker processes, safe to call from any thread.

Parsing and tokenising are pure Python, so threads would not help. Workers are fresh interpreters
(`python -m smartprice.cpu.parallel`), never forks: no caller thread (a web server's, an OpenMP
team) is copied mid-operation, the caller's `__main__` is never re-imported, and nothing is handed
over through globals: each worker loads the model itself from its directory and answers over a pipe.

Only models loaded from a directory use workers (a model fitted in this process predicts here).
Workers start on the first large call and stay for the next (streamed chunks). Work is cut into
pieces that this process takes from the front while the workers take them from the back, so a
worker still starting up costs nothing: this process simply does more of the pieces. One call
at a time uses the workers; a concurrent call computes in its own thread instead of waiting.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PROCESSES_ENV = "SMARTPRICE_PROCESSES"  # processes for one large predict (default: the preset's threads); 1 = none,
                                        # for hosts that run one predict per core themselves (Spark executors)
MIN_ROWS = 2_000      # below this, starting a worker (~1 s) costs more than it saves
WARM_MIN_ROWS = 256   # ... but once workers run (a server started them), inputs from here are shared with them
PIECE_ROWS = 400      # rows a piece at most: large enough to amortise the pipe (~1 ms a piece) ...
MIN_PIECE_ROWS = 64   # ... and cut smaller for smaller inputs, so that every process gets several pieces


class Worker:
    """One worker process and the pipe to it; `run(texts, final)` returns dense rows or log prices."""

    def __init__(self, directory: Path, preset: dict[str, Any], state: dict[str, Any]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "smartprice.cpu.parallel"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
        self.send = Connection(os.dup(self.process.stdin.fileno()), readable=False)  # the Connection owns its copy
        self.recv = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.send.send((str(directory), preset, state))
        self.ready = False

    def wait_ready(self) -> None:
        if not self.ready:
            status = self.recv.recv()
            if status != "ready":
                raise RuntimeError(f"smartprice worker failed to load the model: {status}")
            self.ready = True

    def run(self, texts: list[str], final: bool) -> np.ndarray:
        self.send.send((texts, final))
        answer = self.recv.recv()
        if isinstance(answer, str):
            raise RuntimeError(f"smartprice worker failed: {answer}")
        return answer

    def discard(self) -> None:
        """Release the pipes of a worker whose process has ended."""
        for connection in (self.send, self.recv):
            try:
                connection.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.send.send(None)
        except OSError:
            pass
        self.process.wait(timeout=5)
        self.send.close()
        self.recv.close()


class Pool:
    """Workers for one model directory; see the module docstring."""

    def __init__(self, model: Any, workers: int) -> None:
        from ..presets import preset_to_dict

        self.key = _key(model, workers)
        self.lock = threading.Lock()
        self.spec = (model.directory_, preset_to_dict(model.preset), model.state_)  # what a worker loads
        self.workers = [Worker(*self.spec) for _ in range(workers)]

    def run(self, model: Any, texts: list[str], final: bool) -> np.ndarray:
        """Dense rows (or, `final`, log prices) of `texts`, pieces shared between this process and the workers."""
        work = model.score if final else model.dense
        size = min(PIECE_ROWS, max(MIN_PIECE_ROWS, -(-len(texts) // (4 * (len(self.workers) + 1)))))
        pieces = deque(enumerate(texts[i:i + size] for i in range(0, len(texts), size)))
        out: dict[int, np.ndarray] = {}
        failed: list[tuple[Worker, BaseException]] = []
        take = threading.Lock()

        def serve(worker: Worker) -> None:
            try:
                worker.wait_ready()
                while True:
                    with take:
                        if not pieces:
                            return
                        number, piece = pieces.pop()
                    try:
                        out[number] = worker.run(piece, final)
                    except BaseException:
                        with take:
                            pieces.append((number, piece))  # this process does it instead
                        raise
            except BaseException as exc:  # a worker that died: logged, its work done here
                failed.append((worker, exc))

        def here() -> None:  # this process: pieces from the front
            while True:
                with take:
                    if not pieces:
                        return
                    number, piece = pieces.popleft()
                out[number] = work(piece)

        threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in self.workers]
        for thread in threads:
            thread.start()
        here()
        for thread in threads:
            thread.join()
        here()  # pieces put back by a worker that failed after the first pass ended
        if failed:
            log.warning("a level-1 worker process failed (%s); its rows were scored in this process", failed[0][1])
            self._replace_ended([worker for worker, _ in failed])
        return np.concatenate([out[i] for i in sorted(out)])

    def _replace_ended(self, workers: list[Worker]) -> None:
        """Workers whose process ended: one that had loaded the model (then was killed, ran out of memory ...)
        is replaced by a fresh one; one that could not load it is dropped (its share is done here from now on)."""
        for worker in workers:
            if worker.process.poll() is None:
                continue  # alive: the piece failed, not the process (this process met the same error)
            worker.discard()
            index = self.workers.index(worker)
            if worker.ready:
                self.workers[index] = Worker(*self.spec)
                log.warning("started a new level-1 worker process in place of the one that ended")
            else:
                del self.workers[index]

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.close()
            except Exception:  # noqa: BLE001 - closing at exit, best effort
                worker.process.kill()


_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()


def _key(model: Any, workers: int) -> tuple[str, int, int]:
    arrays = model.directory_ / "cpu_model.npz"  # a model retrained into the same directory gets new workers
    return (str(model.directory_), arrays.stat().st_mtime_ns if arrays.exists() else 0, workers)


def _pool(model: Any, workers: int) -> Pool:
    """The pool for this model, started on first use; one pool at a time per process."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.key != _key(model, workers):
            if _POOL is not None:
                _POOL.close()
            _POOL = Pool(model, workers)
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None:
        _POOL.close()


def _workers(model: Any, rows: int) -> int:
    """Worker processes a predict of `rows` listings uses (0: all in this process)."""
    workers = int(os.environ.get(PROCESSES_ENV) or model.preset.threads) - 1
    if (workers < 1 or rows < WARM_MIN_ROWS or getattr(model, "directory_", None) is None
            or "emb" in model.preset.knn_views):
        return 0  # torch (the "emb" view) is left out: it uses every core itself
    if rows < MIN_ROWS and (_POOL is None or _POOL.key != _key(model, workers)):
        return 0  # not worth starting workers for, but worth sharing with running ones
    return workers


def start_pool(model: Any, rows: int) -> None:
    """Start the workers a predict of `rows` listings would use, so they load while the caller reads its input."""
    if _workers(model, rows):
        _pool(model, _workers(model, rows))


def in_pool(model: Any, texts: list[str], final: bool) -> np.ndarray | None:
    """Dense rows (or log prices) of `texts` from this process and the workers; None when not worth it or busy."""
    workers = _workers(model, len(texts))
    if not workers:
        return None
    pool = _pool(model, workers)
    if not pool.lock.acquire(blocking=False):
        return None  # another thread is using the workers: score here
    try:
        return pool.run(model, texts, final)
    finally:
        pool.lock.release()


def _worker_main() -> None:
    """A worker: load the model named on the pipe, then answer lists of texts with dense rows or log prices.

    It ends when the parent sends None or goes away (end of the pipe); Ctrl-C is the parent's to handle.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve_parent()
    except (EOFError, BrokenPipeError):
        pass


def _serve_parent() -> None:
    recv = Connection(os.dup(sys.stdin.fileno()), writable=False)
    send = Connection(os.dup(sys.stdout.fileno()), readable=False)
    sys.stdout = sys.stderr  # nothing else may write to the pipe
    directory, preset, state = recv.recv()
    try:
        from ..kinds import preset_from_dict
        from .stack import CpuStack

        model = CpuStack.load(preset_from_dict(preset), Path(directory), state)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which scores the rows itself
        send.send(f"{type(exc).__name__}: {exc}")
        return
    send.send("ready")
    gc.freeze()  # the model's objects live as long as the worker: no collection needs to scan them
    while (request := recv.recv()) is not None:
        texts, final = request
        gc.disable()  # a piece allocates millions of short-lived objects and no cycles: collecting is pure cost
        try:
            send.send(model.score(texts) if final else model.dense(texts))
        except Exception as exc:  # noqa: BLE001
            send.send(f"{type(exc).__name__}: {json.dumps(str(exc))}")
        finally:
            gc.enable()


if __name__ == "__main__":
    _worker_main()
