"""The hardware-track table as text: CSV, JSON, Markdown and LaTeX (booktabs, the paper's
layout of Tables 17–20). Plain functions of the table dict (``coordinator.results.table`` or
``coordinator.reference.table``), used by the API and the CLI alike; no database here.

Latencies print with 3 decimals as in the paper; speedup, compression and OM with 2 as in
Table 3."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from coordinator.metrics import algorithm_label, library_label

FORMATS = ("json", "csv", "markdown", "latex")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv",
    "markdown": "text/markdown",
    "latex": "application/x-latex",
}
SUFFIXES = {"json": "json", "csv": "csv", "markdown": "md", "latex": "tex"}

CSV_COLUMNS = [
    "device",
    "threads",
    "arch",
    "library",
    "algorithm",
    "latency_ms",  # the reference layout
    "n",
    "stdev_ms",
    "cpu_model",
    "device_fingerprint",
    "artifact_sha256",
    "runtime_version",
    "model_id",
    "result_id",
    "device_id",
    "source",  # measured, or paper (the reference fleet)
]

DASH = "–"


def render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return to_json(data)
    if fmt == "csv":
        return to_csv(data)
    if fmt == "markdown":
        return to_markdown(data)
    if fmt == "latex":
        return to_latex(data)
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def to_csv(data: dict[str, Any]) -> str:
    """One cell per line: the reference CSV's columns, then provenance."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in data["cells"]:
        w.writerow(row)
    return buf.getvalue()


# ------------------------------------------------------------------ shared pieces


def fmt_ms(v: float | None) -> str:
    return DASH if v is None else f"{v:.3f}"


def fmt_ratio(v: float | None) -> str:
    return DASH if v is None else f"{v:.2f}"


def value_columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["library"], a) for c in data["columns"] for a in c["algorithms"]]


def row_values(data: dict[str, Any], row: dict[str, Any]) -> list[str]:
    return [fmt_ms(row["latency_ms"].get(lib, {}).get(a)) for lib, a in value_columns(data)]


class Column(NamedTuple):
    """A column of a table of records: its header, the record's field, how a value prints
    (ratios by default: speedup, compression, OM)."""

    header: str
    key: str
    show: Callable[[Any], str] = fmt_ratio


def _names(names: list[str]) -> str:
    return ", ".join(names) or DASH


# an OM row per variant and over the common set (metrics.om_rows)
OM_COLUMNS = [
    Column("Library", "library", library_label),
    Column("Algorithm", "algorithm", algorithm_label),
    Column("Speedup", "speedup"),
    Column("cells", "speedup_cells", str),
    Column("Speedup (common set)", "common_speedup"),
    Column("cells", "common_speedup_cells", str),
    Column("Compression", "compression"),
    Column("archs", "compression_archs", _names),
    Column("OM", "om"),
    Column("OM (common set)", "common_om"),
]
# the paper's Table 3 against its Tables 17-20 (reference.table3)
TABLE3_COLUMNS = [
    Column("Algorithm", "algorithm", str),
    Column("Table 3 speedup", "speedup"),
    Column("from the cells", "speedup_from_cells"),
    Column("Table 3 compression", "compression"),
    Column("Table 3 OM", "om"),
    Column("OM recomputed", "om_recomputed"),
    Column("OM from the cells", "om_from_cells"),
]


def _records_table(
    columns: list[Column], rows: list[dict[str, Any]]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``rows`` in ``columns``."""
    head = [c.header for c in columns]
    return head, [[c.show(r[c.key]) for c in columns] for r in rows]


def om_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an OM table: per variant and over the common set."""
    return _records_table(OM_COLUMNS, rows)


def table3_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    return _records_table(TABLE3_COLUMNS, rows)


def averaging_lines(om: list[dict[str, Any]]) -> list[str]:
    out = []
    for o in om:
        name = f"{library_label(o['library'])} {algorithm_label(o['algorithm'])}"
        out.append(f"{name}: {o['averaging']}; {o['common_averaging']}")
    return out


def excluded_lines(om: list[dict[str, Any]]) -> list[str]:
    """Why cells were left out, once each (a cell can be left out of several averages)."""
    seen: dict[str, None] = {}
    for o in om:
        for c in [*o.get("excluded", []), *o.get("common_excluded", [])]:
            seen.setdefault(f"{library_label(c['library'])}: {c['reason']}", None)
    return list(seen)


def _sections(data: dict[str, Any]) -> Iterable[tuple[str, list[dict[str, Any]]]]:
    if data.get("om"):
        yield "Speedup, compression and OM", data["om"]
    ref = data.get("reference")
    if ref:
        yield f"Speedup and OM of the paper's cells ({ref['source']})", ref["om"]


# ------------------------------------------------------------------ Markdown


def md_escape(s: Any) -> str:
    return str(s).replace("\\", "\\\\").replace("|", "\\|")


def _md_table(head: list[str], body: list[list[str]], right_from: int) -> list[str]:
    align = ["---" if i < right_from else "--:" for i in range(len(head))]
    lines = [
        "| " + " | ".join(md_escape(h) for h in head) + " |",
        "|" + "|".join(align) + "|",
    ]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in body]
    return lines


