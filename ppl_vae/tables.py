"""Tables for people, written once: Markdown for the report files, aligned plain text for the terminal.

Cells are strings (numbers are formatted by the caller, who knows their units and precision); ``align`` gives one
letter per column: ``l`` (left), ``r`` (right, for numbers) or ``c`` (centre). Headers that carry nats say "nats per
example" (see the conventions in ``docs/design.md``).

Example::

    header = ["quantity", "nats per example", "std. error"]
    rows = [["log p(x)", "-25.311", "0.214"], ["ELBO", "-27.040", "0.220"]]
    print(table(header, rows, align="lrr"))                      # | quantity | nats per example | std. error |
    print(table(header, rows, align="lrr", style="terminal"))    # columns padded to their widest cell
"""

from __future__ import annotations

from collections.abc import Sequence

_MARKDOWN_RULE = {"l": "---", "r": "---:", "c": ":---:"}
_PAD = {"l": str.ljust, "r": str.rjust, "c": str.center}


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None, style: str = "markdown"
) -> str:
    """``rows`` under ``header`` as one string of lines (no trailing newline).

    Arguments:
        header: the column names.
        rows: one sequence of cells per row, as many as ``header`` has.
        align: one of ``l``, ``r``, ``c`` per column (default: the first column left, the others right).
        style: ``"markdown"`` (a GitHub table, cells unpadded) or ``"terminal"`` (columns padded to their widest
            cell and separated by two spaces).
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - set(_PAD):
        raise ValueError(f"align {align!r}: expected one of l, r, c for each of the {len(header)} columns")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells, the header {len(header)}")
    if style == "markdown":
        lines = [header, [_MARKDOWN_RULE[letter] for letter in align], *rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    if style == "terminal":
        widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
        return "\n".join(
            "  ".join(
                _PAD[letter](cell, width) for letter, cell, width in zip(align, line, widths, strict=True)
            ).rstrip()
            for line in [header, *rows]
        )
    raise ValueError(f"style {style!r}: expected 'markdown' or 'terminal'")
