"""Level 1 of large inputs in worker processes, safe to call from any thread.

Parsing and tokenising are pure Python, so threads would not help. Workers are fresh interpreters
(`python -m smartprice.cpu.parallel`), never forks: no caller thread (a web server's, an OpenMP
team) is copied mid-operation, the caller's `__main__` is never re-imported, and nothing is handed
over through globals: each worker loads the model itself from its directory and answers over a pipe.

The runtime (runtime.py) decides when to use workers and hands over what they load and what this
process computes meanwhile; this module knows nothing of the model but how a worker loads it
(model.py) and scores its trees (trees.py). Workers start on the first large call and stay for the
next (streamed chunks). Work is cut into pieces that this process takes from the front while the
workers take them from the back, so a worker still starting up costs nothing: this process simply
does more of the pieces. One call at a time uses the workers; a concurrent call computes all of
its pieces in its own thread instead of waiting.
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
from collections.abc import Callable
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


Spec = tuple[str, dict, dict]  # what a worker loads: (model directory, preset as a dict, the model's config state)
Key = tuple[str, int, int]     # (model directory, config.json's mtime, workers): a retrained model gets new workers


class Pool:
    """Workers for one model directory; see the module docstring."""

    def __init__(self, key: Key, spec: Spec, workers: int) -> None:
        self.key, self.spec = key, spec
        self.lock = threading.Lock()
        self.workers = [Worker(*spec) for _ in range(workers)]

    def run(self, texts: list[str], final: bool, local: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Dense rows (or, `final`, log prices) of `texts`: pieces shared between `local` (this process) and the workers.

        If another thread is using the workers, `local` computes every piece (no waiting).
        """
        if not self.lock.acquire(blocking=False):
            return local(texts)
        try:
            return self._shared(texts, final, local)
        finally:
            self.lock.release()

    def _shared(self, texts: list[str], final: bool, local: Callable[[list[str]], np.ndarray]) -> np.ndarray:
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
                out[number] = local(piece)

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


def process_count(threads: int) -> int:
    """Processes one large predict may use: $SMARTPRICE_PROCESSES, else the preset's threads."""
    return int(os.environ.get(PROCESSES_ENV) or threads)


def running_pool(key: Key) -> Pool | None:
    """The pool for `key` if it is already running."""
    return _POOL if _POOL is not None and _POOL.key == key else None


def shared_pool(key: Key, spec: Spec, workers: int) -> Pool:
    """The pool for `key`, started on first use; one pool at a time per process (another key's is closed)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.key != key:
            if _POOL is not None:
                _POOL.close()
            _POOL = Pool(key, spec, workers)
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None:
        _POOL.close()


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
        from ..presets import CpuPreset, saved_preset
        from .model import CpuModel
        from .trees import open_trees

        model = CpuModel.load(saved_preset(CpuPreset, preset), Path(directory), state)
        trees = open_trees(model.trees_text_)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which scores the rows itself
        send.send(f"{type(exc).__name__}: {exc}")
        return
    send.send("ready")
    gc.freeze()  # the model's objects live as long as the worker: no collection needs to scan them
    while (request := recv.recv()) is not None:
        texts, final = request
        gc.disable()  # a piece allocates millions of short-lived objects and no cycles: collecting is pure cost
        try:
            dense = model.dense(texts)
            send.send(trees.predict(dense) if final else dense)
        except Exception as exc:  # noqa: BLE001
            send.send(f"{type(exc).__name__}: {json.dumps(str(exc))}")
        finally:
            gc.enable()


if __name__ == "__main__":
    _worker_main()
