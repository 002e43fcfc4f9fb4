"""README.md runs: every Python snippet in it is executed (each makes its own data), every link
points inside the repository at a file that exists, and the examples it names exist."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not README.is_file(), reason="README.md is not next to tests/ here")


def snippets(path=README):
    """(first line number, code) of every ```python block, indented ones (in lists) included."""
    out, lines = [], path.read_text().splitlines() if path.is_file() else []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```python\s*$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            out.append((start + 1, textwrap.dedent("\n".join(body))))
        i += 1
    return out


SNIPPETS = snippets()
#: the docs whose snippets run too
DOCS = [ROOT / "docs" / "low-precision.md"]
DOC_SNIPPETS = [(f"{d.name}:{n}", code) for d in DOCS for n, code in snippets(d)]


def test_there_are_snippets():
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("line,code", SNIPPETS, ids=[f"line{n}" for n, _ in SNIPPETS])
def test_snippet_runs(line, code, tmp_path, monkeypatch):
    if "import torch" in code:
        pytest.importorskip("torch")
    if "mpi4py" in code:
        pytest.importorskip("mpi4py")
    if "sklearn" in code:
        pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("where,code", DOC_SNIPPETS, ids=[w for w, _ in DOC_SNIPPETS])
def test_doc_snippet_runs(where, code, tmp_path, monkeypatch):
    pytest.importorskip("ml_dtypes")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__doc__"})


def test_links_stay_inside_the_repository():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for target in links:
        assert not re.match(r"^[a-z]+://", target) and not target.startswith(".."), target
        path = target.split("#")[0]
        assert (ROOT / path).exists(), f"README links to {target}, which does not exist"
    assert "../shared" not in text


def test_named_examples_exist():
    text = README.read_text()
    for name in set(re.findall(r"`(?:examples/)?([a-z_]+\.py)`", text)):
        if (ROOT / "examples" / name).exists() or (ROOT / name).exists():
            continue
        assert any(ROOT.glob(f"**/{name}")), f"README names {name}, which is not in the repository"
    assert "benchmark_digits.py" in text
