"""Simplifying: what training code leaves in an inference graph (Identity nodes,
straight-through estimators, nodes no output needs), rewritten before folding."""

from __future__ import annotations

from typing import Any


def _ste_source(node: Any, producer: dict[str, Any]) -> str | None:
    """For ``Add(Sub(s, y), y)`` (either operand order of the Add): ``s``."""
    p, q = node.input
    for d, y in ((p, q), (q, p)):
        sub = producer.get(d)
        if (
            sub is not None
            and sub.op_type == "Sub"
            and sub.domain in ("", "ai.onnx")
            and len(sub.input) == 2
            and sub.input[1] == y
            and y
        ):
            return sub.input[0]
    return None


def simplify_graph(graph: Any, shapes: dict[str, tuple[int, ...] | None]) -> list[str]:
    """Rewrite, in place, what training code leaves in an inference graph; returns notes.

    * ``Identity`` nodes vanish (their uses read the input), so ``Sign → Identity → Conv``
      still matches as a binary conv.
    * **Straight-through estimators** ``(s − y) + y`` — what ``(x.sign() − x).detach() + x``,
      ReActNet's ``out_forward.detach() − out3.detach() + out3`` and its weight STE
      ``bw.detach() − clip(W).detach() + clip(W)`` export as: the value is ``s`` (up to one
      float rounding of the add; the gradient path is dead at inference), so uses of the Add
      read ``s``. Only where ``s`` already has the Add's shape (no broadcasting is lost).
    * Nodes no graph output depends on are dropped (the STE's gradient-only branch: Less,
      Cast, polynomial, ...).

    Graph outputs are never renamed. Graphs with control flow (If/Loop/Scan subgraphs, which
    may read outer values by name) are left alone: those ops are refused later anyway."""
    from onnx import AttributeProto

    if any(
        a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        return []
    outputs = {o.name for o in graph.output}
    init_shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}

    def shape_of(v: str) -> tuple[int, ...] | None:
        return shapes.get(v) if v in shapes else init_shapes.get(v)

    rename: dict[str, str] = {}
    producer: dict[str, Any] = {}
    kept, ste, identities = [], [], 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        out = node.output[0] if len(node.output) == 1 else ""
        if node.domain in ("", "ai.onnx") and out and out not in outputs:
            if node.op_type == "Identity" and len(node.input) == 1 and node.input[0]:
                rename[out] = node.input[0]
                identities += 1
                continue
            if node.op_type == "Add" and len(node.input) == 2:
                s = _ste_source(node, producer)
                if s is not None and shape_of(s) is not None and shape_of(s) == shape_of(out):
                    rename[out] = s
                    ste.append(node.name)
                    continue
        for o in node.output:
            producer[o] = node
        kept.append(node)
    needed = set(outputs)
    live = []
    for node in reversed(kept):
        if any(o and o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    dead = len(kept) - len(live)
    del graph.node[:]
    graph.node.extend(live)
    notes = []
    if ste:
        notes.append(
            f"{len(ste)} straight-through estimator(s) (s − y) + y read as s (first: {ste[0]!r})"
        )
    if identities:
        notes.append(f"{identities} Identity node(s) removed")
    if dead:
        notes.append(f"{dead} node(s) that no output depends on dropped")
    return notes