def to_markdown(data: dict[str, Any]) -> str:
    lines = ["## Hardware inference: median latency (ms)", ""]
    if not data["rows"]:
        lines.append("No valid results yet.")
    else:
        head = ["Hardware", "Threads", "Arch."] + [
            f"{library_label(lib)} {algorithm_label(a)}" for lib, a in value_columns(data)
        ]
        body = [
            [r["device"], str(r["threads"]), r["arch"], *row_values(data, r)] for r in data["rows"]
        ]
        lines += _md_table(head, body, right_from=3)
    for title, om in _sections(data):
        lines += ["", f"## {title}", ""]
        head, body = om_table(om)
        lines += _md_table(head, body, right_from=2)
        lines += ["", "Averaging:", ""] + [f"- {md_escape(x)}" for x in averaging_lines(om)]
        left = excluded_lines(om)
        lines += ["", "Cells left out:" if left else "Cells left out: none."]
        lines += ([""] if left else []) + [f"- {md_escape(x)}" for x in left]
    ref = data.get("reference")
    if ref:
        lines += ["", "## The paper's Table 3 against its Tables 17–20", ""]
        head, body = table3_table(ref["table3"])
        lines += _md_table(head, body, right_from=1)
        lines += ["", md_escape(ref["note"])]
    if data.get("averaging"):
        lines += ["", f"Definitions: {md_escape(data['averaging'])}."]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------ LaTeX

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",  # our "no value" dash; the en dash as TeX spells it in any encoding
}


def latex_escape(s: Any) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(s))


def _latex_comment(s: str) -> str:
    # a comment runs to the end of the line: a newline in the text would end it
    return "% " + " ".join(str(s).split())


def latency_latex(data: dict[str, Any]) -> list[str]:
    """Tables 17–20's layout: rows Hardware / Threads / Arch. (a device's name and a thread
    count written once, on their first row), one column group per library with FP32 / BNN /
    ReAct, a rule between devices."""
    cols = data["columns"]
    n = 3 + sum(len(c["algorithms"]) for c in cols)
    out = [
        "% needs \\usepackage{booktabs}",
        r"\begin{tabular}{lcl" + "r" * (n - 3) + "}",
        r"\toprule",
    ]
    groups, rules, start = [], [], 4
    for c in cols:
        k = len(c["algorithms"])
        groups.append(rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(library_label(c['library']))}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + k - 1}}}")
        start += k
    out.append(r"Hardware & Threads & Arch. & " + " & ".join(groups) + r" \\")
    out.append(" ".join(rules))
    subs = [latex_escape(algorithm_label(a)) for c in cols for a in c["algorithms"]]
    out.append(" & & & " + " & ".join(subs) + r" \\")
    out.append(r"\midrule")
    prev: tuple[Any, Any] = (None, None)
    for r in data["rows"]:
        dev = (r["device"], r.get("device_id"))
        if prev[0] is not None and dev != prev[0]:
            out.append(r"\midrule")
        new_dev, new_thr = dev != prev[0], (dev, r["threads"]) != prev
        cells = [
            latex_escape(r["device"]) if new_dev else "",
            str(r["threads"]) if new_dev or new_thr else "",
            latex_escape(r["arch"]),
            *(latex_escape(v) for v in row_values(data, r)),
        ]
        out.append(" & ".join(cells) + r" \\")
        prev = (dev, r["threads"])
    out += [r"\bottomrule", r"\end{tabular}"]
    return out


def _latex_tabular(head: list[str], body: list[list[str]], left: int) -> list[str]:
    out = [
        r"\begin{tabular}{" + "l" * left + "r" * (len(head) - left) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    out += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in body]
    out += [r"\bottomrule", r"\end{tabular}"]
    return out


def to_latex(data: dict[str, Any]) -> str:
    lines = [
        _latex_comment("bnnbench hardware track: median latency (ms)"),
    ]
    if data.get("averaging"):
        lines.append(_latex_comment(f"definitions: {data['averaging']}"))
    lines += latency_latex(data)
    for title, om in _sections(data):
        lines += ["", _latex_comment(title)]
        lines += [_latex_comment(x) for x in averaging_lines(om)]
        lines += [_latex_comment(f"left out: {x}") for x in excluded_lines(om)]
        head, body = om_table(om)
        lines += _latex_tabular(head, body, left=2)
    ref = data.get("reference")
    if ref:
        lines += ["", _latex_comment("the paper's Table 3 against its Tables 17-20")]
        lines.append(_latex_comment(ref["note"]))
        head, body = table3_table(ref["table3"])
        lines += _latex_tabular(head, body, left=1)
    return "\n".join(lines) + "\n"
