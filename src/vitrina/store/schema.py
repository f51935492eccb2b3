"""The database schema: version 1 as the first release wrote it, then numbered migrations, each
one transaction (a kill leaves the previous version). ``upgrade`` brings a database to
``SCHEMA_VERSION``; collections of every earlier release open unchanged (tests/test_store.py).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreCorrupt
from ..faults import fault_point
from .items import refresh_values
from .sql import transaction

__all__ = ["FTS_COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "schema_version", "statements", "upgrade"]

SCHEMA_VERSION = 12
# Version 1, as the first release wrote it; later versions are the numbered migrations below.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    image       TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    context     TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'pending',  -- pending | ok | failed (for this fingerprint)
    reason      TEXT,
    detail      TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
CREATE TABLE IF NOT EXISTS spaces (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    rows        INTEGER NOT NULL DEFAULT 0,  -- committed rows of the vector file
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    space       TEXT NOT NULL REFERENCES spaces(name) ON DELETE CASCADE,
    item_id     TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    row         INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,  -- the item fingerprint this vector was computed from
    PRIMARY KEY (space, item_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS vectors_row ON vectors(space, row);
CREATE TABLE IF NOT EXISTS tags (
    item_id     TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,  -- e.g. "page_kind": usable in filters like any metadata key
    value       TEXT NOT NULL,
    score       REAL,
    classifier  TEXT NOT NULL,  -- what produced it, e.g. "probe:page_kind@mini"
    PRIMARY KEY (item_id, name)
);
CREATE INDEX IF NOT EXISTS tags_name ON tags(name, value);
CREATE TABLE IF NOT EXISTS dead_rows (space TEXT NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (space, row));
CREATE TRIGGER IF NOT EXISTS vectors_dead_on_delete AFTER DELETE ON vectors BEGIN
    INSERT OR IGNORE INTO dead_rows VALUES (old.space, old.row);
END;
CREATE TRIGGER IF NOT EXISTS vectors_dead_on_update AFTER UPDATE OF row ON vectors WHEN old.row != new.row BEGIN
    INSERT OR IGNORE INTO dead_rows VALUES (old.space, old.row);
END;
"""

MIGRATION_2 = """
CREATE TABLE items_v2 (
    rid         INTEGER PRIMARY KEY,  -- a compact key for filters and vector rows
    id          TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    image       TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    context     TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'pending',
    reason      TEXT,
    detail      TEXT,
    updated_at  REAL NOT NULL
);
INSERT INTO items_v2 (rid, id, source, image, metadata, context, fingerprint, status, reason, detail, updated_at)
    SELECT rowid, id, source, image, metadata, context, fingerprint, status, reason, detail, updated_at FROM items;
DROP TABLE items;
ALTER TABLE items_v2 RENAME TO items;
CREATE INDEX items_source ON items(source);
CREATE INDEX items_status ON items(status);
ALTER TABLE vectors ADD COLUMN rid INTEGER;
UPDATE vectors SET rid = (SELECT rid FROM items WHERE items.id = vectors.item_id);
CREATE INDEX vectors_space_row_rid ON vectors(space, row, rid);
CREATE TABLE item_values (
    rid   INTEGER NOT NULL REFERENCES items(rid) ON DELETE CASCADE,
    key   TEXT NOT NULL,
    text  TEXT NOT NULL,  -- casefolded
    num   REAL,           -- first number in the text, for ordering
    val   REAL,           -- the whole text as a number, for equality
    shown TEXT            -- the text as written, where casefolding changed it (facet menus)
);
CREATE INDEX item_values_text ON item_values(key, text, rid);
CREATE INDEX item_values_num ON item_values(key, num, rid) WHERE num IS NOT NULL;
CREATE INDEX item_values_val ON item_values(key, val, rid) WHERE val IS NOT NULL;
CREATE INDEX item_values_rid ON item_values(rid);
-- multi: some item has several values of the key (then its filters cannot be merged into one range)
CREATE TABLE value_keys (key TEXT PRIMARY KEY, multi INTEGER NOT NULL DEFAULT 0);
"""

# A failed item answers no query: its vectors (from an earlier, good version of the file) go, and
# the trigger records their rows as dead. Collections written before this rule are cleaned here.
MIGRATION_3 = """
DELETE FROM vectors WHERE item_id IN (SELECT id FROM items WHERE status = 'failed');
"""

