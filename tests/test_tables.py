"""The one table formatter: Markdown for report files, padded plain text for the terminal."""

import pytest

from ppl_vae.tables import table

HEADER = ["quantity", "nats per example", "std. error"]
ROWS = [["log p(x)", "-25.311", "0.214"], ["gap", "1.7", "0.05"]]


def test_markdown_rows_and_alignment_rule():
    assert table(HEADER, ROWS, align="lrc").splitlines() == [
        "| quantity | nats per example | std. error |",
        "| --- | ---: | :---: |",
        "| log p(x) | -25.311 | 0.214 |",
        "| gap | 1.7 | 0.05 |",
    ]


def test_terminal_pads_each_column_to_its_widest_cell_and_numbers_right_by_default():
    assert table(HEADER, ROWS, style="terminal").splitlines() == [
        "quantity  nats per example  std. error",
        "log p(x)           -25.311       0.214",
        "gap                    1.7        0.05",
    ]


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ([["a", "b"]], {}, "has 2 cells, the header 3"),
        (ROWS, {"align": "lr"}, "align 'lr'"),
        (ROWS, {"align": "lrx"}, "align 'lrx'"),
        (ROWS, {"style": "html"}, "style 'html'"),
    ],
)
def test_bad_shapes_and_options_are_refused(rows, options, message):
    with pytest.raises(ValueError, match=message):
        table(HEADER, rows, **options)
