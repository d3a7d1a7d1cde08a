"""Merging concurrent small pricing requests into one model call, for the HTTP API (serve.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import numpy as np
from fastapi.concurrency import run_in_threadpool

MAX_BATCH_ROWS = 32  # merge concurrent requests up to this many rows per model call

class Coalescer:
    """Run small requests that arrive while a model call is busy together, in one call.

    The default model costs ~25 ms for one listing and ~40 ms for eight (fixed costs per call:
    sklearn's input checks, pandas frames), so with eight clients merging multiplies
    single-listing throughput. One merged call runs at a time; requests of MAX_BATCH_ROWS rows
    or more skip the queue. Predictions of different rows are independent, so a merged call
    returns the same prices; if it fails, each request is retried alone so one cannot fail others.
    """

    def __init__(self, predict: Callable[[list[str]], np.ndarray], max_rows: int = MAX_BATCH_ROWS) -> None:
        self.predict = predict
        self.max_rows = max_rows
        self._waiting: deque[tuple[list[str], asyncio.Future]] = deque()
        self._runner: asyncio.Task | None = None

    async def __call__(self, texts: list[str]) -> np.ndarray:
        """Prices for `texts`, computed in the thread pool (alone or merged with other requests)."""
        if len(texts) >= self.max_rows:
            return await run_in_threadpool(self.predict, texts)
        loop = asyncio.get_running_loop()  # the app's own: a Coalescer is made in the lifespan
        future = loop.create_future()
        self._waiting.append((texts, future))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft()]
            rows = len(batch[0][0])
            while self._waiting and rows + len(self._waiting[0][0]) <= self.max_rows:
                rows += len(self._waiting[0][0])
                batch.append(self._waiting.popleft())
            try:
                prices = await run_in_threadpool(self.predict, [t for texts, _ in batch for t in texts])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for texts, future in batch:  # find the request that fails; the others still get prices
                    try:
                        _settle(future, await run_in_threadpool(self.predict, texts))
                    except Exception as alone:
                        _settle(future, alone)
                continue
            start = 0
            for texts, future in batch:
                _settle(future, prices[start:start + len(texts)])
                start += len(texts)


def _settle(future: asyncio.Future, outcome: np.ndarray | BaseException) -> None:
    """Resolve a request's future unless its client has gone (the future was cancelled)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


