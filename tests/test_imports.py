"""The house's import rules, read from the source: no import cycles in icqcodec/, and no module of
icqcodec/, conformance/ or bench/ takes a private name (``_x``) of another module, by import or by
attribute."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("icqcodec", "conformance", "bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts if path.is_relative_to(ROOT) else (path.stem,)
    return ".".join(parts).removesuffix(".__init__")


def imported(path: Path):
    """(module, name or None, line) of each import of ``path``, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                yield base, alias.name, node.lineno


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_import_cycles_in_the_package():
    modules = {module_name(p): p for p in sources("icqcodec")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, alias, _ in imported(path):
            full = f"{module}.{alias}" if alias else module
            target = full if full in modules else module
            if target in modules and target not in (name, "icqcodec"):
                targets.add(target)
        graph[name] = targets
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == "open":
                cycles.append(" -> ".join([*stack[stack.index(following) :], following]))
            elif following not in state:
                visit(following, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == [], "\n".join(cycles)


def private_uses(path: Path) -> list[str]:
    """Each place where ``path`` imports, or reaches by attribute, a private name of our modules."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for module, alias, line in imported(path):
        if alias and is_private(alias) and module.split(".")[0] in PACKAGES:
            found.append(f"{path.name}:{line} imports {alias} from {module}")
    # module._name, where module is a name bound by an import of one of ours
    bound = set()
    for module, alias, _ in imported(path):
        if module.split(".")[0] in PACKAGES:
            bound.add(alias or module.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and is_private(node.attr)
                and node.value.id in bound):  # fmt: skip
            found.append(f"{path.name}:{node.lineno} reaches {node.value.id}.{node.attr}")
    return found


def test_no_private_names_taken_from_another_module():
    paths = sources(*PACKAGES)
    found = [use for path in paths for use in private_uses(path)]
    assert len(paths) > 40 and found == [], "\n".join(found)


def test_the_private_name_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from icqcodec.decode import _hidden\nfrom icqcodec import gpu\ngpu._kernel('x')\nimport numpy\n"
                      "numpy._core\n")  # fmt: skip
    assert private_uses(sample) == [
        "sample.py:1 imports _hidden from icqcodec.decode",
        "sample.py:3 reaches gpu._kernel",
    ]
