"""The search options, declared once: name, type, default, bounds, help, and where each applies.

Every interface reads this table: ``Query`` validates its fields with the bounds here; the CLI's
``search`` command gets its options from ``click_options``; the HTTP GET and POST routes and so
the OpenAPI schema are generated from it (``service/api.py``); ``Collection.search`` and the
service's ``SearchParams`` are checked against it by tests/test_options.py, which fails when an
option is added to one interface and not the others.

Interfaces: ``python`` (``Collection.search`` keywords), ``query`` (``Query`` fields), ``cli``
(``vitrina search``), ``get`` and ``post`` (``/api/search``)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .filters import MAX_FILTERS

MAX_TERMS = 32  # per query: each text term is a model call, each image term a decode
MAX_OFFSET = 10_000  # the deepest page the HTTP API serves

PYTHON, QUERY, CLI, GET, POST = "python", "query", "cli", "get", "post"
LIBRARY = frozenset({PYTHON, QUERY, CLI})
HTTP = frozenset({GET, POST})
EVERYWHERE = LIBRARY | HTTP

__all__ = ["MAX_OFFSET", "MAX_TERMS", "OPTIONS", "Option", "click_options", "for_interface", "option"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Option:
    """One search option. ``name`` is its Python keyword; the other interfaces' spellings are
    derived (``--min-score``) unless given (``http="q"``, ``field="filters"``)."""

    name: str
    type: type  # of one value: str, float, int or bool
    default: Any
    help: str
    interfaces: frozenset[str] = EVERYWHERE
    multiple: bool = False  # repeatable: a list of values (default: none)
    optional: bool = False  # may be left unset (None)
    lo: float | None = None  # inclusive bounds, checked by Query (and by the CLI and HTTP types)
    hi: float | None = None
    ends: tuple[str, str] = ("", "")  # what the bounds mean, for messages: ("text only", "image only")
    choices: tuple[str, ...] = ()
    max_items: int | None = None  # of a repeatable option, per request
    field: str | None = None  # the Query field it fills, where named otherwise ("terms", "filters")
    http: str | None = None  # the HTTP parameter, where named otherwise ("q")
    flags: tuple[str, ...] | None = None  # the CLI's spellings; None: --name; () : the TERMS argument
    dest: str | None = None  # the CLI's variable, where named otherwise ("images")
    deprecated: tuple[str, ...] = ()  # old spellings (CLI flags, HTTP names) still accepted, with a warning
    # Per interface: another default or other bounds (the web API pages by 24; the CLI caps --limit).
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    bounds: Mapping[str, tuple[float | None, float | None]] = dataclasses.field(default_factory=dict)

    @property
    def query_field(self) -> str:
        return self.field or self.name

    @property
    def http_name(self) -> str:
        return self.http or self.name

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return ("--" + self.name.replace("_", "-"),) if self.flags is None else self.flags

    @property
    def cli_dest(self) -> str:
        return self.dest or self.name

    def default_for(self, interface: str) -> Any:
        if interface in self.defaults:
            return self.defaults[interface]
        if self.multiple:
            return [] if interface in HTTP else ()
        return self.default

    def bounds_for(self, interface: str) -> tuple[float | None, float | None]:
        key = "http" if interface in HTTP else interface
        return self.bounds.get(key, (self.lo, self.hi))

    def check(self, value: Any) -> str | None:
        """Why ``value`` is out of this option's (library) bounds or choices, or None."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"Unknown {self.name} {value!r}; use {' or '.join(repr(c) for c in self.choices)}."
        lo, hi = self.lo, self.hi
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            low, high = (f" ({e})" if e else "" for e in self.ends)
            if hi is None:
                return f"{self.name} must be at least {lo:g}, not {value}."
            return f"{self.name} must be between {lo:g}{low} and {hi:g}{high}, not {value}."
        return None


