"""The comparison's tables: every round's figures, the medians and this service's ratios."""

import statistics
from dataclasses import dataclass

SERVICE = "service"


@dataclass(frozen=True)
class Face:
    """One face compared: a metric of this service against the same metric of its peers."""

    name: str
    title: str
    metric: str
    unit: str
    servers: tuple
    peers: tuple
    higher_is_better: bool = True
    target: str = ""
    limit: str = ""


def value(results, round_number, server, face):
    """The face's figure of one server in one round, or None when it was not measured."""
    figures = results.get(round_number, {}).get(server, {}).get(face.name)
    return figures.get(face.metric) if figures else None


def best_peer(face, values):
    """(peer, figure) of the best peer that has a figure, or (None, None)."""
    measured = [(peer, values[peer]) for peer in face.peers if values.get(peer) is not None]
    if not measured:
        return None, None
    pick = max if face.higher_is_better else min
    return pick(measured, key=lambda item: item[1])


def ratio(face, values):
    """This service's figure ÷ the best peer's (for a latency, below 1 is better), or None."""
    _, best = best_peer(face, values)
    own = values.get(SERVICE)
    return own / best if own is not None and best else None


def spread(numbers):
    """'median (min–max)' of the numbers that are not None, or '—'."""
    numbers = [number for number in numbers if number is not None]
    if not numbers:
        return "—"
    return (f"{statistics.median(numbers):.2f} ({min(numbers):.2f}–{max(numbers):.2f}, "
            f"{len(numbers)} rounds)")


def cell(number, digits=1):
    """A figure for a table cell, or '—' when it is missing."""
    return "—" if number is None else f"{number:,.{digits}f}"


def face_rows(face, results, extra_p99):
    """One markdown row per round, then each column's median."""
    columns, ratios, limits = {server: [] for server in face.servers}, [], []
    p99s, rows = [], []
    for round_number in sorted(results):
        values = {server: value(results, round_number, server, face) for server in face.servers}
        for server, number in values.items():
            columns[server].append(number)
        peer, _ = best_peer(face, values)
        ratios.append(ratio(face, values))
        row = [str(round_number), *(cell(values[server]) for server in face.servers)]
        if face.peers:
            row += [peer or "—", cell(ratios[-1], 2)]
        if extra_p99:
            figures = results[round_number].get(SERVICE, {}).get(face.name) or {}
            p99s.append(figures.get("p99_ms"))
            row.append(cell(p99s[-1]))
        if face.limit:
            limit = value(results, round_number, face.limit, face)
            limits.append(values[SERVICE] / limit if values.get(SERVICE) and limit else None)
            row += [cell(limit), cell(limits[-1], 2)]
        rows.append(row)
    median = ["median", *(cell(_median(columns[server])) for server in face.servers)]
    if face.peers:
        median += ["", cell(_median(ratios), 2)]
    if extra_p99:
        median.append(cell(_median(p99s)))
    if face.limit:
        median += ["", cell(_median(limits), 2)]
    return rows + [median], ratios, limits


def _median(numbers):
    """The median of the numbers that are not None, or None."""
    numbers = [number for number in numbers if number is not None]
    return statistics.median(numbers) if numbers else None


def format_face(face, results, titles):
    """The face's markdown table, with the median ratio and its spread below."""
    extra_p99 = face.metric == "requests_per_second" and face.limit != ""
    header = ["round", *(f"{titles.get(server, server)}, {face.unit}" for server in face.servers)]
    if face.peers:
        header += ["best peer", "this ÷ best peer"]
    if extra_p99:
        header.append("this service's p99 ms")
    if face.limit:
        header += [f"{face.limit}, images/s", f"this ÷ {face.limit}"]
    rows, ratios, limits = face_rows(face, results, extra_p99)
    lines = [f"### {face.title}", "", "| " + " | ".join(header) + " |",
             "| " + " | ".join(["---:"] * len(header)) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    if face.peers:
        lines.append(f"This service ÷ the best peer: {spread(ratios)}; target {face.target}.")
    if face.limit:
        lines.append(f"This service ÷ the {face.limit} limit: {spread(limits)}.")
    return "\n".join(lines)
