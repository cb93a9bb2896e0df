"""Caption redundancy (:class:`CaptionRedundancy`, the paper's Tables 1 and 2) over 64-bit caption hashes.

:class:`CaptionMetric` is the caption metrics' base: list states that survive a gather
on a rank that saw no data, and per-group sums keyed by group name (e.g.
``"qwen2-vl/hybrid"``), gathered exactly.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = [
    "GROUP_KEY_BYTES",
    "CaptionMetric",
    "CaptionRedundancy",
    "caption_hashes",
    "hash_bytes",
    "normalize_caption",
    "normalize_captions",
]

#: Longest group name (UTF-8 bytes) a grouped caption metric accepts.
GROUP_KEY_BYTES: int = 128
# Deduplicate a CaptionRedundancy's keys once this many (and half the deduplicated ones) are
# pending: merging costs amortised O(1) per key and the state stays 8-12 bytes per unique caption.
_MIN_COMPACT = 1 << 16
# The constants of hash_bytes: MurmurHash3's finaliser multipliers and the 64-bit golden ratio.
_HASH_SEED = np.uint64(0xC2B2AE3D27D4EB4F)
_HASH_STEP = np.uint64(0x9E3779B97F4A7C15)
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_U2, _U32, _U33 = np.uint64(2), np.uint64(32), np.uint64(33)
# Byte-wise constants of _lower_ascii.
_ADD_3F, _DA = np.uint64(0x3F3F3F3F3F3F3F3F), np.uint64(0xDADADADADADADADA)
_HIGH_BITS = np.uint64(0x8080808080808080)
# The bytes of a range's last word that belong to it, by length % 8.
_TAIL_MASKS = np.array([2**64 - 1] + [(1 << (8 * r)) - 1 for r in range(1, 8)], dtype=np.uint64)
# Merge a grouped metric's per-update rows once this many chunks are pending.
_MAX_GROUP_CHUNKS = 64


# Sentence punctuation that "basic" normalisation strips from the end of a caption (with
# spaces); "%", quotes and brackets carry meaning and stay.
_TRAILING_PUNCTUATION = " .,;:!?\u2026\u3002\uff01\uff1f\uff0c\uff1b\uff1a"
_TRAILING_ASCII = _TRAILING_PUNCTUATION.encode("ascii", "ignore")
_TRAILING_TABLE = np.zeros(256, dtype=bool)
_TRAILING_TABLE[list(_TRAILING_ASCII)] = True
# Joins a batch of captions into one string for normalising; a caption holding it is normalised alone.
_SEPARATOR = "\x00"


def normalize_caption(text: str, mode: Literal["none", "basic"] = "basic") -> str:
    """Normalise a caption before it is compared with others.

    ``mode="none"`` keeps the text; ``"basic"`` applies NFC, folds case, collapses whitespace
    and strips trailing sentence punctuation (``. , ; : ! ?`` and the ellipsis:
    ``"A  forest."`` -> ``"a forest"``; ``"crop 30%"`` keeps its ``%``).

    Raises:
        ValueError: If ``mode`` is not ``"none"`` or ``"basic"``.
    """
    if mode == "none":
        return text
    if mode != "basic":
        raise ValueError(f"normalize must be 'none' or 'basic', got {mode!r}")
    folded = " ".join(unicodedata.normalize("NFC", text).casefold().split())
    return folded.rstrip(_TRAILING_PUNCTUATION)


def normalize_captions(captions: Sequence[str]) -> list[str]:
    """Apply ``normalize_caption(text, "basic")`` to a batch of captions at once.

    The joined batch is encoded once, lower-cased eight bytes at a time and each end moved
    back past trailing punctuation; captions this would get wrong (non-ASCII, tabs,
    double or leading spaces) are found by byte comparisons and normalised alone.

    Raises:
        TypeError: If a caption is not a string.
    """
    batch = _batch(captions, "basic")
    data = batch.words.tobytes()
    texts = [
        data[s : s + n].decode("utf-8") for s, n in zip(batch.starts.tolist(), batch.lengths.tolist(), strict=True)
    ]
    for i, text in zip(batch.redo.tolist(), batch.redone, strict=True):
        texts[i] = text.decode("utf-8")
    return texts


class _Utf8Batch(NamedTuple):
    """Caption ``i`` is ``words`` bytes ``starts[i] : starts[i] + lengths[i]``, but those at ``redo`` are ``redone``."""

    words: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    redo: np.ndarray
    redone: list[bytes]


_NOTHING = np.zeros(0, dtype=np.int64)


def _joined(captions: Sequence[str], separator: str = _SEPARATOR) -> str:
    """The captions joined by ``separator``; a clear error for a non-string."""
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not one string")
    try:
        return separator.join(captions)
    except TypeError as err:
        bad = next((c for c in captions if not isinstance(c, str)), None)
        if bad is None:
            raise
        raise TypeError(f"captions must be strings, got {type(bad).__name__}: {bad!r}") from err


def _padded_words(data: bytes) -> np.ndarray:
    """``data`` as aligned little-endian 64-bit words, followed by at least one zero word."""
    words = np.zeros(len(data) // 8 + 2, dtype="<u8")
    words.view(np.uint8)[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return words


def _byte_batch(parts: Sequence[bytes]) -> _Utf8Batch:
    """Byte strings (which may hold NUL) as ranges of one buffer."""
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    starts = np.zeros(len(parts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return _Utf8Batch(_padded_words(b"".join(parts)), starts, lengths, _NOTHING, [])


def _separated(
    words: np.ndarray, size: int, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(is_nul, separators, starts, lengths)`` of ``count`` NUL-separated ranges; None unless ``count - 1`` NULs."""
    is_nul = words.view(np.uint8)[:size] == 0
    separators = np.flatnonzero(is_nul)
    if separators.size != count - 1:
        return None
    bounds = np.empty(count + 1, dtype=np.int64)
    bounds[0], bounds[-1] = -1, size
    bounds[1:-1] = separators
    starts = bounds[:-1] + 1
    return is_nul, separators, starts, bounds[1:] - starts


