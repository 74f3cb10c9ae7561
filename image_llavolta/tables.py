"""The one plain-text table every command prints: aligned columns, numbers right-aligned, None as '-'."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MISSING = "-"


def cell(value) -> str:
    """How a value reads in a table: None (nothing of that kind measured) as '-', everything else as str."""
    return MISSING if value is None else str(value)


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage (0.713 -> '71.3%'); None as '-'."""
    return MISSING if value is None else f"{100 * value:.{digits}f}%"


def format_table(
    rows: Iterable[Sequence], headers: Sequence[str] | None = None, title: str | None = None, indent: int = 0
) -> str:
    """Rows as aligned columns: the first column left-aligned (labels), the others right-aligned (numbers)."""
    body = [[cell(v) for v in row] for row in rows]
    lines = ([list(map(str, headers))] if headers is not None else []) + body
    if not lines:
        return title or ""
    columns = max(len(line) for line in lines)
    lines = [line + [""] * (columns - len(line)) for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(columns)]
    pad = " " * indent
    text = [
        pad + "  ".join([line[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(line[1:], widths[1:])]).rstrip()
        for line in lines
    ]
    if headers is not None:
        text.insert(1, pad + "  ".join("-" * w for w in widths))
    return "\n".join(([title] if title else []) + text)
