"""The answer to a prompt asking for pytest tests: a runnable module for the functions the prompt shows."""

from __future__ import annotations

import ast
import re

__all__ = ["pytest_answer"]

_DEF_RE = re.compile(r"(?m)^def ([A-Za-z_]\w*)\s*\(")
_MODULE_RE = re.compile(r"\b([A-Za-z_]\w*)\.py\b|\bmodule\s+`([A-Za-z_][\w.]*)`")
_CODE_START_RE = re.compile(r"(def |async def |class |import \w|from [\w.]+ import |@\w)")
_FENCE_RE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def pytest_answer(prompt: str) -> str | None:
    """A runnable pytest module for the public functions in a prompt asking for pytest tests.

    Example DAGs write these answers to disk and run them, so the module must compile and pass:
    each test checks the function exists and has the parameters the source declares.
    """
    if "def " not in prompt:
        return None
    if "pytest" not in prompt.lower() and not re.search(r"(?i)\bunit tests?\b", prompt):
        return None
    fenced = _FENCE_RE.findall(prompt)
    code = _extract_code("\n".join(fenced) if fenced else prompt)
    functions = _public_functions(code)
    if not functions:
        return None
    names = list(functions)
    module = f"{_pytest_header(prompt, code, names)}\n\n" + "\n\n".join(
        _pytest_case(name, parameters) for name, parameters in functions.items()
    )
    return f"Here are pytest tests for {', '.join(names)}:\n\n```python\n{module}```\n"


def _public_functions(code: str) -> dict[str, list[str] | None]:
    """Top-level public functions and their parameter names (None when the code does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {n: None for n in dict.fromkeys(_DEF_RE.findall(code)) if not n.startswith("_")}
    found: dict[str, list[str] | None] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            args = node.args
            ordered = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
            found[node.name] = [a.arg for a in ordered if a is not None]
    return found


def _pytest_case(name: str, parameters: list[str] | None) -> str:
    """One test function: callable, and (when known) the declared parameter names."""
    lines = [f"def test_{name}():", f"    assert callable({name})"]
    if parameters is not None:
        lines.append(f"    assert list(inspect.signature({name}).parameters) == {parameters!r}")
    return "\n".join(lines) + "\n"


def _pytest_header(prompt: str, code: str, names: list[str]) -> str:
    """Imports for the generated tests: the named module, else the inlined source under test."""
    match = _MODULE_RE.search(prompt)
    module = (match.group(1) or match.group(2)) if match else None
    if module and module.replace(".", "_").isidentifier():
        return f"import inspect\n\nfrom {module} import {', '.join(names)}\n"
    try:
        compile(code, "<source>", "exec")
    except SyntaxError:
        skip = 'pytest.skip("source under test not found", allow_module_level=True)'
        return f"import inspect\n\nimport pytest\n\n{skip}\n"
    return f"import inspect\n\n# --- code under test (inlined: the prompt named no module) ---\n{code.rstrip()}\n"


def _extract_code(source: str) -> str:
    """Python source in ``source``: from its first def/class/import line to the longest prefix
    that compiles (so prose after an unfenced snippet is dropped)."""
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if _CODE_START_RE.match(line)), 0)
    lines = lines[start:]
    for end in range(len(lines), max(0, len(lines) - 200), -1):
        code = "\n".join(lines[:end]) + "\n"
        try:
            compile(code, "<source>", "exec")
        except SyntaxError:
            continue
        return code
    return "\n".join(lines) + "\n"
