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

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.generators import register
from ingest.generators.base import Generator, Source
from ingest.generators.qa import QAGenerator, _table_rows, find_cell
from store.records import Element, NewPair

_NUMBER = re.compile(r"[\s$€£%+\-−.,:/()\d]*\d[\s$€£%+\-−.,:/()\d]*[a-zA-Z]{0,3}")
_DEFAULT_SHEET = re.compile(r"(sheet|tabelle|feuil|hoja|foglio|blad)\s*\d*", re.I)


@dataclass(frozen=True)
class TableOptions:
    cell_template: str = "What is the {column} of {key}?"
    sheet_template: str = "In the {sheet} table, what is the {column} of {key}?"
    row_template: str = "What does the table list for {key} ({columns})?"
    max_pairs_per_table: int = 60


def header_and_rows(el: Element) -> tuple[list[str], list[list[str]]]:
    """A table's header (every cell text, not numbers, distinct) and its data rows; ([], []) if it has none."""
    html = el.metadata.get("text_as_html") if el.type == "Table" else None
    rows = [r for r in _table_rows(html) if any(r)] if html else []
    if len(rows) < 2 or len(rows[0]) < 2:
        return [], []
    header = rows[0]
    names = [h.casefold() for h in header]
    if any(not h or _NUMBER.fullmatch(h) for h in header) or len(set(names)) < len(names):
        return [], []
    return header, [r for r in rows[1:] if len(r) == len(header)]


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
            header, rows = header_and_rows(el)
            if rows and not qa._qa_rows(el):
                yield from self._table(source, el, header, rows)

    def _table(self, source: Source, el: Element, header: list[str], rows: list[list[str]]) -> Iterator[NewPair]:
        opts: TableOptions = self.options
        text = source.document.text
        sheet = str(el.metadata.get("page_name") or "").strip()
        named = bool(sheet) and not _DEFAULT_SHEET.fullmatch(sheet)
        key_col = _key_column(rows)
        cursor = el.char_start
        for h in header:  # the data rows start after the header's cells
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
