"""File and process helpers the data_prep sub-commands share: a JSON-list reader and a pool map (atomic writers:
`image_llavolta.jsonio`)."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed


def map_unordered(fn: Callable, items: list, workers: int = 1) -> Iterator:
    """Yield fn(item) for every item as results finish: in-process for workers <= 1, else a process pool."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    # spawn, not fork: the parent may hold threads (tqdm's monitor, decoder threads) that fork would copy mid-state.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:  # on Ctrl-C / an error, don't wait for jobs that haven't started
                future.cancel()


def read_json_list(path: str | os.PathLike, what: str = "entries") -> list:
    """A JSON file holding a list, or an error that names the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such file") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data
