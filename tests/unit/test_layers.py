"""The package map's one rule: imports run one way, down the layers below (docs/architecture.md).

Every import counts, those inside functions too: a function-level import keeps torch lazy, it does not make an
upward import acceptable.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. A module may import its own layer and those below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("backend.errors", "backend.logs", "backend.payload", "backend.metrics", "backend.datasets"),
    ("backend.decision",),
    ("backend.settings",),
    ("backend.store",),
    ("backend.labelstudio",),
    ("backend.specialists",),
    ("backend.serving",),
    ("backend.llm",),
    ("backend.planning",),
    ("backend.jobs",),
    ("backend.push",),
    ("finetune",),
    ("backend.review",),
    ("backend.evaluation",),
    ("backend.service",),
    ("model",),
    ("backend.http",),
    ("backend.commands",),
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best[0] if best else None


def modules() -> dict[str, Path]:
    out = {"model": ROOT / "model.py"}
    for pkg in ("backend", "finetune"):
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if m != "backend" and layer_of(m) is None] == []


def test_imports_run_one_way() -> None:
    upward = []
    for name, path in modules().items():
        mine = layer_of(name)
        if mine is None:
            continue
        for line, target in imports(path):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} {name} -> {target}")
    assert upward == []


def test_http_face_imports_no_root_module() -> None:
    for path in (ROOT / "backend" / "http").rglob("*.py"):
        assert not [t for _, t in imports(path) if t == "model" or t.split(".")[0] == "finetune"], path
