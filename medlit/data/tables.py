"""Tables read from CSV or Parquet files as columns of text, with their size checked before they are read.

A table comes from whoever made the data set: it is read as plain values (the standard library's `csv`, or
pyarrow for Parquet, the `tables` extra), nothing in it runs, and its size is checked against `max_rows`
before it is loaded: at most `max_rows` rows of `BYTES_PER_ROW` bytes on average.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from medlit.errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
BYTES_PER_ROW = 1024


@dataclass
class Table:
    """A table's columns (name -> one text value per row, "" where empty) and where each row is in the file."""

    path: Path
    columns: dict[str, list[str]]
    unit: str  # "line" (CSV: the file's line, the header is line 1) or "row" (Parquet: counted from 1)
    locations: list[int]

    def __len__(self) -> int:
        return len(self.locations)

    def where(self, index: int) -> str:
        """Where row `index` is: `<table> line 7`."""
        return f"{self.path} {self.unit} {self.locations[index]}"


def read_table(path: Path, max_rows: int) -> Table:
    """The CSV (comma, semicolon or tab separated; `.tsv`: tab) or Parquet file at `path`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"table {path} not found; set data.table to a CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(
            f"table {path}: unknown format {suffix!r}; medlit reads {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    table = _read_parquet(path, max_rows) if suffix in PARQUET_SUFFIXES else _read_csv(path, max_rows)
    if not len(table):
        raise DataError(f"table {path} has no rows")
    return table


def _too_large(path: Path, what: str, max_rows: int) -> DataError:
    return DataError(
        f"table {path} has {what}, more than data.max_rows={max_rows} allows; raise data.max_rows if it is meant to "
        f"be this large"
    )


def _read_csv(path: Path, max_rows: int) -> Table:
    size = path.stat().st_size
    if size > max_rows * BYTES_PER_ROW:
        raise _too_large(path, f"{size / 2**20:.0f} MB (more than {BYTES_PER_ROW} bytes a row)", max_rows)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
            delimiter = "\t" if path.suffix.lower() == ".tsv" else _delimiter(first)
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            _check_header(path, header)
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(rows) == max_rows:
                    raise _too_large(path, f"more than {max_rows} rows", max_rows)
                if len(row) != len(header):
                    raise DataError(
                        f"{path} line {reader.line_num} has {len(row)} fields, its header {len(header)} "
                        f"(delimiter {delimiter!r})"
                    )
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise DataError(f"table {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataError(f"table {path} is not a readable CSV file ({err})") from None
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    return Table(path, columns, "line", lines)


def _delimiter(header: str) -> str:
    """The header's separator: a comma unless it has none and has semicolons (spreadsheets in many locales)
    or tabs."""
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    return "," if counts[","] else max(counts, key=counts.get) if any(counts.values()) else ","


def _check_header(path: Path, header: list[str]) -> None:
    if not header or not any(header):
        raise DataError(f"table {path} is empty: its first line should name its columns")
    if "" in header:
        raise DataError(f"table {path}: column {header.index('') + 1} of the header has no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"table {path} names more than one column {', '.join(repeated)}")


def _read_parquet(path: Path, max_rows: int) -> Table:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading the Parquet table {path} needs pyarrow: pip install 'medlit[tables]'") from None
    try:
        handle = pq.ParquetFile(path)
        meta = handle.metadata
        if meta.num_rows > max_rows:
            raise _too_large(path, f"{meta.num_rows} rows", max_rows)
        unpacked = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        if unpacked > max_rows * BYTES_PER_ROW:
            raise _too_large(
                path, f"{unpacked / 2**20:.0f} MB of values (more than {BYTES_PER_ROW} bytes a row)", max_rows
            )
        data = handle.read()
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError(f"table {path} is not a readable Parquet file ({err})") from None
    _check_header(path, list(data.column_names))
    columns = {name: [_text(value) for value in data.column(name).to_pylist()] for name in data.column_names}
    return Table(path, columns, "row", list(range(1, data.num_rows + 1)))


def _text(value: object) -> str:
    """A Parquet value as the text a CSV file would hold: "" for missing, 3 for 3.0 (integers stored as floats)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
