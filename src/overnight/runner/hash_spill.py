"""The `custom_id` hashes of a file being validated, spilled to local disk.

Finding duplicate `custom_id`s needs every id's hash (8 bytes a request:
80 MB for a 10M-line file, twice that while sorting). Kept in memory, that
grows with the file; here the validator hands them over in blocks, which
are split by their top bits into `BUCKETS` files. A duplicate's two hashes
are equal, so they land in the same bucket; at the end each bucket is read
and sorted on its own. Memory: one block plus one bucket (1.25 MB for 10M
lines), whatever the file size. A bucket's file is opened when its first
hashes arrive: most files are smaller than one block and spill nothing, so
they open no file at all.

numpy is imported on the first spill, not with the module: the worker
imports this module at start and most files never spill, and numpy's
import cost each process 0.18 CPU-s (a `serve` start is about 2.2).
"""

from __future__ import annotations

import shutil
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from overnight.domain.validation import repeated_hashes

if TYPE_CHECKING:
    import numpy as np

BUCKETS = 64
BUCKET_SHIFT = 64 - 6  # the top 6 bits pick one of 64 buckets


class SpilledHashes:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[int, BinaryIO] = {}

    def _bucket(self, bucket: int) -> BinaryIO:
        handle = self._files.get(bucket)
        if handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = self._files[bucket] = (self.folder / f"{bucket:02d}.bin").open("wb")
        return handle

    def add(self, hashes: array[int]) -> None:
        if not hashes:
            return
        import numpy as np

        values = np.frombuffer(hashes, dtype=np.int64)
        buckets = (values.view(np.uint64) >> np.uint64(BUCKET_SHIFT)).astype(np.intp)
        order = np.argsort(buckets, kind="stable")
        ordered = values[order]
        start = 0
        for bucket, count in enumerate(np.bincount(buckets, minlength=BUCKETS)):
            if count:
                handle = self._bucket(bucket)
                handle.write(ordered[start : start + count].tobytes())
                handle.flush()  # out of this process's memory, too
                start += int(count)

    def repeated(self) -> frozenset[int]:
        import numpy as np

        found: set[int] = set()
        for bucket, handle in sorted(self._files.items()):
            handle.close()
            found |= repeated_hashes(np.fromfile(self.folder / f"{bucket:02d}.bin", dtype=np.int64))
        return frozenset(found)

    def sorted_buckets(self) -> dict[int, np.ndarray]:
        """Each bucket sorted and written back, then mapped from its file
        (not read into memory): for membership tests by binary search
        (runner/id_set.py). Buckets that got no hash are absent."""
        import numpy as np

        mapped: dict[int, np.ndarray] = {}
        for bucket, handle in sorted(self._files.items()):
            handle.close()
            path = self.folder / f"{bucket:02d}.bin"
            values = np.fromfile(path, dtype=np.int64)
            values.sort()
            values.tofile(path)
            del values
            mapped[bucket] = np.memmap(path, dtype=np.int64, mode="r")
        self._files.clear()
        return mapped

    def close(self) -> None:
        """Remove the files (the validation is over, or failed)."""
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)
