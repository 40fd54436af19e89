"""Display tables (strings + best mask from `stats.pivot`) as Markdown, LaTeX and HTML.

Markdown goes through pandas' `to_markdown` (tabulate), best cells in `**bold**`;
LaTeX and HTML through pandas' `Styler` (booktabs rules; best cells bold via CSS,
which `to_latex(convert_css=True)` turns into `\\bfseries`).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Optional, Sequence

import pandas as pd

__all__ = ["Table", "markdown", "latex", "html_page", "latex_document"]

_BOLD = "font-weight: bold"


@dataclasses.dataclass
class Table:
    title: str
    text: pd.DataFrame                 # display strings
    best: Optional[pd.DataFrame] = None  # True where the cell is the column's best
    note: str = ""


def _flat_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" / ".join(f"{v}" for v in values) for values in frame.columns]
    if isinstance(frame.index, pd.MultiIndex):
        frame.index = [" / ".join(f"{v}" for v in values) for values in frame.index]
    return frame


def _header(frame: pd.DataFrame) -> str:
    names = [n for n in (frame.columns.names or []) if n]
    return " / ".join(names)


def markdown(table: Table) -> str:
    text = table.text.copy()
    if table.best is not None:
        text = text.mask(table.best.reindex_like(text).fillna(False).astype(bool),
                         "**" + text + "**")
    header = _header(table.text)
    flat = _flat_columns(text)
    index_name = " / ".join(n for n in (table.text.index.names or []) if n)
    if header:
        index_name = f"{index_name} \\ {header}" if index_name else header
    flat.index.name = index_name or None
    body = flat.to_markdown(stralign="right")
    out = f"### {table.title}\n\n{body}\n"
    if table.note:
        out += f"\n{table.note}\n"
    return out


def _styler(table: Table) -> "pd.io.formats.style.Styler":
    styler = table.text.style
    if table.best is not None:
        best = table.best.reindex_like(table.text).fillna(False).astype(bool)
        styler = styler.apply(lambda _: best.replace({True: _BOLD, False: ""}), axis=None)
    return styler


def latex(table: Table) -> str:
    text = table.text.map(_latex_escape)
    text.index = text.index.set_names([_latex_escape(str(n)) if n else n for n in text.index.names])
    text.columns = text.columns.set_names(
        [_latex_escape(str(n)) if n else n for n in text.columns.names])
    best = None if table.best is None else table.best.set_axis(text.index, axis=0).set_axis(
        text.columns, axis=1)
    styler = _styler(Table(table.title, text, best))
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    body = styler.to_latex(convert_css=True, hrules=True, multicol_align="c",
                           caption=_latex_escape(table.title), position="htbp",
                           column_format="l" * text.index.nlevels + "r" * text.shape[1])
    if table.note:
        body = body.replace(r"\end{table}", f"\\par\\footnotesize {_latex_escape(table.note)}\n"
                            r"\end{table}")
    return body


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                          ("#", r"\#"), ("±", r"$\pm$"), ("†", r"$\dagger$"), ("α", r"$\alpha$"),
                          ("×", r"$\times$"), ("−", "-")):
        text = text.replace(char, escaped)
    return text


def latex_document(tables: Sequence[Table]) -> str:
    """A standalone LaTeX file (booktabs) holding every table."""
    body = "\n".join(latex(t) for t in tables)
    return ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[T1]{fontenc}\n"
            "\\usepackage[utf8]{inputenc}\n\\begin{document}\n" + body + "\\end{document}\n")


def html_page(title: str, tables: Sequence[Table], images: Sequence[str] = ()) -> str:
    """One HTML page: every table (best cells bold), then the plots (relative paths)."""
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif} table{border-collapse:collapse;"
             "margin-bottom:1em} td,th{padding:2px 8px;border-bottom:1px solid #ccc;"
             "text-align:right}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for table in tables:
        parts.append(f"<h3>{html.escape(table.title)}</h3>")
        parts.append(_styler(table).to_html())
        if table.note:
            parts.append(f"<p><small>{html.escape(table.note)}</small></p>")
    for image in images:
        parts.append(f"<figure><img src='{html.escape(image)}' style='max-width:100%'>"
                     f"<figcaption>{html.escape(image)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
