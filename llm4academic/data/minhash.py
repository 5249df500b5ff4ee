"""Near-duplicate detection at corpus scale: character shingles hashed in NumPy, MinHash signatures in Rust
(``rensa``), LSH banding in NumPy, and the sequential keep-the-first rule applied only where bands collide.

The semantics are the datasketch implementation's the kit used before: a record's shingles are the ``k``-character
substrings of its normalised text (the whole text when it is shorter); candidates come from LSH bands tuned by
datasketch's rule for ``max(0.1, threshold - 0.15)``; a record is removed when the MinHash estimate of its Jaccard
similarity with an earlier *kept* record that shares a band reaches ``threshold`` (equal signature values /
``num_perm``), and the earliest such record is the one it duplicates. Only the MinHash permutations differ
(rensa's instead of datasketch's), so decisions may differ only within the estimator's error.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
from rensa import RMinHash

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_POLY = np.uint64(0x100000001B3)  # odd multiplier of the polynomial window hash


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread 64-bit hashes from structured ones (a new array)."""
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def window_hashes(codes: np.ndarray, k: int) -> np.ndarray:
    """Polynomial hash of every window of ``k`` consecutive values (uint64, wrapping): ``len(codes) - k + 1``."""
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    h = codes[:n].astype(np.uint64)
    for j in range(1, k):
        h *= _POLY
        h += codes[j : j + n]
    return h


@lru_cache(maxsize=1)
def _word_chars() -> np.ndarray:
    """``table[code point]``: the character survives ``clean.normalise`` (a word character, not ``_``)."""
    word = re.compile(r"\w")
    table = np.fromiter((bool(word.match(chr(c))) for c in range(0x110000)), bool, 0x110000)
    table[ord("_")] = False
    return table


def normalised_codes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``clean.normalise`` of each text as code points, concatenated (uint32), with each text's length: NFKC, lower
    case, then only the word characters but ``_`` kept (the regex's ``[\\s\\W_]+`` dropped), here in NumPy."""
    low = [unicodedata.normalize("NFKC", t).lower() for t in texts]
    codes = np.frombuffer("".join(low).encode("utf-32-le"), np.uint32)
    keep = _word_chars()[codes]
    ends = np.cumsum(np.fromiter(map(len, low), np.int64, len(low)))
    kept = np.concatenate([[0], np.cumsum(keep)])
    lens = kept[ends] - kept[np.concatenate([[0], ends[:-1]])]
    return codes[keep], lens.astype(np.int64)


def shingle_hashes(codes: np.ndarray, lens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of each text's ``k``-character shingles (texts as ``normalised_codes``), flat, with row
    offsets. A text shorter than ``k`` characters is one shingle: itself (hashed with its length, so it equals no
    window)."""
    with np.errstate(over="ignore"):
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        long = lens >= k
        counts = np.where(long, lens - k + 1, 1)
        out = np.empty(int(counts.sum()), np.uint64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
        if long.any():
            c = counts[long]
            local = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)  # window number within its text
            local += np.repeat(starts[long], c)
            out[np.repeat(long, counts)] = mix64(window_hashes(codes, k)[local])
        for i in np.flatnonzero(~long).tolist():  # rare: very short texts
            h = window_hashes(codes[starts[i] : starts[i] + lens[i]], int(lens[i]))
            tag = np.uint64(int(lens[i]) + 1) << np.uint64(56)
            out[int(offsets[i])] = mix64(np.array([h[0] if len(h) else 0], np.uint64) ^ tag)[0]
    return out, offsets


def signatures(codes: np.ndarray, lens: np.ndarray, k: int, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (texts × ``num_perm``, uint32) of the texts' shingle sets, by rensa."""
    if not len(lens):
        return np.zeros((0, num_perm), np.uint32)
    hashes, offsets = shingle_hashes(codes, lens, k)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, num_perm, seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(lens), num_perm)


# --------------------------------------------------------------------------------------------- LSH


@lru_cache(maxsize=32)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's ``MinHashLSH`` choice of (bands, rows per band): the least sum of false positive and false
    negative probability mass, weights 0.5/0.5 (the same integrals, by SciPy's ``quad``)."""
    from scipy.integrate import quad

    best, params = float("inf"), (1, num_perm)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = quad(lambda s, b=b, r=r: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]
            fn = quad(lambda s, b=b, r=r: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]
            err = fp * 0.5 + fn * 0.5
            if err < best:
                best, params = err, (b, r)
    return params


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per (record, band) of the band's signature values (a collision only adds a candidate)."""
    out = np.empty((len(sigs), bands), np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            out[:, b] = mix64(window_hashes_rows(sigs[:, b * rows : (b + 1) * rows]) ^ np.uint64(b))
    return out


def window_hashes_rows(block: np.ndarray) -> np.ndarray:
    h = np.zeros(len(block), np.uint64)
    for j in range(block.shape[1]):
        h = mix64(h * _POLY + block[:, j].astype(np.uint64))
    return h


def colliding(bh: np.ndarray) -> np.ndarray:
    """Rows that share at least one band hash with another row."""
    hit = np.zeros(len(bh), bool)
    for b in range(bh.shape[1]):
        col = bh[:, b]
        order = np.argsort(col, kind="stable")
        s = col[order]
        same = np.zeros(len(s), bool)
        same[1:] |= s[1:] == s[:-1]
        same[:-1] |= s[1:] == s[:-1]
        hit[order[same]] = True
    return hit


def duplicates(sigs: np.ndarray, threshold: float, bands: int, rows: int) -> dict[int, tuple[int, float]]:
    """``{row: (earliest kept row it duplicates, estimated similarity)}`` in row order, the rule above."""
    num_perm = sigs.shape[1]
    bh = band_hashes(sigs, bands, rows)
    cand = np.flatnonzero(colliding(bh))
    tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]
    found: dict[int, tuple[int, float]] = {}
    for i, row in zip(cand.tolist(), bh[cand].tolist(), strict=True):
        near: set[int] = set()
        for table, h in zip(tables, row, strict=True):
            near.update(table.get(h, ()))
        if near:
            js = np.fromiter(sorted(near), np.int64, len(near))
            sims = np.count_nonzero(sigs[js] == sigs[i], axis=1) / float(num_perm)
            ok = sims >= threshold
            if ok.any():
                found[i] = (int(js[ok][0]), float(sims[ok][0]))
                continue
        for table, h in zip(tables, row, strict=True):
            table.setdefault(h, []).append(i)
    return found
