"""The package's layout keeps its rules: each folder imports only what its rule allows, no module
imports a layer above its own, there is no import cycle, and no module is past ~300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lightning_magic"
MAX_LINES = 330

# A folder may import from the folders listed for it (and from itself), nothing above.
ALLOWED = {
    "readings": set(),
    "suggestions": set(),
    "view": set(),
    "source": set(),
    "options": {"readings"},
    "export": {"options", "source"},
    "server": {"readings"},
    "train": {"readings", "suggestions", "view", "options", "source"},
    "background": {"train", "view", "options", "source"},
    "sweep": {"train", "background", "options", "source"},
    "magic": {"train", "readings", "view", "export", "options", "suggestions", "background",
              "sweep"},
    "__init__": {"magic"},
}
# Inside train/, each room imports only the rooms below it: the kernel's side of the cell, then
# the launch of its ranks, then what comes back, then the code that runs inside a rank.
TRAIN_ROOMS = ["kernel", "launch", "returns", "ranks"]
# The top level holds entry points; everything else lives in a folder named for its concern.
TOP_LEVEL = {"__init__", "magic"}
# Third-party packages a folder must never import (at any depth, even inside functions).
FORBIDDEN = {
    "readings": {"torch", "lightning", "pytorch_lightning", "jupyter_server", "IPython"},
    "view": {"torch", "lightning", "pytorch_lightning", "pynvml", "psutil", "jupyter_server"},
    "export": {"torch", "lightning", "pytorch_lightning"},
    "server": {"torch", "lightning", "pytorch_lightning"},
    "suggestions": {"torch", "lightning", "pytorch_lightning"},
}
# Only train/ starts processes.
FORKING = {"multiprocessing", "subprocess"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts)


def area(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = ".".join(("lightning_magic",) + path.relative_to(PACKAGE).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x, y
                    found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
                    continue
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def own_area(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "lightning_magic" or len(parts) == 1:
        return None
    return parts[1]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_folder_allows(path):
    here = area(path)
    allowed = ALLOWED[here] | {here}
    for name, line in imports(path):
        target = own_area(name)
        if target is not None:
            assert target in allowed, f"{path.name}:{line} imports {name} ({here} may not)"
        top = name.split(".")[0]
        assert top not in FORBIDDEN.get(here, set()), f"{path.name}:{line} imports {name}"
        if here != "train":
            assert top not in FORKING, f"{path.name}:{line} imports {name}: only train/ forks"


def room(name: str) -> str | None:
    """The room of train/ a module name is in (None for train/'s own modules)."""
    parts = name.split(".")
    if parts[:2] != ["lightning_magic", "train"] or len(parts) < 4:
        return None
    return parts[2] if parts[2] in TRAIN_ROOMS else None


@pytest.mark.parametrize("path", [p for p in modules() if p.relative_to(PACKAGE).parts[0] == "train"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_room_of_train_imports_only_the_rooms_below_it(path):
    name = ".".join(("lightning_magic",) + path.relative_to(PACKAGE).with_suffix("").parts)
    here = room(name)
    for target, line in imports(path):
        there = room(target)
        if here is None or there is None or there == here:
            continue
        assert TRAIN_ROOMS.index(there) > TRAIN_ROOMS.index(here), (
            f"{path.relative_to(PACKAGE)}:{line} imports {target}: train/{here} may import only "
            f"{', '.join(TRAIN_ROOMS[TRAIN_ROOMS.index(here) + 1:]) or 'no other room'}")


def test_the_top_level_holds_only_entry_points():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL, f"top-level modules besides the entry points: {sorted(top - TOP_LEVEL)}"
    rooms = {p.name for p in (PACKAGE / "train").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(TRAIN_ROOMS), f"train/ rooms: {sorted(rooms)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_past_the_size_that_asks_for_a_split(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_every_folder_states_its_rule():
    for folder in sorted(p.parent for p in PACKAGE.rglob("__init__.py")
                         if "labextension" not in p.parts and p.parent != PACKAGE):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "rule" in doc.lower(), f"{folder.relative_to(PACKAGE)}/__init__.py states no rule"


def test_there_is_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for path in modules():
        name = ".".join(("lightning_magic",) + path.relative_to(PACKAGE).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        graph[name] = {n for n, _ in imports(path) if n.startswith("lightning_magic.")}
    # resolve "from pkg import module" to the module where there is one
    graph = {m: {d if d in graph else d.rsplit(".", 1)[0] for d in deps} for m, deps in graph.items()}
    visiting, done = set(), set()

    def visit(module: str, trail: list[str]) -> None:
        if module in done or module not in graph:
            return
        assert module not in visiting, "import cycle: " + " -> ".join(trail + [module])
        visiting.add(module)
        for dep in graph[module]:
            if dep != module and not module.startswith(dep + "."):  # a package's own __init__
                visit(dep, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])
