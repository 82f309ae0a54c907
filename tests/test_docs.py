"""docs/formulas.md and the docstrings of minnet and optim name real tests and code."""
import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
CITATION = re.compile(r"([\w/]+\.py)::(\w+)((?:, ::\w+)*)")


SECTION_DIR = re.compile(r"^Test files below are in `tests/([\w/]+)/`", re.M)


def _cited_tests():
    """(path, names, directory) of each citation: paths are relative to tests/, or to the
    directory a section declares ("Test files below are in `tests/optim/quant/`")."""
    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    for section in re.split(r"^## ", text, flags=re.M):
        declared = SECTION_DIR.search(section)
        directory = ROOT / "tests" / declared.group(1) if declared else ROOT / "tests"
        for match in CITATION.finditer(section):
            path, first, more = match.groups()
            names = [first] + re.findall(r"::(\w+)", more)
            yield path, names, directory


def _resolve(path: str, directory: pathlib.Path) -> pathlib.Path | None:
    """The cited file, relative to the section's directory or to tests/ (never the
    repository root: docs/formulas.md has one path style)."""
    for base in (directory, ROOT / "tests"):
        if (base / path).is_file():
            return base / path
    return None


def test_formulas_cite_existing_tests():
    missing = []
    citations = list(_cited_tests())
    assert citations
    for path, names, directory in citations:
        file = _resolve(path, directory)
        if file is None:
            missing.append(f"{path} (not under {directory.relative_to(ROOT)}/ or tests/)")
            continue
        source = file.read_text(encoding="utf-8")
        missing += [f"{path}::{name}" for name in names
                    if not re.search(rf"^\s*(async\s+)?def {name}\(", source, re.M)]
    assert not missing, f"docs/formulas.md cites tests that do not exist: {missing}"


def _code_cells():
    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]  # "\|" is an escaped pipe
        if len(cells) == 6 and ".py" in cells[3]:
            yield cells[3]


def test_formulas_cite_existing_code():
    problems = []
    cells = list(_code_cells())
    assert cells
    for cell in cells:
        for path, names in re.findall(r"([\w/]+\.py)((?:,? ?`[\w.]+`)*)", cell):
            file = ROOT / path
            if not file.exists():
                problems.append(path)
                continue
            source = file.read_text(encoding="utf-8")
            for name in re.findall(r"`([\w.]+)`", names):
                leaf = name.split(".")[-1]
                if not re.search(rf"^\s*(def|class) {leaf}\b|^{leaf}\s*=", source, re.M):
                    problems.append(f"{path} `{name}`")
    assert not problems, f"docs/formulas.md cites code that does not exist: {problems}"


# ---- test citations in the docstrings of minnet and optim ----------------------------------

DOC_CITATION = re.compile(r"(?<![\w/.])((?:[\w.]+/)*test_\w+\.py)(?:::(\w+\*?))?|(?<![\w.:])::(test_\w+\*?)")


def _docstrings():
    """(file, docstring) of every module, class and function docstring in minnet and optim."""
    for package in ("minnet", "optim"):
        for file in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(file.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node, clean=False)
                    if doc:
                        yield file.relative_to(ROOT), doc


def _docstring_citations():
    """(where, path, test name or None): a bare ``::test_x`` refers to the last path cited
    before it in the same docstring; ``test_x_*`` stands for the tests named so."""
    for where, doc in _docstrings():
        current = None
        for match in DOC_CITATION.finditer(doc):
            path, name, continued = match.groups()
            if path:
                current = path
                yield where, path, name
            elif current:
                yield where, current, continued
            else:
                yield where, "(no file before it)", continued


def test_docstrings_cite_existing_tests_by_repository_path():
    """Every test file a docstring names is written tests/... from the repository root and
    exists, and every test it names is defined in that file."""
    citations = list(_docstring_citations())
    assert len(citations) > 100
    problems = []
    for where, path, name in citations:
        file = ROOT / path
        if not path.startswith("tests/") or not file.is_file():
            problems.append(f"{where}: {path} (write tests/... from the repository root)")
            continue
        pattern = name[:-1] + r"\w*" if name and name.endswith("*") else name
        if name and not re.search(rf"^\s*(async\s+)?def {pattern}\(", file.read_text(encoding="utf-8"), re.M):
            problems.append(f"{where}: {path}::{name} does not exist")
    assert not problems, "docstrings cite tests that do not exist:\n" + "\n".join(sorted(set(problems)))
