"""Static import-graph check: the layers hold, one way only.

    python -m evpay.testbed.import_graph [ROOT] [--quiet]

Parses every .py under evpay/, terminals/ and sessions/ of ROOT (default: this checkout) with
``ast`` -- no Django, nothing imported -- collects every import of our own packages (module- and
function-level, relative ones resolved, ``from X import Y`` where Y is a submodule counted as an
import of X.Y), puts each module in a layer by longest matching prefix and reports:

* the number of import edges per (importer layer -> imported layer) pair;
* VIOLATIONS: an import of a higher layer, or any ``django`` import in a no-Django layer;
* a cycle between layers, if any (there is none when nothing points upward);
* information only: import cycles between top-level modules inside one package, and how many
  imports of our own code are made inside functions (they can hide cycles).

Exit status 1 if there is any violation, 0 otherwise. See docs/layers.md for the picture.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# THE LAYER TABLE -- lowest layer first. A module may import only from its own layer or a lower
# one. A module belongs to the layer with the longest prefix matching its dotted name (a prefix
# matches the module itself and everything below it). Layers with no_django=True may not import
# ``django`` at all.
# ---------------------------------------------------------------------------------------------
LAYERS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    # (name, module prefixes, no_django)
    # 1. The O.P.I. protocol library: framing, messages, the client. Pure Python.
    ("protocol", ("terminals.opi",), True),
    # 2. The IM30 emulator: a peer process speaking O.P.I.; may use the protocol library.
    ("emulator", ("terminals.emulator",), True),
    # 3. The project's shared base. (It may use the protocol library -- money reads its ISO 4217
    #    table -- but nothing else of terminals/ or sessions/.)
    (
        "base",
        (
            "evpay",  # the package itself: evpay/__init__.py only (the catch-all is layer 6)
            "evpay.models",
            "evpay.audit",
            "evpay.money",
            "evpay.db",
            "evpay.exceptions",
            "evpay.jobs",
            "evpay.roles",
            "evpay.env",
            "evpay.logging",
            "evpay.web",
            "evpay.validation",
            "evpay.pan",
            "evpay.admin",
            "evpay.apps",
            "evpay.context_processors",
            "evpay.templatetags",
            "evpay.tasks",
            "evpay.celery",
            "evpay.broker",
            "evpay.supervision",
            "evpay.settings",
            "evpay.wsgi",
            "evpay.asgi",
            "evpay.health",
            "evpay.security",  # idle timeout and the admins' second factor (middleware)
            "evpay.charts",  # pure SVG geometry for the pages of every app
            "evpay.throttle",  # database-backed rate limits for public forms
            "evpay.i18n",  # languages: the staff member's choice (middleware, header selector)
        ),
        False,
    ),
    # 4. The fleet: terminals, the terminal gateway, terminal jobs and pages.
    ("fleet", ("terminals",), False),
    # 5. Charging: sessions, payments, journal, settlement.
    ("charging", ("sessions",), False),
    # 6. Pages and tools: everything else under evpay/ (views, urls, commands, the testbed).
    ("pages and tools", ("evpay",), False),
)

# Prefixes that name exactly one module, not a subtree (so evpay.views is not in "base").
EXACT_PREFIXES: frozenset[tuple[str, str]] = frozenset({("base", "evpay")})

OWN_PACKAGES = ("evpay", "terminals", "sessions")
SKIP_DIRS = frozenset({"migrations", "__pycache__"})

LAYER_NAMES = tuple(name for name, _, _ in LAYERS)
LAYER_RANK = {name: rank for rank, name in enumerate(LAYER_NAMES)}
NO_DJANGO = frozenset(name for name, _, no_django in LAYERS if no_django)


def layer_of(module: str) -> str:
    """The layer of a dotted module name: the longest matching prefix wins (an exact-only
    prefix beats a subtree prefix of the same length, so ``evpay`` itself is base)."""
    best, best_score = None, (-1, False)
    for name, prefixes, _ in LAYERS:
        for prefix in prefixes:
            exact = (name, prefix) in EXACT_PREFIXES
            hit = module == prefix or (not exact and module.startswith(prefix + "."))
            if hit and (len(prefix), exact) > best_score:
                best, best_score = name, (len(prefix), exact)
    if best is None:
        raise ValueError(f"{module!r} is not in any layer")
    return best


@dataclass(frozen=True)
class Edge:
    path: str  # importing file, relative to ROOT
    line: int
    importer: str  # dotted module name
    imported: str  # dotted module name (resolved)
    src: str  # importer's layer
    dst: str  # imported module's layer
    in_function: bool


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    importer: str
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported} ({self.reason})"


@dataclass
class Report:
    root: Path
    modules: int = 0
    edges: list[Edge] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    layer_cycle: list[str] | None = None  # e.g. ["base", "charging", "base"]
    layers_on_cycles: list[str] = field(default_factory=list)
    module_cycles: list[list[str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def pair_counts(self) -> list[tuple[str, str, int]]:
        counts = Counter((e.src, e.dst) for e in self.edges)
        return sorted(
            ((s, d, n) for (s, d), n in counts.items()),
            key=lambda t: (LAYER_RANK[t[0]], LAYER_RANK[t[1]]),
        )

    def function_level(self) -> Counter[str]:
        return Counter(e.importer.split(".")[0] for e in self.edges if e.in_function)

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAIL"
        fn = sum(self.function_level().values())
        return (
            f"import graph {verdict}: {len(self.violations)} violation(s), "
            f"{len(self.edges)} own-code import edges in {self.modules} modules, "
            f"{fn} function-level, "
            f"{'no layer cycle' if self.layer_cycle is None else 'LAYER CYCLE'}"
        )

    def format(self, quiet: bool = False) -> str:
        out: list[str] = []
        if not quiet:
            out.append(f"import graph of {self.root}")
            out.append("edges between layers (importer -> imported):")
            for s, d, n in self.pair_counts():
                mark = "   <-- UPWARD" if LAYER_RANK[d] > LAYER_RANK[s] else ""
                out.append(f"  {s} -> {d}: {n}{mark}")
        if self.violations:
            out.append(f"VIOLATIONS ({len(self.violations)}):")
            out.extend(f"  {v}" for v in self.violations)
        elif not quiet:
            out.append("VIOLATIONS: none")
        if not quiet:
            if self.layer_cycle is None:
                out.append("no cycle between layers")
            else:
                out.append(
                    "CYCLE between layers: "
                    + " -> ".join(self.layer_cycle)
                    + f" (layers on a cycle: {', '.join(self.layers_on_cycles)})"
                )
            out.append("module cycles inside one package (information, not a failure):")
            if self.module_cycles:
                out.extend(f"  {_cycle_text(c)}" for c in self.module_cycles)
            else:
                out.append("  none")
            fn = self.function_level()
            parts = ", ".join(f"{pkg} {fn.get(pkg, 0)}" for pkg in OWN_PACKAGES)
            out.append(
                f"function-level imports of our own code (information): {parts} "
                f"(total {sum(fn.values())})"
            )
        out.append(self.summary())
        return "\n".join(out)


def _cycle_text(cycle: list[str]) -> str:
    if len(cycle) == 2:
        return f"{cycle[0]} <-> {cycle[1]}"
    return " -> ".join([*cycle, cycle[0]])


# --- collecting ------------------------------------------------------------------------------


def _module_files(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every .py under our packages."""
    found: dict[str, tuple[Path, bool]] = {}
    for pkg in OWN_PACKAGES:
        base = root / pkg
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root)
            if SKIP_DIRS.intersection(rel.parts[:-1]):
                continue
            parts = list(rel.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def _is_own(name: str) -> bool:
    return name.split(".")[0] in OWN_PACKAGES


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str | None:
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        if level - 1 > len(package):
            return None
        package = package[: len(package) - (level - 1)]
    if not package:
        return None
    return ".".join([*package, name] if name else package)


class _Collector(ast.NodeVisitor):
    """Yields (line, imported name, in_function) for every import, resolved to absolute names."""

    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.module, self.is_package, self.known = module, is_package, known
        self.depth = 0  # function nesting
        self.found: list[tuple[int, str, bool]] = []
        self.unresolved: list[tuple[int, str]] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, alias.name, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = _resolve_relative(self.module, self.is_package, node.level, node.module)
            if base is None:
                dots = "." * node.level
                self.unresolved.append((node.lineno, f"{dots}{node.module or ''}"))
                return
        else:
            base = node.module or ""
        targets = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            targets.append(sub if alias.name != "*" and sub in self.known else base)
        for target in dict.fromkeys(targets):  # one edge per distinct target and line
            self.found.append((node.lineno, target, self.depth > 0))


def check(root: Path) -> Report:
    """Parse the tree under ``root`` and check it against LAYERS."""
    root = Path(root)
    files = _module_files(root)
    known = set(files)
    report = Report(root=root, modules=len(files))
    for module, (path, is_package) in sorted(files.items()):
        rel = path.relative_to(root).as_posix()
        src = layer_of(module)
        try:
            tree = ast.parse(path.read_bytes(), filename=rel)
        except SyntaxError as exc:
            report.violations.append(
                Violation(rel, exc.lineno or 0, module, "?", f"cannot parse: {exc.msg}")
            )
            continue
        collector = _Collector(module, is_package, known)
        collector.visit(tree)
        for line, name in collector.unresolved:
            report.violations.append(
                Violation(rel, line, module, name, "relative import above the top package")
            )
        for line, name, in_function in collector.found:
            top = name.split(".")[0]
            if top == "django" and src in NO_DJANGO:
                report.violations.append(
                    Violation(rel, line, module, name, f"django in the {src} layer")
                )
            if not _is_own(name):
                continue
            dst = layer_of(name)
            edge = Edge(rel, line, module, name, src, dst, in_function)
            report.edges.append(edge)
            if LAYER_RANK[dst] > LAYER_RANK[src]:
                where = "function-level " if in_function else ""
                report.violations.append(
                    Violation(rel, line, module, name, f"{where}upward: {src} -> {dst}")
                )
    report.violations.sort(key=lambda v: (v.path, v.line, v.imported))
    report.layer_cycle, report.layers_on_cycles = _layer_cycle(report.edges)
    report.module_cycles = _module_cycles(report.edges)
    return report


# --- cycles ----------------------------------------------------------------------------------


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
    return sorted(result)


def _one_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """A shortest cycle through the first member, staying inside the component."""
    inside = set(members)
    start = members[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                return paths[node]
            if child in inside and child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return members  # unreachable for a real component


def _graph(pairs) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for a, b in pairs:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    return graph


def _layer_cycle(edges: list[Edge]) -> tuple[list[str] | None, list[str]]:
    """A shortest cycle through the lowest layer on any cycle, and all layers on cycles."""
    graph = _graph((e.src, e.dst) for e in edges)
    on_cycles = sorted(
        (layer for component in _sccs(graph) for layer in component), key=LAYER_RANK.__getitem__
    )
    if not on_cycles:
        return None, []
    component = next(c for c in _sccs(graph) if on_cycles[0] in c)
    cycle = _one_cycle(graph, sorted(component, key=LAYER_RANK.__getitem__))
    return [*cycle, cycle[0]], on_cycles


def _top_module(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _module_cycles(edges: list[Edge]) -> list[list[str]]:
    """Cycles between top-level modules (pkg.mod) of the same package, e.g. sessions.services."""
    graph = _graph(
        (_top_module(e.importer), _top_module(e.imported))
        for e in edges
        if e.importer.split(".")[0] == e.imported.split(".")[0]
    )
    return [_one_cycle(graph, members) for members in _sccs(graph)]


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evpay.testbed.import_graph", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "root",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="repository root holding evpay/, terminals/, sessions/ (default: this checkout)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only violations and the summary line"
    )
    args = parser.parse_args(argv)
    report = check(args.root)
    print(report.format(quiet=args.quiet))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