def _batch(captions: Sequence[str], normalize: Literal["none", "basic"]) -> _Utf8Batch:
    """The captions' (normalised) UTF-8 text as ranges of one buffer; TypeError for non-strings."""
    batch = _joined_batch(_joined(captions), len(captions), normalize)
    if batch is not None:
        return batch
    # A caption holds the separator: encode (and normalise) them one by one.
    return _byte_batch([normalize_caption(c, normalize).encode("utf-8") for c in captions])


def _joined_batch(joined: str, count: int, normalize: str) -> _Utf8Batch | None:
    """:func:`_batch` of ``count`` captions joined by ``_SEPARATOR``; None if that is not ``count - 1`` NULs.

    For ``"basic"``: on ASCII text NFC is the identity and ``casefold()`` is ``lower()``,
    and with single spaces only, collapsing whitespace only removes trailing spaces,
    as the punctuation stripping does. Other captions go to ``redo``.
    """
    data = joined.encode("utf-8")
    words = _padded_words(data)
    found = _separated(words, len(data), count) if count else None
    if found is None:
        return None if count else _Utf8Batch(words, _NOTHING, _NOTHING, _NOTHING, [])
    is_nul, separators, starts, lengths = found
    if normalize != "basic":
        return _Utf8Batch(words, starts, lengths, _NOTHING, [])
    raw = words.view(np.uint8)[: len(data)]
    # Non-ASCII bytes (negative as int8) and control characters, NUL excepted...
    irregular = raw.view(np.int8) < 32
    irregular ^= is_nul
    # ...a space after a space or a separator, and a space opening the first caption.
    space = raw == 32
    irregular[1:] |= space[1:] & (space[:-1] | is_nul[:-1])
    irregular[:1] |= space[:1]
    redo = np.unique(np.searchsorted(separators, np.flatnonzero(irregular))) if irregular.any() else _NOTHING
    redone = [
        normalize_caption(data[s : s + n].decode("utf-8"), "basic").encode("utf-8")
        for s, n in zip(starts[redo].tolist(), lengths[redo].tolist(), strict=True)
    ]
    _lower_ascii(words)
    ends = _stripped_ends(words.view(np.uint8), starts + lengths)
    return _Utf8Batch(words, starts, ends - starts, redo, redone)


