"""The report's text: loading its JSON inputs, number formatting, and a document written as both
Markdown and HTML from the same calls."""
from __future__ import annotations

import html
import json
from pathlib import Path

from graphs.errors import InputError


MAX_ROWS = 30


def load_json(path: Path, required: bool = False):
    if not path.is_file():
        if required:
            raise InputError(f"{path.parent}: no {path.name} here (not a `compress prune` output directory?)")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None


def fmt_num(value, fmt: str = "{:.3f}") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return fmt.format(value)
    return str(value)


def fmt_ratio(before, after) -> str:
    if not before or after is None:
        return "n/a"
    return f"{after / before:.3f}"


def fmt_count(n) -> str:
    if n is None:
        return "n/a"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


class Doc:
    """Report content as a list of blocks, rendered both to Markdown and to HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def para(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]):
        self.blocks.append(("ul", items))

    def image(self, rel: str, alt: str):
        self.blocks.append(("img", rel, alt))

    def table(self, header: list[str], rows: list[list], note: str | None = None, limit: int = MAX_ROWS):
        rows = [[fmt_num(c) if not isinstance(c, str) else c for c in r] for r in rows]
        if len(rows) > limit:
            note = (note + " " if note else "") + f"Showing {limit} of {len(rows)} rows."
            rows = rows[:limit]
        self.blocks.append(("table", header, rows, note))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
            elif b[0] == "table":
                _, header, rows, note = b
                cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                lines = ["| " + " | ".join(cell(h) for h in header) + " |",
                         "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
                if note:
                    lines.append("\n*" + note + "*")
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "img":
                body.append(f'<figure><img src="{e(b[1])}" alt="{e(b[2])}"><figcaption>{e(b[2])}</figcaption></figure>')
            elif b[0] == "table":
                _, header, rows, note = b
                t = ["<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
                t += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
                t.append("</tbody></table>")
                if note:
                    t.append(f'<p class="note">{e(note)}</p>')
                body.append("".join(t))
        css = ("body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;"
               "padding:0 1em;color:#222;line-height:1.45}h1,h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"
               "table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}th,td{border:1px solid #ccc;"
               "padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
               "tr:nth-child(even){background:#fafafa}img{max-width:100%;border:1px solid #eee}"
               "figure{margin:1em 0}figcaption{color:#666;font-size:.85em}.note{color:#777;font-size:.85em}"
               "code{background:#f3f3f3;padding:0 .25em;border-radius:3px}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{e(title)}</title><style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** the way the Markdown does."""
    import re

    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    return s


def latency_target(latency: dict) -> str:
    """What a budget was measured on, e.g. 'torch cuda, fp32, batch 8' (summaries older than these keys: the backend)."""
    where = " ".join(str(latency[k]) for k in ("backend", "provider") if latency.get(k))
    extras = [str(latency["precision"])] if latency.get("precision") else []
    extras += [f"batch {latency['batch']}"] if latency.get("batch") else []
    return ", ".join([where or "?", *extras])