# Each space names its vector file, so a compaction can write a new one beside the old and switch
# to it in a transaction (NULL: the file of schema <= 3, spaces/<name>.f32).
MIGRATION_4 = """
ALTER TABLE spaces ADD COLUMN file TEXT;
"""

# Keyword search (index/keyword.py): an FTS5 table keyed by item rid, kept in step with items by
# triggers, so every path that writes items (ingest, add_items, removal) updates it. Diacritics are
# folded ("Ålesund" = "alesund"), two- and three-letter prefixes indexed for "berg*". Columns:
# title; caption (caption, description); subjects (subjects, subject, keywords); notes (notes,
# note); context (OCR / ALTO text around the picture). Control characters 2 and 3 are the snippet
# markers and are removed from the indexed text. ``pruned``: ids deleted by ``vitrina prune
# --delete``, which a later ingest does not bring back.
FTS_COLUMNS = {  # column -> metadata keys whose values it holds (context: the item's context text)
    "title": ("title",),
    "caption": ("caption", "description"),
    "subjects": ("subjects", "subject", "keywords"),
    "notes": ("notes", "note"),
}


def _fts_values(row: str) -> str:
    """SQL for the FTS row of the item ``row`` ('new.' in a trigger, '' in a SELECT)."""

    def clean(sql: str) -> str:
        return f"replace(replace({sql}, char(2), ''), char(3), '')"

    fields = [f"{row}rid"]
    for keys in FTS_COLUMNS.values():
        parts = " || ' ' || ".join(f"coalesce(json_extract({row}metadata, '$.{k}'), '')" for k in keys)
        fields.append(f"CASE WHEN json_valid({row}metadata) THEN {clean(parts)} ELSE '' END")
    fields.append(clean(f"{row}context"))
    return ", ".join(fields)


# The OCR words of item {rid} (schema 8), and the statements that put an item's FTS row back
# after its words changed (only for an item that exists: a cascade from a deleted item adds none).
_OCR_TEXT = "coalesce((SELECT text FROM ocr_pages WHERE rid = {rid} AND status = 'ok'), '')"
_OCR_REFRESH = (
    "DELETE FROM item_text WHERE rowid = {rid};\n"
    "    INSERT INTO item_text (rowid, title, caption, subjects, notes, context, words) "
    f"SELECT {_fts_values('')}, {_OCR_TEXT.format(rid='{rid}')} FROM items WHERE rid = {{rid}};"
)

MIGRATION_5 = f"""
CREATE VIRTUAL TABLE item_text USING fts5(title, caption, subjects, notes, context, tokenize='unicode61 remove_diacritics 2', prefix='2 3');
CREATE TRIGGER item_text_insert AFTER INSERT ON items BEGIN
    INSERT INTO item_text (rowid, title, caption, subjects, notes, context) VALUES ({_fts_values("new.")});
END;
CREATE TRIGGER item_text_update AFTER UPDATE OF metadata, context ON items BEGIN
    DELETE FROM item_text WHERE rowid = old.rid;
    INSERT INTO item_text (rowid, title, caption, subjects, notes, context) VALUES ({_fts_values("new.")});
END;
CREATE TRIGGER item_text_delete AFTER DELETE ON items BEGIN
    DELETE FROM item_text WHERE rowid = old.rid;
END;
INSERT INTO item_text (rowid, title, caption, subjects, notes, context)
    SELECT {_fts_values("")} FROM items;
CREATE TABLE pruned (id TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT NOT NULL);
"""


