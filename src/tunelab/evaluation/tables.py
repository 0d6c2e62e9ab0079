"""Markdown tables of the comparison reports (compare, compress): rows that finished, then
the ones that failed with their reason."""

from __future__ import annotations

from typing import Any


def with_failures(head: str, lines: list[str], rows: list[dict[str, Any]], name: str) -> str:
    """`head` + the finished rows' `lines` + one line per failed row (row[name] and its
    reason), as one Markdown block."""
    failed = [
        f"- **{r[name]}** failed: {r.get('reason', '?')}" for r in rows if r["status"] != "ok"
    ]
    return head + "\n".join(lines) + ("\n\n" + "\n".join(failed) if failed else "") + "\n"
