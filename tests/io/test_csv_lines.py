"""RecordLines: what a record consumed can be fed to csv.reader again, even after the end."""

from __future__ import annotations

import csv

from dagster_llmdata.io.csv_lines import Line, RecordLines


def _lines(*texts: str):
    return iter([Line(i, t) for i, t in enumerate(texts, 1)])


def test_a_record_ended_by_the_end_of_the_file_can_be_read_again():
    lines = RecordLines(_lines('a,"open\n', "b,c\n", "d,e\n"), cap=1000)
    rows = csv.reader(lines, strict=True)
    try:
        next(rows)
        raise AssertionError("strict csv must raise at the end of data inside quotes")
    except csv.Error as exc:
        assert "unexpected end of data" in str(exc)
    taken = lines.take()
    assert [line.number for line in taken.lines] == [1, 2, 3] and taken.complete and taken.over is None
    lines.push_back(taken.lines[1:])  # the reader already raised StopIteration; it reads on
    for number, row in ((2, ["b", "c"]), (3, ["d", "e"])):
        assert next(rows) == row and [line.number for line in lines.take().lines] == [number]
    assert next(rows, None) is None


def test_memory_is_capped_but_the_first_line_and_the_oversized_stand_in_are_kept():
    stand_in = Line(2, "\n", over=type("Over", (), {"head": b"x" * 10})())
    source = iter([Line(1, 'a,"' + "y" * 40 + "\n"), stand_in, *(Line(i, "z" * 40 + "\n") for i in range(3, 10))])
    lines = RecordLines(source, cap=100)
    rows = csv.reader(lines, strict=True)
    try:
        next(rows)
    except csv.Error:
        pass
    taken = lines.take()
    assert not taken.complete and [line.number for line in taken.lines] == [1]
    assert taken.over is stand_in.over  # a record with an over-long line is still flagged
    assert lines.take() == ([], True, None)  # the next record starts empty
