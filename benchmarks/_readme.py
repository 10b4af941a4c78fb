"""The one helper every benchmark script shares: rewrite its own section of
``benchmarks/README.md`` (between ``<!-- name:start -->`` and ``<!-- name:end -->``),
appending the section if missing, atomically (:func:`mlip.atomic.atomic_write_text`: a crash
never leaves a half-written file)."""

from __future__ import annotations

from pathlib import Path

from mlip.atomic import atomic_write_text

README = Path(__file__).resolve().parent / "README.md"


def write_readme_section(name: str, text: str, readme: Path = README) -> None:
    content = readme.read_text() if readme.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.strip(chr(10))}\n{end}"
    if start in content and end in content:
        pre, rest = content.split(start, 1)
        content = pre + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(readme, content)
