from image_llavolta.tables import format_table, percent


def test_columns_align_labels_left_numbers_right_and_none_reads_as_dash():
    text = format_table(
        [["single", 0.5, None], ["four_stage", 12, "x"]], headers=["scheme", "acc", "note"], title="results"
    )
    assert text.split("\n") == [
        "results",
        "scheme      acc  note",
        "----------  ---  ----",
        "single      0.5     -",
        "four_stage   12     x",
    ]


def test_rows_without_headers_and_ragged_rows():
    assert format_table([["a", 1], ["long label"]], indent=2).split("\n") == ["  a           1", "  long label"]


def test_percent():
    assert percent(0.7134) == "71.3%" and percent(None) == "-" and percent(1, digits=0) == "100%"
