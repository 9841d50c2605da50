"""The project files a stage's code imports (statically, function-level imports included).

`dvc.yaml` lists exactly these as each stage's code deps, so editing one library file reruns only the stages
that import it. `python -m siamdiff.deps` prints the list per stage; tests/test_dvc_deps.py enforces it.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("siamdiff", "stages")


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported_modules(path: Path) -> set[str]:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in found if m.split(".")[0] in PACKAGES}


def code_deps(stage: str) -> list[str]:
    """Sorted project-relative paths of every project file `stages/<stage>.py` imports, itself included."""
    seen: set[Path] = set()
    todo = [ROOT / "stages" / f"{stage}.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            for name in _with_parents(module):
                f = _module_file(name)
                if f is not None and f not in seen:
                    todo.append(f)
    seen.discard(ROOT / "stages" / "__init__.py")  # the launcher package, not library code
    return sorted(p.relative_to(ROOT).as_posix() for p in seen)


def stage_names(root: Path = ROOT) -> list[str]:
    """The stages of `root`/dvc.yaml, in its (the pipeline's) order."""
    import yaml

    return list(yaml.safe_load((Path(root) / "dvc.yaml").read_text())["stages"])


if __name__ == "__main__":
    stages = sys.argv[1:] or stage_names()
    for s in stages:
        print(f"{s}:")
        for d in code_deps(s):
            print(f"  - {d}")
