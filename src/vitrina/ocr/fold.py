"""Folding for words read by a machine: a search for "Tromsø" finds "tromso" (PP-OCR cannot emit
ø) and one for "Tromso" finds "Tromsø". Case, accents and the letters Unicode does not decompose
(ø, æ, ß, œ, þ, ð, ł, đ, the long s of Fraktur) are folded to plain Latin letters."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold", "fold_words"]

_TABLE = str.maketrans({"ø": "o", "æ": "ae", "ß": "ss", "œ": "oe", "þ": "th", "ð": "d", "ł": "l", "đ": "d",
                        "ſ": "s", "ı": "i", "ħ": "h", "ŧ": "t"})  # fmt: skip
_WORD = re.compile(r"\w+")


def fold(text: str) -> str:
    """``text`` casefolded, without accents, with ø→o, æ→ae, ß→ss and friends."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.translate(_TABLE)


def fold_words(text: str) -> list[str]:
    """The folded words of ``text`` (letters and digits; punctuation dropped)."""
    return _WORD.findall(fold(text))
