"""The layer order of docs/architecture.md, enforced: no import against it, not even a lazy one.

``config/horizons/errors/io -> data -> graph -> model -> eval -> synth -> train -> health -> cli``.
The synthetic benchmark (``synth``) sits beside ``data`` in purpose, but it scores its oracle
with ``eval``'s metrics, so in the import order it comes right after ``eval``; ``data``, ``graph``,
``model`` and ``eval`` never import it (the embedded default is resolved by ``atft.train.prepare``).
``atft/__init__.py`` is the public facade (lazy) and is imported by nothing inside the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atft"
RANK = {"config": 0, "horizons": 0, "errors": 0, "io": 0, "progress": 0, "data": 1, "graph": 2, "model": 3, "eval": 4,
        "synth": 5, "train": 6, "health": 7, "health_suite": 7, "cli": 8}
MAX_LINES = 400


def _layer(module: str) -> str | None:
    """``atft.data.panel`` -> ``data``; ``atft`` (the facade) -> ``atft``; other packages -> None."""
    parts = module.split(".")
    if parts[0] != "atft":
        return None
    return parts[1] if len(parts) > 1 else "atft"


def _is_module(package: Path, name: str) -> bool:
    return (package / name / "__init__.py").exists() or (package / f"{name}.py").exists()


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every atft module imported anywhere in the file (function bodies included)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(root).with_suffix("")
    pkg = list(rel.parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                base = pkg[: len(pkg) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name == "atft":  # ``from atft import x``: a sub-package / module, or a facade name
                out += [(node.lineno, f"atft.{a.name}" if _is_module(root / "atft", a.name) else "atft")
                        for a in node.names]
            else:
                out.append((node.lineno, name))
    return [(ln, m) for ln, m in out if _layer(m) is not None]


def violations(package: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        own = _layer(".".join(rel.with_suffix("").parts))
        if own == "atft" or own is None:  # the facade itself
            continue
        for line, module in _imports(path, package.parent):
            target = _layer(module)
            if target == "atft":
                bad.append(f"{rel}:{line} imports the facade 'atft' (import the owning module instead)")
            elif target not in RANK:
                bad.append(f"{rel}:{line} imports {module}: package '{target}' has no place in the layer order")
            elif RANK[target] > RANK[own]:
                bad.append(f"{rel}:{line} ({own}) imports {module} ({target}): against the layer order")
    return bad


def test_no_import_goes_against_the_layer_order() -> None:
    assert violations() == []


def test_every_package_of_atft_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(RANK), sorted((packages | modules) - set(RANK))


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """Planted: a data module that lazily imports the training loop, and one importing the facade."""
    pkg = tmp_path / "atft"
    (pkg / "data").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "bad.py").write_text("def f():\n    from atft.train.fit import fit\n    return fit\n")
    (pkg / "data" / "worse.py").write_text("from atft import prepare\nfrom .. import cli\n")
    found = violations(pkg)
    assert any("data/bad.py:2 (data) imports atft.train.fit (train)" in v for v in found), found
    assert any("data/worse.py:1 imports the facade" in v for v in found), found
    assert any("data/worse.py:2 (data) imports atft.cli (cli)" in v for v in found), found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {n} lines (> {MAX_LINES}): split it by concept"


def test_model_and_data_code_never_print() -> None:
    found = []
    for sub in ("data", "graph", "model", "eval", "synth", "train"):
        for path in sorted((PACKAGE / sub).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == [], f"print() outside atft.cli / atft.health: {found}"


def test_the_public_api_resolves() -> None:
    import atft

    for name in atft.__all__:
        assert getattr(atft, name) is not None
    with pytest.raises(AttributeError):
        atft.no_such_thing  # noqa: B018
