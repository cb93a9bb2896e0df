"""Host memory the loader reuses instead of asking the kernel for fresh pages.

On a CPU, a batch-sized tensor in memory that is new to the process costs a page fault
per 4 KiB page (the kernel zeroes each one), and for the loader's arrays that costs
more than the arithmetic done in them (``docs/data.md#loader-speed``). Two places hit it:

* :class:`ReusedBuffers`: the main process's output tensors of the device step
  (``on_after_batch_transfer``), taken from memory an earlier batch has released.
* :func:`keep_freed_memory`: a loader worker's allocator, which by default hands the
  memory of freed arrays back to the kernel and faults it in again for the next sample.
"""

from __future__ import annotations

import ctypes
import os
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap, not from a mapping of their own (32 MiB is glibc's ceiling).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept for the next allocations rather than given back to the kernel:
#: more than a shuffle buffer holds (512 samples of 256 px are 128 MiB), which is freed at each epoch's end.
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Make this process's allocator keep freed memory for reuse; ``True`` if it took effect.

    glibc serves an allocation of 128 KiB or more (one image is 192 KiB) from a mapping
    of its own, and gives the top of its heap back to the kernel once a few hundred KiB
    of it (at most 64 MiB) are free: at the end of each epoch the shuffle buffer's
    samples are freed and trimmed, and the next epoch faults them in again, page by
    page. A loader worker faulted in 20 to 35 pages per sample that way. With
    allocations up to ``mmap_threshold`` on the heap and up to ``trim_threshold`` of free
    heap kept, it faults in almost none; its memory stays at the peak that each epoch
    reaches anyway. The loader workers call this (they are the library's own
    processes); on other C libraries it does nothing and returns ``False``. It changes
    no value, only where memory comes from.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # not glibc, or no such confstr name here
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) & bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


class ReusedBuffers:
    """Uninitialised CPU tensors made from the memory of earlier ones that nothing holds any more.

    :meth:`empty` returns a tensor like ``torch.empty(shape, dtype=dtype)``. Its memory
    is an array this object keeps, and it is handed out again only once every tensor
    over it (views included) has been dropped: a weak reference to the tensor's storage
    has expired, as for the loader's shared-memory slots. Up to ``per_shape`` arrays are
    kept for each shape and dtype, for the ``shapes`` most recently asked for; beyond
    that :meth:`empty` allocates as ``torch.empty`` does. Tensors from it cannot be
    resized beyond their size (``resize_``), like any tensor made with
    ``torch.from_numpy``.
    """

    def __init__(self, per_shape: int = 4, shapes: int = 4) -> None:
        self.per_shape = per_shape
        self.shapes = shapes
        #: ``(shape, dtype) -> [(array, weak reference to the storage last made over it)]``
        self._kept: OrderedDict[tuple[tuple[int, ...], torch.dtype], list[tuple[np.ndarray, StorageWeakRef]]]
        self._kept = OrderedDict()

    def empty(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` and ``dtype`` (on the CPU), from kept memory where some is free."""
        if not all(shape):  # an empty tensor: no memory to keep, and no shape slot taken
            return torch.empty(shape, dtype=dtype)
        key = (tuple(shape), dtype)
        kept = self._kept.setdefault(key, [])
        self._kept.move_to_end(key)
        while len(self._kept) > self.shapes:
            self._kept.popitem(last=False)
        for index, (array, ref) in enumerate(kept):
            if ref.expired():
                tensor = self._over(array, key)
                kept[index] = (array, StorageWeakRef(tensor.untyped_storage()))
                return tensor
        nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
        if len(kept) >= self.per_shape:
            return torch.empty(shape, dtype=dtype)
        array = np.empty(nbytes, dtype=np.uint8)
        tensor = self._over(array, key)
        kept.append((array, StorageWeakRef(tensor.untyped_storage())))
        return tensor

    def __getstate__(self) -> dict[str, Any]:
        """A copy or a pickle starts empty: the kept memory and its weak references are this object's alone."""
        return {"per_shape": self.per_shape, "shapes": self.shapes, "_kept": OrderedDict()}

    @staticmethod
    def _over(array: np.ndarray, key: tuple[tuple[int, ...], torch.dtype]) -> torch.Tensor:
        """A tensor with a storage of its own over ``array`` (its weak reference expires when the tensor's views go)."""
        shape, dtype = key
        return torch.from_numpy(array).view(dtype).view(shape)
