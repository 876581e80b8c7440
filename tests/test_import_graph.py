"""The layout rules, checked on the source: data flows harness -> trainers -> reports -> export -> server, no module
imports back up the stream, and there is no import circle.

Allowed exceptions: the command line (harness/cli*) and the main job (harness/pipeline.py) sit on top and may
start any stage; benchmarks/ (lm-eval task glue and the quality gates) may read harness and reports.
"""

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("harness", "trainers", "reports", "export", "server", "benchmarks")
STAGE = {"harness": 0, "trainers": 1, "benchmarks": 2, "reports": 3, "export": 4, "server": 5}
TOP_OF_THE_STACK = ("harness/cli", "harness/pipeline.py")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: dict) -> set[str]:
    """Project modules that `path` imports (anywhere in the file: a function-level import is still an edge)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from pkg import mod` depends on pkg.mod; `from pkg import name` on pkg (its __init__)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_no_module_imports_back_up_the_stream():
    offences = []
    for name, deps in graph().items():
        path = str(modules()[name].relative_to(REPO))
        if path.startswith(TOP_OF_THE_STACK):
            continue
        for dep in deps:
            if STAGE[dep.split(".")[0]] > STAGE[name.split(".")[0]]:
                offences.append(f"{name} -> {dep}")
    assert not offences, "imports against the data flow:\n" + "\n".join(sorted(offences))


def test_there_is_no_import_circle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


HARNESS_PACKAGES = ("cli", "bench", "data", "eval", "judge", "ratings")


def unit(module: str) -> str:
    """The box a module is drawn in: a top-level stage, a harness sub-package, the main job, or harness's core."""
    parts = module.split(".")
    if parts[0] != "harness":
        return parts[0]
    if len(parts) > 1 and parts[1] in HARNESS_PACKAGES:
        return f"harness_{parts[1]}"
    return "harness_pipeline" if module == "harness.pipeline" else "harness_core"


def test_the_drawn_import_graph_is_the_real_one():
    """docs/architecture.md draws the imports between boxes (mermaid); the drawing must match the code."""
    import re

    real = {(unit(a), unit(b)) for a, deps in graph().items() for b in deps if unit(a) != unit(b)}
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", text, flags=re.M))
    assert drawn == real, (
        f"missing from the drawing: {sorted(real - drawn)}; drawn but not imported: {sorted(drawn - real)}"
    )
