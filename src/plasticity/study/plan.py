"""Plan a study as a DAG of nodes, one per stage (``plasticity.study.stages``) and grid point.

The planner knows no kind by name: each stage that starts results rows (a pretraining run, an existing
checkpoint) gives its grid points; for each, the stages it is built on come first (through their declared
inputs: tokenizer -> data -> pretrain), then every stage built on what it provides, recursively (analyze,
finetune -> evaluate), each turning the point and the nodes before it into its node.

A node's identity is a hash of its resolved config and its inputs' identities, and its output directory is
named by it, so identical work is never done twice (across studies sharing an ``out_dir``; tokenizers and
token caches are shared through the global cache), and a changed key re-runs only the nodes that depend on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasticity.study.spec import StudySpec, all_axes
from plasticity.study.stages import (
    KINDS,
    STAGES,
    GridPoint,
    Node,
    Stage,
    Upstream,
    axis_owner,
    built_on,
    downstream_of,
    inputs_of,
)
from plasticity.study.stages import node_hash as node_hash
from plasticity.study.stages.finetune import task_name as task_name

__all__ = ["KINDS", "Node", "Plan", "Row", "build_plan", "node_hash", "task_name"]


@dataclass
class Row:
    """One model x grid point of the stages built on it (tasks fine-tuned from the same model share a row)."""

    axes: dict[str, Any]
    model: str  # the model node: a pretraining run, or an existing checkpoint
    nodes: list[tuple[str, str]] = field(default_factory=list)  # (column label, node id) of the nodes built on it


@dataclass
class Plan:
    spec: StudySpec
    nodes: dict[str, Node]  # in dependency order
    rows: list[Row]

    @property
    def root(self) -> Path:
        return Path(self.spec.out_dir).resolve()

    def row_nodes(self, row: Row, kind: str) -> list[tuple[str, Node]]:
        """(column label, node) of a row's nodes of one kind, in plan order (``finetune``: one per task)."""
        return [(label, self.nodes[nid]) for label, nid in row.nodes if self.nodes[nid].kind == kind]

    def dependents(self, node_id: str) -> set[str]:
        """Every node that (transitively) depends on `node_id`."""
        out: set[str] = set()
        for n in self.nodes.values():  # dependency order: deps come first
            if node_id in n.deps or out.intersection(n.deps):
                out.add(n.id)
        return out


@dataclass
class _Builder:
    spec: StudySpec
    grid: dict[str, list[Any]]
    owners: dict[str, tuple[str, str]]
    nodes: dict[str, Node] = field(default_factory=dict)
    rows: dict[tuple, Row] = field(default_factory=dict)

    def point(self, axes: dict[str, Any]) -> GridPoint:
        return GridPoint(axes=axes, grid=self.grid, owners=self.owners,
                         make_config=lambda kind, values: STAGES[kind].config(self.spec, values))

    def add(self, stage: Stage, point: GridPoint, upstream: Upstream) -> Node:
        """Build `stage`'s node at `point`; an identical node built before is the one kept."""
        node = self.nodes.setdefault((n := stage.build(self.spec, point, upstream)).id, n)
        if node.track is None and stage.in_tracker:
            _track(self.spec, node, point.tracked(upstream.kinds | {stage.kind}))
        return node

    def row(self, root: Stage, axes: dict[str, Any]) -> None:
        """The model of one row (after the stages it is built on) and every node built on it."""
        point, upstream = self.point(axes), Upstream()
        for s in [*inputs_of(root), root]:
            upstream = s.extend(upstream, self.add(s, point, upstream))
        model = upstream[root.provides]
        within = {k for k, (kind, sub) in self.owners.items() if sub in STAGES[kind].within_row}
        row_axes = {k: v for k, v in axes.items() if k not in within}
        key = (model.id, json.dumps(row_axes, sort_keys=True, default=str))
        row = self.rows.setdefault(key, Row(axes=row_axes, model=model.id, nodes=[(model.label, model.id)]))
        self.grow(root, point, upstream, row)

    def grow(self, on: Stage, point: GridPoint, upstream: Upstream, row: Row) -> None:
        """The nodes of every stage built on `on`'s output (each variant of a stage: one node)."""
        for s in built_on(on.provides):
            if not s.enabled(self.spec):
                continue
            for p in s.variants(self.spec, point):
                node = self.add(s, p, upstream)
                entry = (p.column or upstream[s.consumes].label, node.id)
                if entry not in row.nodes:  # a row's model analysed once, whichever task reached it first
                    row.nodes.append(entry)
                self.grow(s, p, s.extend(upstream, node), row)


def build_plan(spec: StudySpec) -> Plan:
    """Expand the axes into nodes and result rows (the spec must be validated): the rows of every stage that
    makes a model (every pretraining grid point, every checkpoint entry), each crossed with the axes of the
    stages on its path."""
    grid = all_axes(spec)
    owners = {axis: (owner.kind, key) for axis, (owner, key) in ((a, axis_owner(a)) for a in grid)}
    b = _Builder(spec, grid, owners)
    for root in STAGES.values():
        path = {s.kind for s in [*inputs_of(root), root, *downstream_of(root)]}
        for axes in root.rows(spec, {k: v for k, v in grid.items() if owners[k][0] in path}):
            b.row(root, axes)
    return Plan(spec=spec, nodes=_ordered(b.nodes), rows=list(b.rows.values()))


def _track(spec: StudySpec, node: Node, axes: dict[str, Any]) -> None:
    """The node's tracking context (first grid point that made it): study name, node label and id, and the
    axis values it stands for (those of its own stage and of the stages before it)."""
    from plasticity.tracking import backend_names

    node.track = {"backends": backend_names(spec.tracker), "group": spec.name, "node": node.id,
                  "name": f"{node.kind} {node.label}" if node.label != "-" else f"{node.kind} {node.id}",
                  "axes": axes}


def _ordered(nodes: dict[str, Node]) -> dict[str, Node]:
    rank = {k: i for i, k in enumerate(STAGES)}
    return dict(sorted(nodes.items(), key=lambda kv: rank[kv[1].kind]))