# Regions (vitrina.regions): boxes of an item embedded on their own. Their vectors are rows of the
# space's vector file like the whole image's, mapped here to the item (so filters on the item apply
# to them); a deleted region's row is dead like a replaced vector's. ``region_sets`` records, per
# item and space, the item fingerprint and region policy its regions were cut for (also when the
# policy gave the item no region: a small image), so indexing knows what is current.
MIGRATION_7 = """
CREATE TABLE regions (
    space TEXT NOT NULL REFERENCES spaces(name) ON DELETE CASCADE,
    rid   INTEGER NOT NULL REFERENCES items(rid) ON DELETE CASCADE,
    row   INTEGER NOT NULL,
    x     INTEGER NOT NULL,
    y     INTEGER NOT NULL,
    w     INTEGER NOT NULL,
    h     INTEGER NOT NULL,
    PRIMARY KEY (space, row)
);
CREATE INDEX regions_rid ON regions(space, rid);
CREATE TABLE region_sets (
    space  TEXT NOT NULL REFERENCES spaces(name) ON DELETE CASCADE,
    rid    INTEGER NOT NULL REFERENCES items(rid) ON DELETE CASCADE,
    cut    TEXT NOT NULL,  -- item fingerprint + policy the regions were cut for
    PRIMARY KEY (space, rid)
);
CREATE TRIGGER regions_dead_on_delete AFTER DELETE ON regions BEGIN
    INSERT OR IGNORE INTO dead_rows VALUES (old.space, old.row);
END;
"""


def schema_version(db: sqlite3.Connection) -> int:
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.OperationalError:  # an empty database: no meta table yet
        return 0
    return int(row[0]) if row else 0


def upgrade(db: sqlite3.Connection, path: Path, may_create: bool, lock: Callable[[], int] | None) -> None:
    """Bring the database at ``path`` to ``SCHEMA_VERSION``, one numbered migration at a time,
    each in one transaction. Readers upgrade too, under the writer lock: ``lock`` takes it (and
    returns its descriptor, closed after); None when the caller holds it already."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"{path} was written by a newer vitrina (schema {version}, this one reads <= {SCHEMA_VERSION}); upgrade vitrina."
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0 and not may_create:
        raise StoreCorrupt(f"{path} is not a vitrina collection (no schema); remove it or point at the right folder.")
    fd = lock() if lock is not None else None
    try:
        version = schema_version(db)  # another process may have upgraded it meanwhile
        for target in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target](db)
    finally:
        if fd is not None:
            os.close(fd)


def _migrate(db: sqlite3.Connection, target: int, script: str, then: Callable[[], None] | None = None) -> None:
    db.execute("PRAGMA foreign_keys=OFF")  # table rebuilds; checked before the commit
    with transaction(db):
        for statement in statements(script):
            db.execute(statement)
        if then is not None:
            then()
        fault_point("before_migration_commit")
        bad = db.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            where = db.execute("PRAGMA database_list").fetchone()[2]
            raise StoreCorrupt(
                f"Upgrading {where} to schema {target} found {len(bad)} broken references; nothing was changed."
            )
        db.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(target),),
        )


def migration_1(db: sqlite3.Connection) -> None:
    _migrate(db, 1, SCHEMA_V1)


def migration_2(db: sqlite3.Connection) -> None:
    """Items get an integer key (``rid``) and every metadata value a normalised, indexed row in
    ``item_values`` (see filters.py), so a filter is an index lookup instead of a Python call per item."""
    _migrate(db, 2, MIGRATION_2, then=lambda: refresh_values(db, None))


def migration_3(db: sqlite3.Connection) -> None:
    _migrate(db, 3, MIGRATION_3)


def migration_4(db: sqlite3.Connection) -> None:
    _migrate(db, 4, MIGRATION_4)


def migration_5(db: sqlite3.Connection) -> None:
    """Keyword search: the FTS5 table over item text (built here for existing items), its
    triggers, and the ids pruned for good."""
    _migrate(db, 5, MIGRATION_5)


def migration_6(db: sqlite3.Connection) -> None:
    """Normal values are recomputed: a day-month-year date ("15. September 1859") now orders
    by its year, not its day (filters.normal_value)."""
    _migrate(db, 6, "", then=lambda: refresh_values(db, None))


def migration_7(db: sqlite3.Connection) -> None:
    """Regions: the ``regions`` and ``region_sets`` tables (empty until an index run cuts regions)."""
    _migrate(db, 7, MIGRATION_7)


# Words read from the image (OCR, vitrina.ocr): ``ocr_pages`` has one row per item read (the image
# fingerprint and engine key it was read with, ok or failed with a reason, the size of the image
# the boxes are in, the folded words as one text); ``words`` the words with their boxes. The FTS
# table is rebuilt with a sixth column, ``words``, kept apart from the catalogue metadata and the
# ALTO context, filled from ``ocr_pages.text`` by triggers on both tables. ``ocr_terms``: the
# distinct folded words, trigram-indexed, for the misread-tolerant match (index/keyword.py).
MIGRATION_8 = f"""
DROP TRIGGER item_text_insert;
DROP TRIGGER item_text_update;
DROP TRIGGER item_text_delete;
DROP TABLE item_text;
CREATE TABLE ocr_pages (
    rid         INTEGER PRIMARY KEY REFERENCES items(rid) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,  -- the item fingerprint the words were read from
    engine      TEXT NOT NULL,  -- the engine key (name@version:languages)
    status      TEXT NOT NULL,  -- ok | failed
    reason      TEXT,
    detail      TEXT,
    width       INTEGER,        -- the image the boxes are in (source pixels)
    height      INTEGER,
    words       INTEGER NOT NULL DEFAULT 0,
    text        TEXT NOT NULL DEFAULT '',  -- the words, folded (ocr/fold.py), for the FTS column
    updated_at  REAL NOT NULL
);
CREATE TABLE words (
    rid         INTEGER NOT NULL REFERENCES items(rid) ON DELETE CASCADE,
    n           INTEGER NOT NULL,  -- reading order
    text        TEXT NOT NULL,     -- as read
    folded      TEXT NOT NULL,     -- folded, one token per word ("tromso")
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,
    quad        TEXT,              -- JSON [x0,y0,..,x3,y3] for text at an angle
    confidence  REAL NOT NULL,
    engine      TEXT NOT NULL,
    PRIMARY KEY (rid, n)
);
CREATE INDEX words_folded ON words(rid, folded);
CREATE TABLE ocr_vocab (term TEXT PRIMARY KEY);
CREATE VIRTUAL TABLE ocr_terms USING fts5(term, tokenize='trigram');
CREATE VIRTUAL TABLE item_text USING fts5(title, caption, subjects, notes, context, words, tokenize='unicode61 remove_diacritics 2', prefix='2 3');
CREATE TRIGGER item_text_insert AFTER INSERT ON items BEGIN
    INSERT INTO item_text (rowid, title, caption, subjects, notes, context, words) VALUES ({_fts_values("new.")}, {_OCR_TEXT.format(rid="new.rid")});
