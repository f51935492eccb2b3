"""Natural-language captions from catalogue metadata, the way the LoC maps paper built them:

    "A map of Boston harbor from 1775, in Boston, Massachusetts. Scale 1:12,000."

Title without square brackets and cut at the first ':'; the format; the date; places not already
in the title; and notes that mention a scale or carry no digits (call numbers and counts are
noise), at most two. Deterministic (the paper picked a random rendering of the date).
"""

from __future__ import annotations

import re
from typing import Any


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [str(k) for k in value]  # LoC's one-key dicts, e.g. {"boston": "https://..."}
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _values(item)]
    return [str(value)]


def build_caption(metadata: dict[str, Any]) -> str:
    title = next(iter(_values(metadata.get("title"))), "").strip()
    title = re.sub(r"[\[\]]", "", title).split(":")[0].strip().rstrip(".,;")
    if not title:
        return ""
    fmt = next(iter(_values(metadata.get("original_format") or metadata.get("format"))), "").strip().lower()
    fmt = {"maps": "map", "photos": "photo", "prints": "print"}.get(fmt, fmt)
    head = title
    if fmt and fmt not in ("collection", "web page") and not title.lower().startswith(("a ", "an ", "the ", fmt)):
        head = f"{'An' if fmt[0] in 'aeiou' else 'A'} {fmt} of {title[0].lower() + title[1:] if title[:2].istitle() and not title[:2].isupper() else title}"
    date = next(iter(_values(metadata.get("date"))), "").strip()
    year = re.match(r"^\d{3,4}", date)
    if year:
        head += f" from {year.group()}"
    places: list[str] = []
    for place in _values(metadata.get("location") or metadata.get("place") or metadata.get("locations")):
        place = place.strip()
        if place and place.lower() not in title.lower() and place.lower() not in (p.lower() for p in places):
            places.append(place.title() if place.islower() else place)
    if places:
        head += ", in " + ", ".join(places[:4])
    notes = [n.strip().rstrip(".") for n in _values(metadata.get("notes") or metadata.get("note"))]
    keep = [n for n in notes if n and "division" not in n.lower() and ("scale" in n.lower() or not re.search(r"\d", n))][:2]
    return ". ".join([head, *keep]) + "."


def add_caption(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with a ``caption`` (kept if the source already has one)."""
    if metadata.get("caption"):
        return metadata
    caption = build_caption(metadata)
    return {**metadata, "caption": caption} if caption else metadata
