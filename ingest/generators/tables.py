"""``table``: questions about the cells of tables and spreadsheets, from their header row.

For a table with a header row and data rows (``text_as_html`` from the parser: CSV, TSV, XLSX,
HTML, DOCX tables), each data cell gives "What is the <column> of <row key>?", where the row key
is the row's cell in the first column whose values are distinct and not numbers. The response is
the cell exactly as it stands in the table's text, ``document.text[char_start:char_end]``; a row
whose cells cannot all be found there, in order, gives one question about the whole row instead,
answered by the row's span, so provenance stays exact. Two-column question/answer tables are
left to ``qa``. A spreadsheet's sheet name, when it is not a default like "Sheet1", names the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ingest.generators import register
from ingest.generators.base import Generator, Source
from ingest.generators.qa import QAGenerator, _table_rows, find_cell, json_qa, json_record
from store.records import Element, NewPair

_NUMBER = re.compile(r"[\s$€£%+\-−.,:/()\d]*\d[\s$€£%+\-−.,:/()\d]*[a-zA-Z]{0,3}")
_DEFAULT_SHEET = re.compile(r"(sheet|tabelle|feuil|hoja|foglio|blad)\s*\d*", re.I)


@dataclass(frozen=True)
class TableOptions:
    cell_template: str = "What is the {column} of {key}?"
    sheet_template: str = "In the {sheet} table, what is the {column} of {key}?"
    row_template: str = "What does the table list for {key} ({columns})?"
    max_pairs_per_table: int = 60


def _drop_empty_columns(rows: list[list[str]]) -> list[list[str]]:
    """The rows without the columns that are empty in every row (a CSV's trailing delimiter)."""
    width = max(len(r) for r in rows)
    keep = [c for c in range(width) if any(c < len(r) and r[c] for r in rows)]
    return [[r[c] if c < len(r) else "" for c in keep] for r in rows]


def _two_row_header(top: list[str], sub: list[str]) -> list[str] | None:
    """The column names of a header over two rows (a group cell spanning columns, its sub-columns
    in the row below: "Results" over "Accuracy" and "Time to complete"), when ``sub`` names exactly
    the columns under a group and ``top`` the others; else None."""
    if len(sub) != len(top) or not any(not t for t in top) or not any(sub):
        return None
    names: list[str] = []
    group = ""
    for t, b in zip(top, sub):
        if t and b:  # a group cell over its first sub-column
            group = t
            names.append(f"{t}: {b}")
        elif b:  # a sub-column under the group cell on its left
            if not group:
                return None
            names.append(f"{group}: {b}")
        elif t:
            group = ""
            names.append(t)
        else:
            return None
    return names


def _valid_header(header: list[str]) -> bool:
    names = [h.casefold() for h in header]
    return (len(header) >= 2 and all(h and not _NUMBER.fullmatch(h) for h in header)
            and len(set(names)) == len(names))


def table_layout(el: Element) -> tuple[str, list[str], list[list[str]]]:
    """A table's caption, header (every cell text, not numbers, distinct) and data rows; ("", [], [])
    if it has no header row with data rows under it.

    Real tables seen in the wild (unstructured's example documents): a caption row above the
    header ("Stanley Cups" in the first of three columns) is the table's name, not its header;
    a column empty in every row (a trailing delimiter) is dropped; a header over two rows (a group
    cell spanning sub-columns) gives "Group: Sub-column" names; trailing columns without a name and
    filled in fewer than half the rows (a note that overflowed its row, a ragged CSV padded by
    ``ingest.partition``) are dropped."""
    html = el.metadata.get("text_as_html") if el.type == "Table" else None
    rows = [r for r in _table_rows(html) if any(r)] if html else []
    if len(rows) < 2:
        return "", [], []
    rows = _drop_empty_columns(rows)
    caption: list[str] = []
    while len(rows) > 2 and sum(1 for c in rows[0] if c) == 1 and len(rows[0]) >= 2:
        caption.append(next(c for c in rows[0] if c))
        rows = rows[1:]
    header, body = rows[0], rows[1:]
    if body and not _valid_header(header) and (merged := _two_row_header(header, body[0])):
        header, body = merged, body[1:]
    if body and not _valid_header(header):
        header, body = _drop_overflow(header, body)
    if not body or not _valid_header(header):
        return "", [], []
    return " ".join(caption), header, [r for r in body if len(r) == len(header)]


def _drop_overflow(header: list[str], body: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    n = len(header)
    while n > 1 and not header[n - 1] and 2 * sum(1 for r in body if len(r) >= n and r[n - 1]) < len(body):
        n -= 1
    return header[:n], [r[:n] for r in body]


_KEY_FIELDS = ("name", "title", "label", "product", "item", "term", "id", "sku", "code", "key")


def record_table(elements: Sequence[Element]) -> tuple[str, list[str], list[tuple[Element, dict]]]:
    """JSON records that are rows of one table (a catalogue, an export; unstructured's
    arbitrary-records.json): the key field, the other fields with text or number values, and the
    records; ("", [], []) when the document holds no such records. Records with a question and an
    answer (``qa``) are not rows."""
    recs = [(e, r) for e in elements if (r := json_record(e.text)) is not None and json_qa(r) is None]
    if not recs:
        return "", [], []

    def scalar(v: object) -> bool:
        return isinstance(v, str | int | float) and not isinstance(v, bool) and str(v).strip() != ""

    fields: list[str] = []
    for _, r in recs:
        fields += [k for k, v in r.items() if k not in fields and scalar(v)]
    fields = [f for f in fields if 2 * sum(scalar(r.get(f)) for _, r in recs) >= len(recs)]
    keys = [f for f in fields if all(_name_like(r.get(f)) for _, r in recs)
            and len({r[f] for _, r in recs}) == len(recs)]
    if not keys or len(fields) < 2:
        return "", [], []
    key = next((f for name in _KEY_FIELDS for f in keys if f.lower() == name), keys[0])
    return key, [f for f in fields if f != key], recs


def _name_like(v: object) -> bool:
    """A value that can name a row: short text, not a number, not a sentence (a dataset's texts
    are no keys)."""
    return (isinstance(v, str) and not _NUMBER.fullmatch(v) and len(v) <= 80 and len(v.split()) <= 8
            and not v.rstrip().endswith((".", "!", "?")))


def _value_span(el: Element, field: str, value: object) -> tuple[int, int] | None:
    """Where a record's value is in its element's JSON text (a string without its quotes)."""
    at = el.text.find(f"{json.dumps(field)}: ")
    if at < 0:
        return None
    at += len(json.dumps(field)) + 2
    shown = json.dumps(value, ensure_ascii=False)
    if not el.text.startswith(shown, at):
        return None
    a, b = (at + 1, at + len(shown) - 1) if isinstance(value, str) else (at, at + len(shown))
    return el.char_start + a, el.char_start + b


def header_and_rows(el: Element) -> tuple[list[str], list[list[str]]]:
    """A table's header and data rows (``table_layout`` without the caption); ([], []) if it has none."""
    _, header, rows = table_layout(el)
    return header, rows


def prose_table(el: Element, min_words: int = 20) -> bool:
    """Whether a Table element is page layout around prose rather than data: no header row with data
    rows, and a cell of running text (``min_words`` words or more, with sentences), as in HTML pages
    laid out with tables (an essay in one cell). Its text is a passage for ``paragraphs``."""
    if el.type != "Table" or header_and_rows(el)[1]:
        return False
    html = el.metadata.get("text_as_html")
    cells = [c for r in _table_rows(html) for c in r] if html else [el.text]
    return any(len(c.split()) >= min_words and len(re.findall(r"[.!?](?:\s|$)", c)) >= 2 for c in cells)


def _key_column(rows: list[list[str]]) -> int:
    for c in range(len(rows[0])):
        values = [r[c] for r in rows]
        if all(v and not _NUMBER.fullmatch(v) for v in values) and len(set(values)) == len(values):
            return c
    return 0


@register
class TableGenerator(Generator):
    name = "table"
    version = "1"
    Options = TableOptions

    def generate(self, source: Source) -> Iterator[NewPair]:
        qa = QAGenerator()
        for el in source.elements:
            caption, header, rows = table_layout(el)
            if rows and not qa._qa_rows(el):
                yield from self._table(source, el, caption, header, rows)
        yield from self._records(source)

    def _records(self, source: Source) -> Iterator[NewPair]:
        """JSON records as table rows: "What is the price of Garden Trowel?" -> "12.5"."""
        opts: TableOptions = self.options
        key, fields, recs = record_table(source.elements)
        text = source.document.text
        made = 0
        for el, rec in recs:
            for f in fields:
                span = _value_span(el, f, rec.get(f)) if f in rec else None
                if span is None or made >= opts.max_pairs_per_table:
                    continue
                column = f.replace("_", " ").strip()
                yield self.pair(source, opts.cell_template.format(column=column, key=rec[key], sheet=""),
                                text[span[0]:span[1]], span=span, element_ids=[el.id], page=el.page)
                made += 1

    def _table(self, source: Source, el: Element, caption: str, header: list[str],
               rows: list[list[str]]) -> Iterator[NewPair]:
        opts: TableOptions = self.options
        text = source.document.text
        sheet = str(el.metadata.get("page_name") or "").strip()
        if not sheet or _DEFAULT_SHEET.fullmatch(sheet):
            sheet = caption
        named = bool(sheet) and not _DEFAULT_SHEET.fullmatch(sheet)
        key_col = _key_column(rows)
        cursor = el.char_start
        # the data rows start after the caption's and the header's cells (a two-row header's parts)
        for h in [part for name in [caption, *header] for part in name.split(": ") if part]:
            at = find_cell(text, h, cursor, el.char_end)
            cursor = at[1] if at else cursor
        made = 0
        for row in rows:
            if made >= opts.max_pairs_per_table:
                return
            spans: list[tuple[int, int] | None] = []
            for cell in row:
                at = find_cell(text, cell, cursor, el.char_end) if cell else None
                spans.append(at)
                cursor = at[1] if at else cursor
            key = row[key_col]
            if not key:
                continue
            found = [s for s in spans if s]
            if all(s or not cell for s, cell in zip(spans, row)):
                for c, (cell, span) in enumerate(zip(row, spans)):
                    if c == key_col or not cell or span is None or made >= opts.max_pairs_per_table:
                        continue
                    values = {"column": header[c], "key": key, "sheet": sheet}
                    tpl = opts.sheet_template if named else opts.cell_template
                    yield self.pair(source, tpl.format(**values), text[span[0]:span[1]], span=span,
                                    element_ids=[el.id], page=el.page)
                    made += 1
            elif found:
                span = (found[0][0], found[-1][1])
                columns = ", ".join(h for c, h in enumerate(header) if c != key_col)
                yield self.pair(source, opts.row_template.format(key=key, columns=columns, sheet=sheet),
                                text[span[0]:span[1]], span=span, element_ids=[el.id], page=el.page)
                made += 1
