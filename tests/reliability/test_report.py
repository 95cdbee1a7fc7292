"""The figures section of docs/reliability.md is regenerated from the suite's JSON."""

from __future__ import annotations

from pathlib import Path

from .figures import Figures
from .report import END, START, main


def test_rows_of_several_databases_merge_and_render_between_the_markers(tmp_path: Path) -> None:
    data = tmp_path / "figures.json"
    for database, admitted in [("SQLite 3", 10), ("PostgreSQL 16", 11), ("SQLite 3", 12)]:
        run = Figures()
        run.record("over_admission", "database", database, trials=2, admitted=admitted)
        run.write(data)
    doc = tmp_path / "reliability.md"
    doc.write_text(f"# Title\n\nProse.\n\n{START}\nold figures\n{END}\n\nMore prose.\n")

    assert main([str(data), str(doc)]) == 0

    text = doc.read_text()
    assert text.startswith("# Title\n\nProse.\n\n")
    assert text.endswith(f"{END}\n\nMore prose.\n")
    assert "old figures" not in text
    table = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| database")
    }
    # trials, threads, attempts, expected, units asked, admitted, ...
    assert table["PostgreSQL 16"][:6] == ["2", "", "", "", "", "11"]
    # the later SQLite run replaced the first
    assert table["SQLite 3"][:6] == ["2", "", "", "", "", "12"]
