"""Compiled per-entry loops behind ``FeatureAccumulator`` (numba, CPU).

A batch of SAE activations arrives as its non-zero entries ``(row, feature, value)``. In torch,
every statistic is a separate pass over the whole batch; here one compiled loop does the moments,
count, max and histogram, another the top-K merge (then the contexts of the slots it filled),
another the top-token table, at a few nanoseconds per entry. The arrays are numpy views of the
accumulator's torch tensors, updated in place. ``cache=True`` keeps the machine code on disk, so
only the first run on a machine compiles.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def live_entries(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                 keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:  # pragma: no cover - compiled
    """The entries with a positive value on a kept row (copies), and whether ``rows`` ascend."""
    out_rows = np.empty(len(rows), dtype=np.int64)
    out_cols = np.empty(len(rows), dtype=np.int64)
    out_values = np.empty(len(rows), dtype=np.float32)
    n, ascending = 0, True
    for i in range(len(rows)):
        if i > 0 and rows[i] < rows[i - 1]:
            ascending = False
        if values[i] > 0 and keep[rows[i]]:
            out_rows[n], out_cols[n], out_values[n] = rows[i], cols[i], values[i]
            n += 1
    return out_rows[:n], out_cols[:n], out_values[:n], ascending


@njit(cache=True, nogil=True)
def add_moments(cols: np.ndarray, values: np.ndarray, moments: np.ndarray, count: np.ndarray,
                maxima: np.ndarray, hist: np.ndarray, edges: np.ndarray) -> None:  # pragma: no cover - compiled
    """Σa..Σa⁴ (``moments`` [d, 4], float64), firing ``count``, ``maxima`` and ``hist`` [d, bins]
    (bin ``i`` holds ``edges[i] < a <= edges[i+1]``, first and last bins open, like
    ``torch.bucketize``)."""
    n_bins = hist.shape[1]
    for i in range(len(cols)):
        c = cols[i]
        v = np.float64(values[i])
        power = v
        for p in range(4):
            moments[c, p] += power
            power *= v
        count[c] += 1
        if values[i] > maxima[c]:
            maxima[c] = values[i]
        b = np.searchsorted(edges, v) - 1
        hist[c, min(max(b, 0), n_bins - 1)] += 1


@njit(cache=True, nogil=True)
def _smallest_slot(row: np.ndarray) -> int:  # pragma: no cover - compiled
    """Index of the smallest value of ``row`` (the first one on ties)."""
    j = 0
    for s in range(1, len(row)):
        if row[s] < row[j]:
            j = s
    return j


@njit(cache=True, nogil=True)
def _latest_smallest_slot(row: np.ndarray, order: np.ndarray) -> int:  # pragma: no cover - compiled
    """Index of the smallest value of ``row``; among equal values, the one seen last (largest ``order``)."""
    j = 0
    for s in range(1, len(row)):
        if row[s] < row[j] or (row[s] == row[j] and order[s] > order[j]):
            j = s
    return j


@njit(cache=True, nogil=True)
def merge_top_k(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, top_values: np.ndarray,
                new_row: np.ndarray, top_location: np.ndarray, seq: int,
                first_window: int) -> int:  # pragma: no cover - compiled
    """Insert entries into each feature's K slots (``top_values`` [d, K], an unordered set): an entry
    above the feature's smallest slot replaces it. ``new_row`` [d, K] (-1 on entry) receives the batch
    row of every slot taken in this batch; returns how many slots were taken (0: nothing to write).

    Ties are settled by the order the tokens come in (``window * seq + position``, ``top_location``
    for slots of earlier batches): of equal activations the earliest stays. The table is then the best
    K by (activation desc, order asc) whatever the batching, so shards merge exactly (``features.merge``)."""
    d, k = top_values.shape
    order = np.empty((d, k), dtype=np.int64)
    for c in range(d):
        for s in range(k):
            order[c, s] = top_location[c, s, 0] * seq + top_location[c, s, 1]
    lowest_slot = np.array([_latest_smallest_slot(top_values[c], order[c]) for c in range(d)])
    lowest = np.array([top_values[c, lowest_slot[c]] for c in range(d)])
    taken = 0
    for i in range(len(cols)):
        c = cols[i]
        if values[i] <= lowest[c]:
            continue
        s = lowest_slot[c]
        if new_row[c, s] < 0:
            taken += 1
        top_values[c, s] = values[i]
        new_row[c, s] = rows[i]
        order[c, s] = first_window * seq + rows[i]
        lowest_slot[c] = _latest_smallest_slot(top_values[c], order[c])
        lowest[c] = top_values[c, lowest_slot[c]]
    return taken


@njit(cache=True, nogil=True)
def write_contexts(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, new_row: np.ndarray, ids: np.ndarray,
                   sources: np.ndarray, seq: int, first_window: int, left: int, right: int, top_source: np.ndarray,
                   top_location: np.ndarray, context_ids: np.ndarray,
                   context_acts: np.ndarray) -> None:  # pragma: no cover - compiled
    """Fill the example buffers of every slot taken in this batch (``new_row >= 0``): document
    source, (window, position), and the token ids and the feature's activations from ``left`` tokens
    before to ``right`` after it (-1 / 0 outside the window).

    The entries of the features concerned are first grouped by feature (a counting sort; ``rows``
    ascending, so each feature's rows stay ascending), then each context is one binary search in
    its feature's rows."""
    d, k = new_row.shape
    changed = np.zeros(d, dtype=np.bool_)
    for c in range(d):
        for s in range(k):
            if new_row[c, s] >= 0:
                changed[c] = True
                break
    start = np.zeros(d + 1, dtype=np.int64)
    for i in range(len(cols)):
        if changed[cols[i]]:
            start[cols[i] + 1] += 1
    for c in range(d):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    feature_rows = np.empty(start[d], dtype=np.int64)
    feature_values = np.empty(start[d], dtype=values.dtype)
    for i in range(len(cols)):
        if changed[cols[i]]:
            j = fill[cols[i]]
            feature_rows[j], feature_values[j] = rows[i], values[i]
            fill[cols[i]] = j + 1
    for c in range(d):
        for s in range(k):
            r = new_row[c, s]
            if r < 0:
                continue
            b, t = r // seq, r % seq
            top_source[c, s, 0], top_source[c, s, 1] = sources[r, 0], sources[r, 1]
            top_location[c, s, 0], top_location[c, s, 1] = b + first_window, t
            for j in range(left + right + 1):
                tt = t - left + j
                context_ids[c, s, j] = ids[b * seq + tt] if 0 <= tt < seq else -1
                context_acts[c, s, j] = 0.0
            first, last = b * seq + max(t - left, 0), b * seq + min(t + right, seq - 1)
            e = start[c] + np.searchsorted(feature_rows[start[c]:start[c + 1]], first)
            while e < start[c + 1] and feature_rows[e] <= last:
                context_acts[c, s, feature_rows[e] - r + left] = feature_values[e]
                e += 1


@njit(cache=True, nogil=True)
def merge_top_tokens(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, ids: np.ndarray,
                     token_ids: np.ndarray, token_max: np.ndarray) -> None:  # pragma: no cover - compiled
    """Keep each feature's M distinct tokens (``token_ids`` [d, M], -1 empty) with the largest max
    activation (``token_max``, -inf empty), exactly, in one pass.

    Why a fixed table is exact: a token outside the table never had a value above the table's
    current smallest max (the smallest only grows), so when a new value ``v`` of it exceeds that
    smallest max, ``v`` is its max so far and it displaces the smallest; a token in the table
    only raises its own max."""
    d, m = token_ids.shape
    lowest_slot = np.array([_smallest_slot(token_max[c]) for c in range(d)])
    lowest = np.array([token_max[c, lowest_slot[c]] for c in range(d)])
    for i in range(len(cols)):
        c = cols[i]
        v = values[i]
        if v <= lowest[c]:
            continue
        token = ids[rows[i]]
        slot = lowest_slot[c]
        for s in range(m):
            if token_ids[c, s] == token:
                slot = s
                break
        if token_ids[c, slot] == token and token_max[c, slot] >= v:
            continue
        token_ids[c, slot], token_max[c, slot] = token, v
        if slot == lowest_slot[c]:
            lowest_slot[c] = _smallest_slot(token_max[c])
            lowest[c] = token_max[c, lowest_slot[c]]
