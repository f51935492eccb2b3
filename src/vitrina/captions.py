"""Natural-language captions from catalogue metadata, the way the LoC maps paper built them:

    "A map of Boston harbor from 1775, in Boston, Massachusetts. Scale 1:12,000."

Title without square brackets and cut at the first ':'; the format; the date; places not already
in the title; and notes that mention a scale or carry no digits (call numbers and counts are
noise), at most two. No "A map of" before a title that says map, plan, chart or atlas; the
title keeps its case; a year already in the title is not repeated. Deterministic (the paper
picked a random rendering of the date).
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


# Words that already say what kind of thing a title is: no "A map of" before "Plan of Bergen".
_KIND_WORDS = {
    "map": ("map", "maps", "plan", "plans", "chart", "charts", "atlas", "atlases", "plat", "plats"),
    "photo": ("photo", "photos", "photograph", "photographs"),
    "print": ("print", "prints", "engraving", "etching", "lithograph", "woodcut"),
}


_COMMON_LEADS = {"bird's", "birds", "bird's-eye", "view", "views", "panoramic", "panorama", "perspective", "sketch", "general", "outline", "part",
                 "old", "official", "topographical", "geological", "historical", "road", "railroad", "street", "city", "county", "town", "harbor", "harbour",
                 "bay", "river", "coast", "environs", "vicinity", "portrait", "scene", "bridge", "church"}  # fmt: skip


def build_caption(metadata: dict[str, Any]) -> str:
    title = next(iter(_values(metadata.get("title"))), "").strip()
    title = re.sub(r"[\[\]]", "", title).split(":")[0].strip().rstrip(".,;")
    if not title:
        return ""
    fmt = next(iter(_values(metadata.get("original_format") or metadata.get("format"))), "").strip().lower()
    fmt = {"maps": "map", "photos": "photo", "prints": "print"}.get(fmt, fmt)
    words = set(re.findall(r"[a-z]+", title.lower()))
    head = title
    says_kind = words & set(_KIND_WORDS.get(fmt, (fmt,)))
    if (
        fmt
        and fmt not in ("collection", "web page")
        and not says_kind
        and not title.lower().startswith(("a ", "an ", "the "))
    ):
        # The title keeps its case ("A map of New York", "A map of Boston harbor"), except a common
        # word that only starts it ("A map of bird's eye view of Albany").
        first, _, rest = title.partition(" ")
        lead = (
            first.lower() + (" " + rest if rest else "")
            if first.lower() in _COMMON_LEADS and not rest[:1].isupper()
            else title
        )
        head = f"{'An' if fmt[0] in 'aeiou' else 'A'} {fmt} of {lead}"
    date = next(iter(_values(metadata.get("date"))), "").strip()
    year = re.match(r"^\d{3,4}", date)
    if year and not re.search(rf"(?<!\d){year.group()}(?!\d)", title):
        head += f" from {year.group()}"
    places: list[str] = []
    for place in _values(metadata.get("location") or metadata.get("place") or metadata.get("locations")):
        place = place.strip()
        if place and place.lower() not in title.lower() and place.lower() not in (p.lower() for p in places):
            places.append(place.title() if place.islower() else place)
    if places:
        head += ", in " + ", ".join(places[:4])
    notes = [n.strip().rstrip(".") for n in _values(metadata.get("notes") or metadata.get("note"))]
    keep = [
        n for n in notes if n and "division" not in n.lower() and ("scale" in n.lower() or not re.search(r"\d", n))
    ][:2]
    return ". ".join([head, *keep]) + "."


def add_caption(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with a ``caption`` (kept if the source already has one)."""
    if metadata.get("caption"):
        return metadata
    caption = build_caption(metadata)
    return {**metadata, "caption": caption} if caption else metadata


_NUMBERING = re.compile(
    r"\b(sheet|sheets|plate|plates|no|nr|vol|volume|part|page|pl|p|pt|blad|bl|sect|section|index)\b|\d+|[^\w\s]|_"
)


def title_stem(metadata: dict[str, Any]) -> str:
    """A title without its numbering ("Sanborn map of Boston, sheet 12" and "..., sheet 13" share
    one stem): lower-case words, digits and sheet/plate/volume words removed."""
    title = next(iter(_values(metadata.get("title"))), "").lower()
    return " ".join(_NUMBERING.sub(" ", title).split())


def group_keys(item_id: str, metadata: dict[str, Any]) -> list[str]:
    """What ties an item to near-duplicates that must land on the same side of a split: its series,
    its IIIF manifest or catalogue item (sheets and pages of one object) and its title stem."""
    keys = [f"series:{v}" for v in _values(metadata.get("series"))[:3]]
    for key in ("manifest", "loc_id", "item"):
        keys += [f"{key}:{v}" for v in _values(metadata.get(key))[:1]]
    stem = title_stem(metadata)
    if stem:
        keys.append(f"title:{stem}")
    return keys or [f"id:{item_id}"]