def _lower_ascii(words: np.ndarray) -> None:
    """Lower-case the ASCII letters in ``words``, eight bytes at a time, in place.

    Per byte ``b < 0x80``: ``b + 0x3F`` has its top bit set iff ``b >= 0x41`` ("A") and
    ``0xDA - b`` iff ``b <= 0x5A`` ("Z"), without carries between bytes; both top bits,
    moved to bit 5, are the 0x20 that lower-cases a capital. Carries from multi-byte
    UTF-8 characters only touch captions that are normalised alone.
    """
    mask = words + _ADD_3F
    mask &= _DA - words
    mask &= _HIGH_BITS
    mask >>= _U2
    words |= mask


def _stripped_ends(data: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Range ends moved back past trailing ``_TRAILING_ASCII`` bytes (``bytes.rstrip`` on every range).

    No end passes its start: the byte before each range is a NUL (for the first,
    ``data[-1]``, which padding makes zero).
    """
    trailing = _TRAILING_TABLE[data[ends - 1]]
    ends -= trailing
    active = np.flatnonzero(trailing)
    while active.size:  # one step per further stripped byte, over the ranges still ending in one
        active = active[_TRAILING_TABLE[data[ends[active] - 1]]]
        ends[active] -= 1
    return ends


def caption_hashes(captions: Sequence[str], normalize: Literal["none", "basic"] = "none") -> torch.Tensor:
    """Hash captions to a ``(len(captions),)`` int64 tensor (:func:`hash_bytes` of the UTF-8 text).

    The text is first normalised as :func:`normalize_caption` with ``normalize`` does. Unlike
    Python's ``hash`` the result is the same across processes, machines and batchings.

    Raises:
        TypeError: If ``captions`` is one string or holds a non-string.
        ValueError: If ``normalize`` is not a known mode.
    """
    return torch.from_numpy(_caption_keys(captions, normalize))


def _caption_keys(captions: Sequence[str], normalize: Literal["none", "basic"]) -> np.ndarray:
    """:func:`caption_hashes` as a numpy int64 array."""
    if normalize not in ("none", "basic"):
        raise ValueError(f"normalize must be 'none' or 'basic', got {normalize!r}")
    batch = _batch(captions, normalize)
    keys = _hash_ranges(batch.words, batch.starts, batch.lengths)
    if batch.redone:
        redone = _byte_batch(batch.redone)
        keys[batch.redo] = _hash_ranges(redone.words, redone.starts, redone.lengths)
    return keys.view(np.int64)


def hash_bytes(data: Sequence[bytes]) -> np.ndarray:
    """Hash byte strings to 64 bits, many at once (the hash behind :class:`CaptionRedundancy`).

    For ``b`` of ``L`` bytes, read as ``m = ceil(L / 8)`` little-endian 64-bit words
    ``w_0 .. w_{m-1}`` (the last one padded with zero bytes), all arithmetic modulo
    ``2**64``::

        h = (L + 0xC2B2AE3D27D4EB4F) * 0xFF51AFD7ED558CCD
        for w in words:  h = (h ^ w) * 0x9E3779B97F4A7C15;  h ^= h >> 32
        h ^= h >> 33;  h *= 0xFF51AFD7ED558CCD;  h ^= h >> 33;  h *= 0xC4CEB9FE1A85EC53;  h ^= h >> 33

    (the last line is MurmurHash3's finaliser). Each step is a bijection of ``h`` for a
    fixed word and of the word for a fixed ``h``, so strings of one length differing in
    one 8-byte word never collide; other pairs collide with probability about ``2**-64``
    (not cryptographic: chosen strings can collide). A batch is hashed with numpy, one
    vectorised step per word position. Returns a ``(len(data),)`` int64 array (the
    unsigned hash's bits).
    """
    batch = _byte_batch(list(data))
    return _hash_ranges(batch.words, batch.starts, batch.lengths).view(np.int64)


def _hash_ranges(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The :func:`hash_bytes` hash of byte ranges of a :func:`_padded_words` buffer, as uint64, in order.

    Ranges are sorted by word count, so step ``j`` works on a suffix of them; each
    unaligned word is put together from two aligned ones (numpy gathers those faster).
    """
    count = (lengths + 7) >> 3
    hashes = np.empty(count.size, dtype=np.uint64)
    if not count.size:
        return hashes
    longest = int(count.max())
    order = np.argsort(count.astype(np.uint16) if longest < 1 << 16 else count, kind="stable")
    count, start, length = count[order], starts[order], lengths[order]
    h = (length.astype(np.uint64) + _HASH_SEED) * _FMIX_1
    index = start >> 3
    low_shift = ((start & 7) << 3).astype(np.uint64)
    high_shift = 64 - low_shift  # a shift by 64 gives 0 in numpy
    tail = _TAIL_MASKS[length & 7]
    first = np.searchsorted(count, np.arange(longest + 1), side="right")  # first range with more than j words
    low = words[index]
    for j in range(longest):
        a, last = first[j], first[j + 1] - first[j]  # ranges a.. have word j; the first `last` end with it
        index_j = index[a:]
        index_j += 1
        high = words[index_j]
        word = low[a:] >> low_shift[a:]
        word |= high << high_shift[a:]
        word[:last] &= tail[a : a + last]
        h_j = h[a:]
        h_j ^= word
        h_j *= _HASH_STEP
        h_j ^= h_j >> _U32
        low[a:] = high
    h ^= h >> _U33
    h *= _FMIX_1
    h ^= h >> _U33
    h *= _FMIX_2
    h ^= h >> _U33
    hashes[order] = h
    return hashes


def _as_chunks(state: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    """A concatenated list state as a new list of chunks (a gather leaves one tensor)."""
    return list(state) if isinstance(state, list) else [state]


def _appended(state: list[torch.Tensor] | torch.Tensor, chunk: torch.Tensor) -> list[torch.Tensor]:
    """Append to a list state in place (O(1)); a gathered single tensor becomes a list first."""
    chunks = state if isinstance(state, list) else [state]
    chunks.append(chunk)
    return chunks


def _sorted_keys(keys: np.ndarray) -> np.ndarray:
    """A sorted copy of int64 hash keys, about twice as fast as ``np.sort`` on uniform keys.

    A radix sort (numpy's stable int16 sort) of the top 16 bits leaves short unordered
    runs that the stable timsort finishes in near-linear time; any input comes out sorted.
    """
    order = np.argsort((keys >> 48).astype(np.int16), kind="stable")
    ordered = keys[order]
    del order
    ordered.sort(kind="stable")
    return ordered


def _unique_of(chunks: list[torch.Tensor], sorted_first: bool = False, count_only: bool = False) -> torch.Tensor:
    """Sorted unique values of the concatenated int64 chunks (or their number); empties ``chunks``.

    On the CPU the chunks after a sorted first one (``sorted_first``) are sorted
    (:func:`_sorted_keys`) and merged with it by a timsort (one linear merge), peaking at
    about twice the input; other devices use ``torch.unique``. No chunk is changed.
    """
    if not chunks or chunks[0].device.type != "cpu":
        unique = torch.unique(torch.cat(chunks)) if chunks else torch.zeros(0, dtype=torch.long)
        chunks.clear()
        return torch.tensor(unique.numel(), dtype=torch.long) if count_only else unique
    arrays = [chunk.numpy() for chunk in chunks]
    chunks.clear()
    first = arrays.pop(0) if sorted_first else arrays[0][:0]
    values = _sorted_keys(np.concatenate(arrays) if len(arrays) > 1 else arrays[0]) if arrays else first[:0]
    del arrays
    if first.size:
        values = np.concatenate([first, values])
        del first
        values.sort(kind="stable")
    if count_only:
        distinct = int(np.count_nonzero(values[1:] != values[:-1])) + int(values.size > 0)
        return torch.tensor(distinct, dtype=torch.long)
    keep = np.empty(values.shape, dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return torch.from_numpy(values[keep])


def _encode_group(name: str) -> torch.Tensor:
    raw = name.encode("utf-8")
    if len(raw) > GROUP_KEY_BYTES or "\0" in name:
        raise ValueError(f"group name {name!r} must be at most {GROUP_KEY_BYTES} UTF-8 bytes and hold no NUL character")
    key = torch.zeros(GROUP_KEY_BYTES, dtype=torch.uint8)
    key[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return key


def _decode_group(key: torch.Tensor) -> str:
    return bytes(key.cpu().tolist()).rstrip(b"\0").decode("utf-8")


class CaptionMetric(Metric):
    """Base of the caption metrics: typed list states and per-group sums, both distributed-safe.

    List states go through :meth:`_add_list_state`, so a rank that saw no data gathers
    an empty tensor of the right dtype and shape (torchmetrics would send float32). A
    metric summing per-caption rows calls :meth:`_add_group_states` once,
    :meth:`_add_rows` per batch and returns :meth:`_results`. Group
    sums are stored beside the name encoded in ``GROUP_KEY_BYTES`` bytes, so totals
    after a gather are exact without a shared name table.
    """

    is_differentiable = False
    full_state_update = False
    sums: torch.Tensor
    group_keys: list[torch.Tensor] | torch.Tensor
    group_sums: list[torch.Tensor] | torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._list_templates: dict[str, torch.Tensor] = {}
        self._group_columns: tuple[str, ...] = ()

    def _add_list_state(self, name: str, template: torch.Tensor) -> None:
        """Register a list state concatenated across processes; ``template`` is its empty value."""
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._list_templates[name] = template

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        for name, template in self._list_templates.items():
            value = getattr(self, name)
            if isinstance(value, list) and not value:
                setattr(self, name, [template.to(self.device)])
        super()._sync_dist(dist_sync_fn, process_group)

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another metric's state (or a state dict) to this one, as a gather would.

        Unlike torchmetrics 1.9's own ``merge_state``, the result cached by an earlier
        :meth:`compute` is dropped, so the next ``compute`` includes the merged state.
        ``incoming_state`` is a metric of the same class, or its ``metric_state`` dict.
        """
        super().merge_state(incoming_state)
        self._computed = None

    def _add_group_states(self, columns: Sequence[str], means: Callable[[Mapping[str, float]], dict[str, Any]]) -> None:
        """Register overall sums (``sums``) and per-group sums with the given column names.

        ``means`` turns one set of column sums into the subclass's results (means as
        floats, counts as ints); :meth:`_results` applies it overall and per group.
        """
        self._group_columns = tuple(columns)
        self._group_means = means
        self.add_state("sums", torch.zeros(len(columns), dtype=torch.float64), dist_reduce_fx="sum")
        self._add_list_state("group_keys", torch.zeros(0, GROUP_KEY_BYTES, dtype=torch.uint8))
        self._add_list_state("group_sums", torch.zeros(0, len(columns), dtype=torch.float64))

    def _add_rows(self, rows: torch.Tensor, groups: Sequence[str] | None) -> None:
        """Add per-caption rows to the overall sums and, when ``groups`` are given, to their groups'."""
        self.sums += rows.sum(0).to(self.sums.device)
        if groups is not None:
            self._update_groups(groups, rows)

    def _results(self) -> dict[str, Any]:
        """The ``means`` of the overall sums as tensors (float64 means, int64 counts) and ``groups``."""
        overall = self._group_means(dict(zip(self._group_columns, self.sums.tolist(), strict=True)))
        result: dict[str, Any] = {
            k: torch.tensor(v, dtype=torch.long if isinstance(v, int) else torch.float64) for k, v in overall.items()
        }
        result["groups"] = {name: self._group_means(sums) for name, sums in self._group_totals().items()}
        return result

    def _update_groups(self, groups: Sequence[str], rows: torch.Tensor) -> None:
        """Add ``rows[i]`` to the sums of group ``groups[i]``.

        Raises:
            ValueError: If ``groups`` and ``rows`` differ in length or a name is too long.
        """
        if isinstance(groups, str) or len(groups) != rows.shape[0]:
            raise ValueError(f"expected one group name per caption ({rows.shape[0]}), got {groups!r:.200}")
        index: dict[str, int] = {}
        inverse = torch.tensor([index.setdefault(str(g), len(index)) for g in groups], dtype=torch.long)
        keys = torch.stack([_encode_group(name) for name in index]) if index else self._list_templates["group_keys"]
        sums = torch.zeros(len(index), rows.shape[1], dtype=torch.float64)
        sums.index_add_(0, inverse, rows.detach().to("cpu", torch.float64))
        self.group_keys = _appended(self.group_keys, keys.to(self.device))
        self.group_sums = _appended(self.group_sums, sums.to(self.device))
        if len(self.group_keys) > _MAX_GROUP_CHUNKS:
            keys, sums = self._merged_groups()
            self.group_keys, self.group_sums = [keys], [sums]

    def _merged_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        # After a gather the states are tensors; before it, lists of chunks (rows aligned).
        keys = torch.cat([self._list_templates["group_keys"].to(self.device), *_as_chunks(self.group_keys)])
        sums = torch.cat([self._list_templates["group_sums"].to(self.device), *_as_chunks(self.group_sums)])
        unique, inverse = torch.unique(keys.reshape(-1, GROUP_KEY_BYTES), dim=0, return_inverse=True)
        merged = torch.zeros(unique.shape[0], len(self._group_columns), dtype=torch.float64, device=sums.device)
        merged.index_add_(0, inverse.reshape(-1), sums.reshape(-1, len(self._group_columns)))
        return unique, merged

    def _group_totals(self) -> dict[str, dict[str, float]]:
        """Per-group column sums, by group name (sorted), over everything added and gathered."""
        keys, sums = self._merged_groups()
        totals = {
            _decode_group(key): dict(zip(self._group_columns, row.tolist(), strict=True))
            for key, row in zip(keys, sums, strict=True)
        }
        return dict(sorted(totals.items()))


class _DeferredState:
    """A metric state attribute that hashes the captions a :class:`CaptionRedundancy` holds back first.

    Whoever reads the state (``compute``, a gather, ``state_dict``, ...) sees every caption.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_state_{name}"

    def __get__(self, metric: Any, owner: type | None = None) -> Any:
        if metric is None:
            return self
        if metric.__dict__.get("_held"):
            metric._hash_held()
        return metric.__dict__[self.slot]

    def __set__(self, metric: Any, value: Any) -> None:
        metric.__dict__[self.slot] = value


class CaptionRedundancy(CaptionMetric):
    """Caption redundancy ``1 - unique / total``, as the paper defines it (its Tables 1 and 2).

    The paper counts unique strings (71,899 of 100,240 captions: 28.27%); ``normalize="basic"``
    also counts captions differing only in case, whitespace or trailing punctuation as repeats.

    Captions are hashed a batch at a time (updates of fewer than ``HOLD`` wait, as
    references, until ``HOLD`` do or the state is read) into a sorted, deduplicated state
    of 8 to 12 bytes per *unique* caption, deduplicated again after a gather
    (``unique(cat(a, b)) = unique(cat(unique(a), b))``), so every rank's count equals a
    single process's. ``unique`` is exact over 64-bit hashes: two captions sharing one
    count once, with chance about ``n * (n - 1) / 2**65`` over ``n`` unique captions
    (:func:`hash_bytes`; speed and memory figures in ``docs/evaluation.md``).

    Args:
        normalize: ``"none"`` (the paper's exact strings) or ``"basic"`` (:func:`normalize_caption`).

    Raises:
        ValueError: If ``normalize`` is not one of the modes.
    """

    #: Updates are held back (as references to the captions) until this many captions wait.
    HOLD: int = 8192
    higher_is_better = False
    total = _DeferredState()
    hashes = _DeferredState()

    def __init__(self, normalize: Literal["none", "basic"] = "none") -> None:
        super().__init__()
        if normalize not in ("none", "basic"):
            raise ValueError(f"normalize must be 'none' or 'basic', got {normalize!r}")
        self.normalize = normalize
        self._held: list[str] = []  # captions not hashed yet
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self._add_list_state("hashes", torch.zeros(0, dtype=torch.long))
        self._deduplicated = 0  # hashes in the deduplicated first chunk
        self._pending = 0  # hashes appended since
        self._sorted: torch.Tensor | None = None  # that first chunk, sorted (while it is the first chunk)

    def update(self, captions: Sequence[str]) -> None:
        """Add a batch of captions (strings; the same caption may repeat).

        Raises:
            TypeError: If ``captions`` is a single string or holds a non-string.
        """
        if isinstance(captions, str):
            raise TypeError("captions must be a sequence of strings, not one string")
        if len(captions) + len(self._held) < self.HOLD:
            _joined(captions, "")  # checks the types now, whenever the batch is hashed
            self._held.extend(captions)
            return
        if self._held:
            captions = [*self._held, *captions]
            self._held = []
        self._add_keys(_caption_keys(captions, self.normalize))

    def _hash_held(self) -> None:
        """Hash the held-back captions into the state."""
        held, self._held = self._held, []
        self._add_keys(_caption_keys(held, self.normalize))

    def _add_keys(self, keys: np.ndarray) -> None:
        state = self.__dict__
        state["_state_total"] += keys.size
        state["_state_hashes"] = _appended(state["_state_hashes"], torch.from_numpy(keys).to(self.device))
        self._pending += keys.size
        if self._pending >= max(self._deduplicated // 2, _MIN_COMPACT):
            self._deduplicate()

    def _chunks(self) -> tuple[list[torch.Tensor], bool]:
        """The state's chunks, and whether the first is the sorted deduplicated one."""
        chunks = _as_chunks(self.hashes)
        return chunks, bool(chunks) and chunks[0] is self._sorted

    def _deduplicate(self) -> None:
        chunks, sorted_first = self._chunks()
        self.hashes, self._sorted = [], None
        unique = _unique_of(chunks, sorted_first)
        self.hashes, self._sorted = [unique], unique
        self._deduplicated, self._pending = unique.numel(), 0

    def reset(self) -> None:
        """Forget every caption added so far."""
        self._held = []
        super().reset()
        self._deduplicated = self._pending = 0
        self._sorted = None

    def compute(self) -> dict[str, torch.Tensor]:
        """Redundancy over every caption added (and gathered from other processes).

        Returns ``redundancy`` (float64 fraction in ``[0, 1)``; times 100 for the paper's
        percentages; NaN before any caption), ``unique`` and ``total`` (int64 counts).
        """
        chunks, sorted_first = self._chunks()
        unique = _unique_of(chunks, sorted_first, count_only=True).cpu()
        total = self.total.detach().cpu()
        redundancy = 1.0 - unique.double() / total.double() if total > 0 else torch.tensor(float("nan"))
        return {"redundancy": redundancy.double(), "unique": unique, "total": total}
