"""The package's layers point one way: run -> exp -> config -> models, data_provider, utils.

Read from the source (ast), every import counts, also one inside a function: nothing imports run.py,
config never imports exp, the bottom layer imports neither, and the modules import each other
without a cycle (so no import hides inside a function to break one).
"""

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = {"run": 3, "exp": 2, "config": 1, "models": 0, "data_provider": 0, "utils": 0}


def modules() -> dict[str, Path]:
    found = {"run": ROOT / "run.py"}
    for package in LAYERS:
        folder = ROOT / package
        if folder.is_dir():
            for path in folder.glob("*.py"):
                found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imports(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(project module imported, line) for every import in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from config import tsl`` imports the module config.tsl
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]  # fmt: skip
        else:
            continue
        found += [(name, node.lineno) for name in names if name.split(".")[0] in LAYERS]
    return found


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports(path, set(known)) for name, path in known.items()}


def test_imports_point_down_the_layers_and_nothing_imports_run():
    wrong = []
    for module, targets in graph().items():
        layer = LAYERS[module.split(".")[0]]
        for target, line in targets:
            top = target.split(".")[0]
            if target == "run" or LAYERS[top] > layer or (layer == 0 and LAYERS[top] != 0):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports against the layers: " + "; ".join(wrong)


def test_tests_scripts_and_benchmarks_do_not_import_run_either():
    for folder in ("tests", "benchmarks", "scripts"):
        for path in (ROOT / folder).glob("*.py"):
            targets = [name for name, _ in imports(path, set(modules()))]
            assert "run" not in targets, f"{path.name} imports run.py (use exp.launch or config)"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph ``edges`` (module -> modules it imports), or None."""
    done, path = set(), []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        cycle = next(filter(None, (visit(target) for target in sorted(edges.get(module, ())))), None)
        path.pop()
        done.add(module)
        return cycle

    return next(filter(None, (visit(module) for module in sorted(edges))), None)


def test_modules_import_each_other_without_a_cycle():
    edges = {module: {target for target, _ in targets if target in modules()} for module, targets in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_an_import_inside_a_function_and_a_cycle(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from exp.launch import main\n    import run\n")
    assert [name for name, _ in imports(bad, set(modules()))] == ["exp.launch", "run"]
    assert find_cycle({"exp.exp": {"exp.trainer"}, "exp.trainer": {"utils.seed"}}) is None
    assert find_cycle({"exp.exp": {"exp.trainer"}, "exp.trainer": {"exp.exp"}}) == ["exp.exp", "exp.trainer", "exp.exp"]
