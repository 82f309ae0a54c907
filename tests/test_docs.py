"""docs/formulas.md names real tests: every `file.py::test_name` it cites exists."""
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
CITATION = re.compile(r"([\w/]+\.py)::(\w+)((?:, ::\w+)*)")


def _cited_tests():
    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    for match in CITATION.finditer(text):
        path, first, more = match.groups()
        names = [first] + re.findall(r"::(\w+)", more)
        yield path, names


def _resolve(path: str) -> pathlib.Path | None:
    direct = ROOT / "tests" / path
    if direct.exists():
        return direct
    found = list((ROOT / "tests").rglob(pathlib.Path(path).name))
    return found[0] if len(found) == 1 else None


def test_formulas_cite_existing_tests():
    missing = []
    citations = list(_cited_tests())
    assert citations
    for path, names in citations:
        file = _resolve(path)
        source = file.read_text(encoding="utf-8") if file else ""
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
