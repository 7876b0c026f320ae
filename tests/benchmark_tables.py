"""The table every benchmark section prints (seg/benchmarks/timing.py), read back by the section tests."""

from seg.benchmarks import timing


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of each row after the paragraph and timing.HEADER; PASS or MISS where a target is given."""
    paragraph, blank, *table = lines
    assert paragraph and blank == "" and table[:2] == timing.HEADER
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table[2:]]
    for cells in rows:
        assert len(cells) == 6, cells
        assert cells[5] in (("PASS", "MISS") if cells[4] else ("(info)",)), cells
    return rows