OPTIONS: tuple[Option, ...] = (
    Option("text", str, (), "Text terms; '2:ship' weights a term, '-0.5:colour' pushes it down.", multiple=True,
           max_items=MAX_TERMS, field="terms", http="q", flags=(), dest="terms"),
    Option("image", str, (), "Query image: a file, an http(s) URL, or an indexed item's id. Repeatable; 'W:PATH' weights it.",
           interfaces=LIBRARY, multiple=True, field="terms", flags=("-i", "--image"), dest="images"),
    Option("item", str, (), "Ids of indexed items as image terms; '-1:ID' = less like this.", interfaces=HTTP,
           multiple=True, max_items=MAX_TERMS),
    Option("image_url", str, None, "An http(s) image URL on a public host.", interfaces=HTTP, optional=True),
    Option("upload", str, None, "Token returned by POST /api/uploads.", interfaces=HTTP, optional=True),
    Option("image_file", bytes, None, "A query image (JPEG, PNG, GIF, WebP, TIFF, BMP).", interfaces=frozenset({POST}),
           optional=True, http="image"),
    Option("alpha", float, None, "Text/image mix: 0 = text only, 1 = image only (LoC paper's alpha).", optional=True,
           lo=0.0, hi=1.0, ends=("text only", "image only"), flags=("-a", "--alpha")),
    Option("where", str, (), "Metadata filter, e.g. 'date>=1700', 'place=Boston', 'title~harbour'. Repeatable (all must hold).",
           multiple=True, max_items=MAX_FILTERS, field="filters", flags=("-w", "--where")),
    Option("min_score", float, None, "Leave out hits scoring below this.", optional=True, bounds={"http": (-1.0, 1.0)}),
    Option("limit", int, 10, "How many hits.", lo=1, flags=("-n", "--limit"), defaults={GET: 24, POST: 24},
           bounds={CLI: (1, 10_000)}),
    Option("offset", int, 0, "Skip this many hits (paging).", lo=0, bounds={"http": (0, MAX_OFFSET)}),
    Option("include_self", bool, False, "When querying by an indexed item, keep it in the hits.", interfaces=LIBRARY),
    Option("space", str, None, "Which embedding space to search (default: the first).", interfaces=EVERYWHERE - {QUERY},
           optional=True),
    Option("keywords", str, "", "Words ranked by BM25 over title, caption, subjects, notes and context text (OCR); "
           "alone, or fused with the text and image terms.", flags=("-k", "--keywords")),
    Option("keyword_weight", float, None, "The keyword side's share in the fusion (default 0.4 with keywords; "
           "without them, the text terms are reused as keywords). Not alpha.", optional=True, lo=0.0, hi=1.0,
           ends=("CLIP only", "keywords only"), deprecated=("--text-weight", "text_weight")),
    Option("fusion", str, "weighted", "How CLIP and keyword rankings are fused.", choices=("weighted", "rrf")),
    Option("include_hidden", bool, False, "Also show items hidden by `vitrina prune --hide`.", interfaces=LIBRARY),
)  # fmt: skip

_BY_NAME = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    return _BY_NAME[name]


def for_interface(interface: str) -> Iterator[Option]:
    return (o for o in OPTIONS if interface in o.interfaces)


def click_options(*, exclude: tuple[str, ...] = ()) -> Callable[[F], F]:
    """A decorator adding the declared CLI options (not the TERMS argument, not ``exclude``) to
    a click command. A deprecated spelling (``--text-weight``) is a hidden option of its own:
    it still works, says so on stderr, and gives way to the new spelling when both are given."""
    import click

    declared = [o for o in for_interface(CLI) if o.cli_flags and o.name not in exclude]

    def apply(f: F) -> F:
        aliases = {f"_deprecated_{o.name}": o for o in declared if o.deprecated}

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for key, o in aliases.items():
                value = kwargs.pop(key, None)
                if value is not None:
                    old = next(d for d in o.deprecated if d.startswith("-"))
                    click.echo(f"Warning: {old} is deprecated; use {o.cli_flags[-1]}.", err=True)
                    if kwargs.get(o.cli_dest) is None:
                        kwargs[o.cli_dest] = value
            return f(*args, **kwargs)

        out: Any = wrapper
        for o in reversed(declared):  # click lists options in decorator order, top first
            for key, alias in aliases.items():
                if alias is o:
                    flags = tuple(d for d in o.deprecated if d.startswith("-"))
                    out = click.option(*flags, key, type=_click_type(o, click), hidden=True)(out)
            out = click.option(*o.cli_flags, o.cli_dest, help=o.help, **_click_kwargs(o, click))(out)
        return out  # type: ignore[no-any-return]

    return apply


def _click_type(o: Option, click: Any) -> Any:
    lo, hi = o.bounds_for(CLI)
    if o.choices:
        return click.Choice(list(o.choices))
    if o.type is float and (lo is not None or hi is not None):
        return click.FloatRange(lo, hi)
    if o.type is int and (lo is not None or hi is not None):
        return click.IntRange(None if lo is None else int(lo), None if hi is None else int(hi))
    return o.type


def _click_kwargs(o: Option, click: Any) -> dict[str, Any]:
    if o.type is bool:
        return {"is_flag": True}
    kwargs: dict[str, Any] = {"type": _click_type(o, click), "multiple": o.multiple}
    if not o.multiple and not o.optional:
        kwargs.update(default=o.default_for(CLI), show_default=o.default_for(CLI) not in ("", 0))
    return kwargs
