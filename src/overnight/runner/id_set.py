"""A set of `custom_id`s kept on local disk, for sets as large as a file.

Retrying the failed lines of a batch (service.py) needs "is this line's
`custom_id` among the failed ones?" for every line of an input file that
may hold millions. The ids are kept as 64-bit hashes, spilled by their top
bits into bucket files (runner/hash_spill.py), each bucket then sorted and
memory-mapped: a lookup is a binary search in pages the kernel may drop at
will, so the process's own memory stays one block of hashes, whatever the
set's size. Hashes make it a set of ids up to 64-bit collisions (about one
in 10^7 for a million ids against a million: the chance that a line not
asked for is taken along).

Python's `hash` of a string is salted per process, which is fine: a set is
built and asked in the same process, then removed.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import numpy as np

from overnight.runner.hash_spill import BUCKET_SHIFT, SpilledHashes

#: Hashes held before they are handed to the bucket files.
BLOCK = 1 << 16


class SpilledIdSet:
    def __init__(self, folder: Path) -> None:
        self._spill = SpilledHashes(folder)
        self._block: array[int] = array("q")
        self._buckets: dict[int, np.ndarray] | None = None
        self.size = 0

    def add_many(self, custom_ids: Iterable[str]) -> None:
        block = self._block
        for custom_id in custom_ids:
            block.append(hash(custom_id))
            self.size += 1
        if len(block) >= BLOCK:
            self._hand_over()

    def _hand_over(self) -> None:
        self._spill.add(self._block)
        self._block = array("q")

    def freeze(self) -> None:
        """No more ids: sort the buckets for lookups."""
        self._hand_over()
        self._buckets = self._spill.sorted_buckets()

    def contains_many(self, custom_ids: list[str]) -> list[bool]:
        """Whether each id is in the set (after `freeze`)."""
        if self._buckets is None:
            raise RuntimeError("freeze the set before asking it")
        if not custom_ids or not self._buckets:
            return [False] * len(custom_ids)
        values = np.fromiter(map(hash, custom_ids), dtype=np.int64, count=len(custom_ids))
        found = np.zeros(len(values), dtype=bool)
        buckets = (values.view(np.uint64) >> np.uint64(BUCKET_SHIFT)).astype(np.intp)
        for bucket in np.unique(buckets):
            sorted_hashes = self._buckets.get(int(bucket))
            if sorted_hashes is None:
                continue
            where = np.flatnonzero(buckets == bucket)
            wanted = values[where]
            at = np.searchsorted(sorted_hashes, wanted)
            inside = at < len(sorted_hashes)
            hits = np.zeros(len(wanted), dtype=bool)
            hits[inside] = sorted_hashes[at[inside]] == wanted[inside]
            found[where] = hits
        return cast(list[bool], found.tolist())

    def close(self) -> None:
        self._buckets = None
        self._spill.close()

    def __enter__(self) -> SpilledIdSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
