"""The reports' document model (sections of paragraphs, tables and figures) and its two markups:
Markdown and one self-contained HTML page. Both carry the same information and differ only in markup;
every piece of text is escaped, so a model or data set name cannot inject either.

Example:
    >>> print(markdown([Section("Run", ("pi5 & pi4", Table(("a", "b"), (("1", Code("x|y")),))))]))
    # Run
    <BLANKLINE>
    pi5 \\& pi4
    <BLANKLINE>
    | a | b |
    | --- | --- |
    | 1 | `x\\|y` |
    <BLANKLINE>
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Plot:
    """One figure of the report.

    Attributes:
        title: the caption, in both reports.
        filename: the PNG's name in the run directory, which `report.md` links to.
        png: the image; `report.html` inlines it so the file stands alone.
    """

    title: str
    filename: str
    png: bytes


class Code(str):
    """Text that the reports set as code, such as a file name."""


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: tuple[str | Table | Plot, ...]  # a str is a paragraph


def markdown(sections: Sequence[Section]) -> str:
    """The document as Markdown; figures are links to their PNG files beside the Markdown file."""
    lines: list[str] = []
    for index, section in enumerate(sections):
        lines += [f"{'#' if index == 0 else '##'} {_md_text(section.heading)}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append(_md_row(block.header))
                lines.append("| " + " | ".join(("---",) * len(block.header)) + " |")
                lines += [_md_row(row) for row in block.rows]
            elif isinstance(block, Plot):
                lines.append(f"![{_md_text(block.title)}]({quote(block.filename)})")
            else:
                lines.append(_md_line(block))
            lines.append("")
    return "\n".join(lines)


def html_page(sections: Sequence[Section]) -> str:
    """The document as one self-contained HTML file: inline CSS, figures as data URIs, no scripts.
    Every piece of text is HTML-escaped."""
    body: list[str] = []
    for index, section in enumerate(sections):
        tag = "h1" if index == 0 else "h2"
        body.append(f"<{tag}>{_esc(section.heading)}</{tag}>")
        for block in section.blocks:
            if isinstance(block, Table):
                body.append(_html_table(block))
            elif isinstance(block, Plot):
                data = base64.b64encode(block.png).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(block.title)}">'
                    f"<figcaption>{_esc(block.title)}</figcaption></figure>"
                )
            else:
                body.append(f"<p>{_esc(block)}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(sections[0].heading)}</title>\n<style>\n{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_cell(cell) for cell in cells) + " |"


def _md_cell(cell: str) -> str:
    if not isinstance(cell, Code):
        return _md_text(cell)
    # Markdown and HTML are inert in a code span; only a backtick run as long as its fence would end
    # it, so the fence is one longer than the longest run. A table splits cells on "|" before it reads
    # code spans, so that is escaped even here.
    text = str(cell).replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# Characters that start Markdown inline syntax (emphasis, links, images, code, raw HTML and entities,
# strikethrough, table cells) anywhere in a line.
_MD_INLINE = re.compile(r"[\\`*\[\]<>&!|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What makes a paragraph a heading, quote, list item or rule when it comes first in its line.
_MD_BLOCK_START = re.compile(r"^(\s*)([#>+\-=]|\d{1,9}(?=[.)]))")


def _md_text(text: str) -> str:
    """`text` as literal inline Markdown: every character that could start a link, an image, emphasis,
    code or raw HTML is backslash-escaped (CommonMark renders an escaped punctuation character as
    itself), and a newline becomes a space. Intraword underscores (model names) stay as they are."""
    flat = " ".join(str(text).splitlines())
    return _MD_INLINE.sub(lambda m: "\\" + m.group(0), flat)


def _md_line(text: str) -> str:
    """`text` as a literal Markdown paragraph: inline syntax escaped, and a first character that would
    make the line a block (a heading, quote, list or rule) escaped too; after "1" of "1. " the mark."""
    escaped = _md_text(text)
    match = _MD_BLOCK_START.match(escaped)
    if match is None:
        return escaped
    at = match.end() if match.group(2).isdigit() else match.start(2)
    return escaped[:at] + "\\" + escaped[at:]


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_table(table: Table) -> str:
    def cell(tag: str, value: str) -> str:
        inner = f"<code>{_esc(value)}</code>" if isinstance(value, Code) else _esc(value)
        return f"<{tag}>{inner}</{tag}>"

    head = "".join(cell("th", h) for h in table.header)
    rows = "\n".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in table.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


_CSS = """\
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.75rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; }
code { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; }
figcaption { color: #57606a; font-size: 0.9rem; }
"""
