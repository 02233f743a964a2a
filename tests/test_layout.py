"""The layout's rules, read from the source (docs/architecture.md): every arrow points down, files stay short.

Parsed with `ast`, nothing imported: a rule broken anywhere in xfer_jax/ fails here with the file and line.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "xfer_jax"
MAX_LINES = 450

# What each room may import from xfer_jax (its own room always). The bottom: errors, paths and cli_args.
BOTTOM = {"errors", "paths", "cli_args"}
ALLOWED = {
    "errors": set(),
    "paths": set(),
    "cli_args": set(),
    "config_files": BOTTOM,
    "parallel": BOTTOM,
    "model": BOTTOM | {"parallel"},
    "data": BOTTOM | {"config_files"},
    "checkpoint": BOTTOM | {"model"},
    "vocab": BOTTOM | {"data", "model", "checkpoint", "convert"},
    "convert": BOTTOM | {"model", "checkpoint", "data", "parallel"},
    "train": BOTTOM | {"model", "parallel", "data", "checkpoint", "config_files"},
    "forward": BOTTOM | {"model", "parallel", "checkpoint", "data"},
    "eval": BOTTOM | {"model", "parallel", "data", "checkpoint", "forward", "train", "config_files"},
    "perf": BOTTOM | {"model", "parallel", "train", "data", "config_files"},
    "study": BOTTOM | {"model", "parallel", "data", "checkpoint", "forward", "train", "eval", "vocab", "convert",
                      "config_files", "perf"},
}


def modules() -> dict[str, pathlib.Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) for every `import xfer_jax...` / `from xfer_jax... import name` (names as modules where
    they are modules), at any depth of the file (lazy imports count)."""
    known = modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("xfer_jax")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xfer_jax"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.append((node.lineno, full if full in known else node.module))
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "xfer_jax"


def test_nothing_imports_the_verb_table():
    bad = [f"{p}:{line}" for m, p in modules().items() for line, target in imports(p) if target == "xfer_jax.cli"]
    assert not bad, f"import xfer_jax.cli (the verb table; use xfer_jax.errors): {bad}"


def test_every_arrow_points_down():
    bad = []
    for module, path in modules().items():
        here = room(module)
        if here in ("cli", "__init__", "xfer_jax"):
            continue
        assert here in ALLOWED, f"{path}: room {here!r} is not in the layout (tests/test_layout.py, docs/architecture.md)"
        for line, target in imports(path):
            there = room(target)
            if there != here and there not in ALLOWED[here]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here} -> {there}: {target})")
    assert not bad, "imports against the layout:\n" + "\n".join(bad)


def test_no_import_cycles_between_modules():
    known = modules()
    graph = {m: {t for _, t in imports(p) if t in known and t != m} for m, p in known.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_files_stay_short():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
