"""The product never depends on test code, and the image never holds it."""

import ast
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PRODUCT_PACKAGES = ["accounts", "integrations", "potaflow", "workflows", "webui"]


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