END;
CREATE TRIGGER item_text_update AFTER UPDATE OF metadata, context ON items BEGIN
    DELETE FROM item_text WHERE rowid = old.rid;
    INSERT INTO item_text (rowid, title, caption, subjects, notes, context, words) VALUES ({_fts_values("new.")}, {_OCR_TEXT.format(rid="new.rid")});
END;
CREATE TRIGGER item_text_delete AFTER DELETE ON items BEGIN
    DELETE FROM item_text WHERE rowid = old.rid;
END;
CREATE TRIGGER ocr_text_insert AFTER INSERT ON ocr_pages BEGIN
    {_OCR_REFRESH.format(rid="new.rid")}
END;
CREATE TRIGGER ocr_text_update AFTER UPDATE OF text ON ocr_pages BEGIN
    {_OCR_REFRESH.format(rid="new.rid")}
END;
CREATE TRIGGER ocr_text_delete AFTER DELETE ON ocr_pages BEGIN
    {_OCR_REFRESH.format(rid="old.rid")}
END;
INSERT INTO item_text (rowid, title, caption, subjects, notes, context, words)
    SELECT {_fts_values("")}, '' FROM items;
"""


def migration_8(db: sqlite3.Connection) -> None:
    """Words read from the image (OCR): their tables, and the FTS table rebuilt with a ``words``
    column of its own."""
    _migrate(db, 8, MIGRATION_8)


# The curator's workbench (vitrina.workbench): named ``sets`` of items (with who made them, when,
# and the query that did), ``labels`` (a person's yes / no / skip to a question about an item, kept
# apart from the machine's tags) and ``corrections`` of machine tags (a person's value of tag
# ``name`` on an item, which wins over the classifier's in filters and survives its re-runs).
# Keyed by item id, not rid, and without a cascade: a re-index that drops and brings back an item
# keeps what a person said about it.
MIGRATION_9 = """
CREATE TABLE sets (
    name        TEXT PRIMARY KEY,
    query       TEXT NOT NULL DEFAULT '{}',  -- JSON: the query (text, filters, model) that made it
    note        TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE set_items (
    set_name    TEXT NOT NULL REFERENCES sets(name) ON DELETE CASCADE,
    item_id     TEXT NOT NULL,
    score       REAL,           -- the search score it was added with, if any
    added_by    TEXT NOT NULL,
    added_at    REAL NOT NULL,
    PRIMARY KEY (set_name, item_id)
);
CREATE INDEX set_items_item ON set_items(item_id);
CREATE TABLE labels (
    question    TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    answer      TEXT NOT NULL CHECK (answer IN ('yes', 'no', 'skip')),
    who         TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (question, item_id)
);
CREATE TABLE corrections (
    item_id     TEXT NOT NULL,
    name        TEXT NOT NULL,  -- the tag corrected, e.g. "blank_page"
    value       TEXT NOT NULL,  -- the person's value, which wins over the machine's
    source      TEXT NOT NULL DEFAULT '',  -- '' by hand, 'label:QUESTION' from the labels of a question
    who         TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (item_id, name)
);
"""


def migration_9(db: sqlite3.Connection) -> None:
    """The workbench: sets, labels and corrections of machine tags (empty until a curator writes)."""
    _migrate(db, 9, MIGRATION_9)


# People's corrections of OCR words (store/word_fixes.py): by item id (kept across re-index, like
# the workbench's tables) and the word's box, with what the machine read; a new OCR run applies
# them again to the word whose box overlaps most.
MIGRATION_10 = """
CREATE TABLE IF NOT EXISTS word_fixes (
    item_id     TEXT NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,  -- the word's box when corrected
    was         TEXT NOT NULL,  -- what the machine read
    text        TEXT NOT NULL,  -- what a person says it says
    who         TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (item_id, x, y, w, h)
);
"""


def migration_10(db: sqlite3.Connection) -> None:
    """Corrections of OCR words (empty until a person corrects one)."""
    _migrate(db, 10, MIGRATION_10)


# A moved or renamed file is recognised by its content (moves.py): ``content_hash`` is the BLAKE2b
# of a local file's bytes, computed at ingest for new and changed files (NULL until then, and for
# remote images), indexed to find the item a disappeared file leaves behind.
MIGRATION_11 = """
CREATE INDEX IF NOT EXISTS items_content_hash ON items(content_hash) WHERE content_hash IS NOT NULL;
"""


def migration_11(db: sqlite3.Connection) -> None:
    """Content hashes of local files (filled by the next ingest), so a moved file keeps its item.
    The column is added only where it is missing (a database set back to an earlier version by
    hand keeps it)."""

    def add_column() -> None:
        if "content_hash" not in {r[1] for r in db.execute("PRAGMA table_info(items)")}:
            db.execute("ALTER TABLE items ADD COLUMN content_hash TEXT")
        for statement in statements(MIGRATION_11):
            db.execute(statement)
        # A database that a pre-release build (where 10 was this migration) brought to 10 has no
        # word_fixes: make sure it has.
        for statement in statements(MIGRATION_10):
            db.execute(statement)

    _migrate(db, 11, "", then=add_column)


# Where a moved item went (store/moves.py): its old id, kept so a citation of it (an exported
# list, a bookmarked item page) still leads to the picture; chains are kept pointing at the latest.
MIGRATION_12 = """
CREATE TABLE IF NOT EXISTS moved_ids (
    old_id  TEXT PRIMARY KEY,
    new_id  TEXT NOT NULL,
    at      REAL NOT NULL
) WITHOUT ROWID;
"""


def migration_12(db: sqlite3.Connection) -> None:
    """The old ids of moved items (empty until a file is recognised as moved)."""
    _migrate(db, 12, MIGRATION_12)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: migration_1,
    2: migration_2,
    3: migration_3,
    4: migration_4,
    5: migration_5,
    6: migration_6,
    7: migration_7,
    8: migration_8,
    9: migration_9,
    10: migration_10,
    11: migration_11,
    12: migration_12,
}


def statements(script: str) -> list[str]:
    """Split a script into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (
            not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")
        ):
            out.append(joined)
            buf = []
    return out
