"""Tables for the command line: aligned with rich, never cut short when piped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table


def console() -> Console:
    """A console for stdout: the terminal's width, or unlimited when piped or captured, so a
    long id is never truncated or wrapped."""
    c = Console(highlight=False)
    return c if c.is_terminal else Console(width=1000, highlight=False, no_color=True)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]], *,
                title: str | None = None, right: Sequence[str] = ()) -> None:
    """Print ``rows`` under ``columns``; the columns named in ``right`` (numbers) are
    right-aligned."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False,
                  header_style="bold")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console().print(table)
