"""Natural-language captions from catalogue metadata, the way the LoC maps paper built them:

    "A map of Boston harbor from 1775, in Boston, Massachusetts. Scale 1:12,000."

Title without square brackets (the part after its first ':' as a sentence of its own); the
format; the date; places not already in the title; and notes that mention a scale or carry no
digits (call numbers and counts are noise), at most two. No "A map of" before a title that says
map, plan, chart or atlas; the title keeps its case; a year already in the title is not
repeated. A title in another language gets no English frame ("Karte von Norwegen, 1850.").
Deterministic (the paper picked a random rendering of the date).
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


# A lead that names a place takes "the" ("A map of the environs of Bergen"); one that takes no
# article; the rest (a picture or an adjective) take "a" / "an" ("A photo of a view of Bergen").
_THE_LEADS = {"city", "county", "town", "harbor", "harbour", "bay", "river", "coast", "environs", "vicinity", "road", "railroad", "street",
              "bridge", "church"}  # fmt: skip
_BARE_LEADS = {"part", "views"}

# Words that mark a title in another language (no English frame around it: "Karte von Norwegen,
# 1850.", not "A map of Karte von Norwegen from 1850."), and English ones that mark it English.
_FOREIGN = {"von", "der", "die", "das", "und", "des", "dem", "den", "nach", "mit", "zu", "im", "bei", "über", "karte", "ansicht", "stadt", "gegend",
            "og", "av", "af", "med", "fra", "til", "kart", "kort", "ved", "paa", "på", "omegn", "byen", "karta", "och", "från", "över", "utsikt", "prospekt",
            "du", "la", "le", "les", "et", "carte", "vue", "di", "della", "del", "delle", "carta", "veduta", "pianta", "mapa", "vista", "y",
            "van", "het", "kaart", "en", "gezicht", "tabula", "nova", "descriptio", "delineatio", "ad", "de"}  # fmt: skip
_ENGLISH = {
    "of",
    "the",
    "and",
    "from",
    "in",
    "with",
    "map",
    "view",
    "to",
    "on",
    "at",
    "by",
    "for",
    "near",
    "showing",
    "plan",
    "chart",
}
_ENGLISH_LANGUAGES = {"english", "eng", "en", "en-us", "en-gb"}


def is_english(title: str, metadata: dict[str, Any] | None = None) -> bool:
    """Whether a title reads as English: the record's ``language`` where it has one, else its
    words (a word of another language's grammar and none of English's: not English)."""
    languages = [v.strip().lower() for v in _values((metadata or {}).get("language"))]
    if languages:
        return any(v in _ENGLISH_LANGUAGES for v in languages)
    words = set(re.findall(r"[^\W\d_]+", title.lower()))
    return not (words & _FOREIGN) or bool(words & _ENGLISH)


def _split_title(title: str) -> tuple[str, str]:
    """The title without square brackets, and the part after its first ':' (a scale's "1:12,000" is not cut)."""
    parts = re.split(r"(?<!\d):|:(?!\d)", re.sub(r"[\[\]]", "", title), maxsplit=1)  # not digit:digit
    main, rest = parts[0], parts[1] if len(parts) > 1 else ""
    return main.strip().rstrip(".,;/ "), rest.strip().rstrip(".,;/ ")


def build_caption(metadata: dict[str, Any]) -> str:
    full = next(iter(_values(metadata.get("title"))), "").strip()
    title, subtitle = _split_title(full)
    if not title:
        return ""
    english = is_english(full, metadata)
    fmt = next(iter(_values(metadata.get("original_format") or metadata.get("format"))), "").strip().lower()
    fmt = {"maps": "map", "photos": "photo", "prints": "print"}.get(fmt, fmt)
    words = set(re.findall(r"[a-z]+", title.lower()))
    head = title
    says_kind = words & set(_KIND_WORDS.get(fmt, (fmt,)))
    if (
        english
        and fmt
        and fmt not in ("collection", "web page")
        and not says_kind
        and not title.lower().startswith(("a ", "an ", "the "))
    ):
        # The title keeps its case ("A map of New York", "A map of Boston harbor"), except a common
        # word that only starts it, which takes an article ("A photo of a view of Bergen").
        first, _, rest = title.partition(" ")
        lead = title
        if first.lower() in _COMMON_LEADS and not rest[:1].isupper():
            lower = first.lower() + (" " + rest if rest else "")
            article = (
                ""
                if first.lower() in _BARE_LEADS
                else "the "
                if first.lower() in _THE_LEADS
                else "an "
                if lower[0] in "aeiou"
                else "a "
            )
            lead = article + lower
        head = f"{'An' if fmt[0] in 'aeiou' else 'A'} {fmt} of {lead}"
    date = next(iter(_values(metadata.get("date"))), "").strip()
    year = re.match(r"^\d{3,4}", date)
    if year and not re.search(rf"(?<!\d){year.group()}(?!\d)", full):
        head += f" from {year.group()}" if english else f", {year.group()}"
    places: list[str] = []
    for place in _values(metadata.get("location") or metadata.get("place") or metadata.get("locations")):
        place = place.strip()
        if place and place.lower() not in full.lower() and place.lower() not in (p.lower() for p in places):
            places.append(place.title() if place.islower() else place)
    if places:
        head += (", in " if english else ", ") + ", ".join(places[:4])
    notes = [n.strip().rstrip(".") for n in _values(metadata.get("notes") or metadata.get("note"))]
    keep = [
        n for n in notes if n and "division" not in n.lower() and ("scale" in n.lower() or not re.search(r"\d", n))
    ][:2]
    sentences = [head] + ([subtitle[:1].upper() + subtitle[1:200]] if subtitle else []) + keep
    return ". ".join(sentences) + "."


def caption_source(item_id: str, metadata: dict[str, Any]) -> str:
    """Where an item's caption comes from: "caption" (the record has one), "title" (a catalogue
    title), or "file name" (a folder's file name or a URL list's id standing in for a title:
    such captions measure how files were named, not search)."""
    if metadata.get("caption"):
        return "caption"
    title = next(iter(_values(metadata.get("title"))), "").strip()
    filename = str(metadata.get("filename") or "")
    stem = filename.rsplit(".", 1)[0]
    if filename and title in (stem, stem.replace("_", " ")):
        return "file name"
    if title and title == item_id:
        return "file name"
    return "title"


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
