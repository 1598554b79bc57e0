"""The package's shape: imports flow one way."""
import ast

from conftest import ROOT


def _imports() -> dict[str, set[str]]:
    """module -> the landmarklib modules it imports (relative or absolute), read from the source."""
    graph = {}
    for path in (ROOT / "landmarklib").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    deps.add(node.module.split(".")[0])
                elif node.level == 1:
                    deps |= {a.name for a in node.names}
                elif node.module and node.module.startswith("landmarklib."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("landmarklib.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for d in graph.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_imports_flow_one_way_and_only_trainers_import_the_training_core():
    graph = _imports()
    for module in graph:
        assert module not in _reachable(graph, module), f"import cycle through {module}"
    # train (a run) and eda (its out-of-fold models) train; nothing else in the package climbs back into
    # the training core, and nothing imports a run.
    assert {m for m, deps in graph.items() if "engine" in deps} == {"eda", "train"}
    assert not {m for m, deps in graph.items() if "train" in deps}
    for module in ("predict", "ablation", "cache", "config", "metric", "plots", "score", "submission"):
        assert "engine" not in _reachable(graph, module), module
