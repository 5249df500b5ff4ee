"""Text normalisation the scorers share: ``normalize_text`` (NFKC, case, no whitespace or punctuation), the CJK
character range, and ``cell_text`` (a table cell as text, missing as empty)."""

from __future__ import annotations

import math
import unicodedata

CJK = r"\u3400-\u4dbf\u4e00-\u9fff"  # CJK ideographs (extension A and the unified block), for character classes


def normalize_text(text: str) -> str:
    """NFKC (full/half width), casefold, and drop whitespace and punctuation (symbols such as emoji stay)."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "Z", "C")))


def cell_text(value) -> str:
    """A table cell as text: None and NaN (a missing answer or reference) are empty."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
