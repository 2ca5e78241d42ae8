"""Timing one step alone: the best of several passes over the sample, per item."""

import time


def microseconds_per_item(handle, items, repeat, prepare=list):
    """The best of `repeat` passes of `handle` over `prepare(items)`, in µs per item.

    `prepare` runs before each pass, untimed: a request's body stream can be read only once.
    """
    best = float("inf")
    for _ in range(repeat):
        prepared = prepare(items)
        started = time.perf_counter()
        for item in prepared:
            handle(item)
        best = min(best, (time.perf_counter() - started) / len(prepared) * 1e6)
    return best
