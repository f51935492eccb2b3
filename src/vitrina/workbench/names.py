"""Checks on what a curator types: set names, questions, tag names and who did it. They are
untrusted text (a browser sends them): bounded, without control characters, and set names
written so that ``--where set=NAME`` finds them again."""

from __future__ import annotations

import getpass
import re
import unicodedata

from ..errors import QueryError

__all__ = ["MAX_IDS", "MAX_NOTE", "MAX_QUESTION", "MAX_SET_NAME", "check_answer", "check_ids", "check_note",
           "check_question", "check_set_name", "check_who", "default_who", "tag_for"]  # fmt: skip

MAX_SET_NAME = 80
MAX_QUESTION = 200
MAX_WHO = 64
MAX_NOTE = 2000
MAX_IDS = 100_000  # items added, labelled or removed in one call
MAX_ID = 1000
_SET_NAME = re.compile(r"[\w][\w .\-]*", re.UNICODE)  # letters, digits, _ (any script), spaces, '.', '-'
ANSWERS = ("yes", "no", "skip")


def _plain(text: object, what: str, limit: int) -> str:
    if not isinstance(text, str):
        raise QueryError(f"The {what} must be text, not {type(text).__name__}.")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise QueryError(f"The {what} is empty.")
    if len(text) > limit:
        raise QueryError(f"The {what} is {len(text)} characters long; at most {limit} are allowed.")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in text):
        raise QueryError(f"The {what} {text[:40]!r} holds control characters; write plain text.")
    return text


def check_set_name(name: object) -> str:
    text = _plain(name, "set name", MAX_SET_NAME)
    if not _SET_NAME.fullmatch(text):
        raise QueryError(
            f"Set name {text[:40]!r}: use letters, digits, spaces, '_', '.' and '-' (it is used as --where set=NAME)."
        )
    return text


def check_question(question: object) -> str:
    return _plain(question, "question", MAX_QUESTION)


def check_note(note: object) -> str:
    return "" if note in (None, "") else _plain(note, "note", MAX_NOTE)


def check_who(who: object) -> str:
    return _plain(who, "name of who did it", MAX_WHO)


def default_who() -> str:
    try:
        return check_who(getpass.getuser())
    except (QueryError, OSError, KeyError):
        return "unknown"


def check_answer(answer: object) -> str:
    text = str(answer).strip().casefold()
    short = {"y": "yes", "n": "no", "s": "skip"}
    text = short.get(text, text)
    if text not in ANSWERS:
        raise QueryError(f"Answer {str(answer)[:20]!r}: use yes, no or skip (y, n, s).")
    return text


def check_ids(ids: object) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise QueryError("Give the item ids as a list.")
    if len(ids) > MAX_IDS:
        raise QueryError(f"{len(ids)} ids in one call; at most {MAX_IDS} are allowed.")
    out = []
    for i in ids:
        if not isinstance(i, str) or not i or len(i) > MAX_ID:
            raise QueryError(f"Item id {str(i)[:40]!r}: ids are non-empty text of at most {MAX_ID} characters.")
        out.append(i)
    return list(dict.fromkeys(out))


def tag_for(question: str) -> str:
    """The tag (and probe) name a question's classifier writes: 'Is this a blank page?' ->
    'is_this_a_blank_page' (letters, digits and '_', at most 48 characters)."""
    ascii_text = unicodedata.normalize("NFKD", question).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.casefold()).strip("_")[:48].strip("_")
    return slug or "question"
