"""The product never depends on test code, and the image never holds it."""

import ast
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PRODUCT_PACKAGES = ["accounts", "core", "integrations", "potaflow", "workflows", "webui"]
# Lowest first: a module imports only its own layer and the ones below it. ``core`` is the shared
# kit (client address, broker probe, structured logging, redaction); ``potaflow`` is only the
# project shell (settings, URLs, the Celery app, web-server glue) that wires the apps together.
LAYERS = ["core", "accounts", "integrations", "workflows", "webui", "potaflow"]


def _product_modules() -> list[Path]:
    return [
        path
        for package in PRODUCT_PACKAGES
        for path in (BASE_DIR / package).rglob("*.py")
        if "tests" not in path.relative_to(BASE_DIR).parts
    ]


def _imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_product_code_never_imports_the_test_kit_or_tests():
    offenders = [
        f"{path.relative_to(BASE_DIR)} imports {name}"
        for path in _product_modules()
        for name in _imported_names(path)
        if name.split(".")[0] in {"testing", "pytest", "conftest"} or "tests" in name.split(".")
    ]
    assert len(_product_modules()) > 50
    assert offenders == []


def test_dockerignore_keeps_test_code_out_of_the_image():
    patterns = {line.strip() for line in (BASE_DIR / ".dockerignore").read_text().splitlines()}
    # `**/tests` covers every app's tests folder at any depth (Docker's own glob syntax).
    assert {"testing", "**/tests", "bench", "conftest.py", "pytest.ini"} <= patterns
    assert (BASE_DIR / "testing" / "worker.py").exists()


def _explained(lines: list[str], lineno: int) -> bool:
    """An import is explained by a comment on its line or in the comment block above its import group."""
    if "#" in lines[lineno - 1]:
        return True
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith(("import ", "from ")):
        index -= 1  # the same group of imports shares one comment
    return index >= 0 and lines[index].strip().startswith("#")


def test_every_import_inside_a_function_says_why():
    """Issue 9: an import inside a function is a cycle broken or memory kept down, and says which."""
    unexplained = []
    for path in _product_modules():
        if "migrations" in path.parts:
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom) and not _explained(lines, node.lineno):
                    unexplained.append(f"{path.relative_to(BASE_DIR)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert sorted(set(unexplained)) == []


def _absolute_imports(path: Path, base_dir: Path = BASE_DIR) -> list[tuple[int, str]]:
    """Every module a file imports (relative imports resolved), with the line, in functions too."""
    package = list(path.relative_to(base_dir).with_suffix("").parts)[:-1]
    if path.name == "__init__.py":
        package = list(path.relative_to(base_dir).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def _layer_offenders(paths: list[Path], base_dir: Path = BASE_DIR) -> list[str]:
    rank = {name: index for index, name in enumerate(LAYERS)}
    offenders = []
    for path in paths:
        own = path.relative_to(base_dir).parts[0]
        for lineno, module in _absolute_imports(path, base_dir):
            top = module.split(".")[0]
            if top in rank and rank[top] > rank[own]:
                offenders.append(f"{path.relative_to(base_dir)}:{lineno} ({own}) imports {module} ({top})")
    return offenders


def test_no_module_imports_a_higher_layer():
    """Issue 17: the shared kit sits under the apps and the project shell over them, never between."""
    assert set(PRODUCT_PACKAGES) == set(LAYERS)
    assert _layer_offenders(_product_modules()) == []


def test_the_layer_check_finds_an_upward_import_relative_or_not(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "workflows" / "ops").mkdir(parents=True)
    upward = tmp_path / "core" / "probe.py"
    upward.write_text("def f():\n    from potaflow.celery import app  # deferred\n")
    relative = tmp_path / "workflows" / "ops" / "probe.py"
    relative.write_text("from ..models import Run\nfrom webui import views\n")
    assert _layer_offenders([upward, relative], tmp_path) == [
        "core/probe.py:2 (core) imports potaflow.celery (potaflow)",
        "workflows/ops/probe.py:2 (workflows) imports webui (webui)",
    ]
    assert _absolute_imports(relative, tmp_path)[0] == (1, "workflows.models")


def test_the_readme_code_layout_names_every_module_of_the_wings_and_the_kit():
    """Issue 17: the README's "Code layout" matches the tree. Every module of core/ and of each
    workflows/ wing, and every folder of integrations/, is named there (a new one must be placed)."""
    readme = (BASE_DIR / "README.md").read_text()
    section = readme.split("### Code layout", 1)[1].split("\n### ", 1)[0]
    wings = ["core", *(f"workflows/{w}" for w in ("intake", "execution", "scheduling", "ops", "files", "flow"))]
    missing = [
        f"{wing}/{path.name}"
        for wing in wings
        for path in sorted((BASE_DIR / wing).glob("*.py"))
        if path.name != "__init__.py" and path.stem not in section
    ]
    missing += [
        f"integrations/{folder.name}/"
        for folder in sorted((BASE_DIR / "integrations").iterdir())
        if folder.is_dir() and (folder / "__init__.py").exists()
        and folder.name not in ("tests", "migrations", "management") and f"{folder.name}/" not in section
    ]  # fmt: skip
    assert missing == []
