"""Who writes: named tokens, so the server, not the client, says who made a set, a label or a
correction. ``VITRINA_TOKENS="alice:TOKEN1,bob:TOKEN2"`` (or ``--tokens``, or ``--tokens
@FILE`` with one ``name:token`` a line, ``#`` comments) gives each person a token of their own;
a request bearing one is recorded as that person, whatever ``who`` its body says. The single
``--token`` keeps working beside them: its requests are recorded with the ``who`` they send (or
"web"), as before. docs/workbench.md."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..workbench.names import check_who

__all__ = ["MIN_TOKEN", "parse_tokens"]

MIN_TOKEN = 16  # characters: a named token is a password; `python -c "import secrets; print(secrets.token_urlsafe())"`
MAX_PEOPLE = 1000


def parse_tokens(spec: str | None) -> dict[str, str]:
    """``name:token`` pairs (comma- or line-separated; ``@FILE`` reads them from a file) as
    {token: name}. A short token, a bad name or a token given twice is refused, naming it."""
    if not spec or not spec.strip():
        return {}
    text = spec.strip()
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"Cannot read the tokens file {path}: {e.strerror or e}.") from None
    out: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
    for n, entry in enumerate([e for e in entries if e], 1):
        name, sep, token = entry.partition(":")
        if not sep or not token.strip():
            raise ConfigError(f"Token entry {n} has no ':'; write name:token (e.g. alice:{'x' * MIN_TOKEN}).")
        name, token = check_who(name.strip()), token.strip()
        if len(token) < MIN_TOKEN:
            raise ConfigError(
                f"The token of {name!r} is {len(token)} characters; use at least {MIN_TOKEN} (secrets.token_urlsafe())."
            )
        if token in out:
            raise ConfigError(f"{name!r} and {out[token]!r} have the same token; give each person their own.")
        out[token] = name
    if len(out) > MAX_PEOPLE:
        raise ConfigError(f"{len(out)} named tokens; at most {MAX_PEOPLE}.")
    return out
