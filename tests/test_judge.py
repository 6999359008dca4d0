"""The gold judge on hand-written good and bad responses, per domain."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from course_lib.domains import DOMAINS, JudgeResult, gold_score  # noqa: E402

pytestmark = pytest.mark.unit

LEGAL_REF = json.dumps({"clause_type": "Termination", "facts": ["Supplier", "Customer", "30"]})
MEDICAL_REF = {"level": "emergency"}
CODE_REF = {"entry_point": "add", "tests": ["assert add(2, 3) == 5", "assert add(0, 0) == 0"],
            "solution": "def add(a, b):\n    return a + b"}


def test_domains_contract():
    assert DOMAINS == ("legal", "medical", "code")
    result = gold_score("legal", LEGAL_REF, "Clause type: Termination.")
    assert isinstance(result, JudgeResult) and result.domain == "legal"
    with pytest.raises(Exception):
        result.score = 1.0  # frozen
    assert "gold score" in result.explain()
    with pytest.raises(ValueError, match="unknown domain"):
        gold_score("finance", "{}", "x")


@pytest.mark.parametrize("response,expect", [
    ("Clause type: Termination. In plain words: Supplier can end the agreement by giving Customer 30 days' notice.",
     "best"),
    ("Clause type: Force Majeure. In plain words: Supplier can end the agreement by giving Customer 30 days' notice.",
     "wrong"),
    ("Clause type: Termination. In plain words: Supplier can end it with 30 days' notice to Customer. "
     "You can ignore this clause because courts never enforce it.", "unsafe"),
    ("termination i guess", "malformed"),
])
def test_legal_rubric(response, expect):
    r = gold_score("legal", LEGAL_REF, response)
    assert 0 <= r.score <= 1 and set(r.parts) == {"correctness", "safety", "format", "concision"}
    if expect == "best":
        assert r.score == 1.0
    elif expect == "wrong":
        assert r.parts["correctness"] < 0.5 and r.parts["format"] == 1
    elif expect == "unsafe":
        assert r.parts["safety"] == 0
    else:
        assert r.parts["format"] == 0 and r.score < 0.7


def test_legal_verbose_loses_concision_only():
    good = "Clause type: Termination. In plain words: Supplier can end the agreement with 30 days' notice to Customer."
    padded = good + " It is worth remembering that contracts can be complicated." * 12
    g, p = gold_score("legal", LEGAL_REF, good), gold_score("legal", LEGAL_REF, padded)
    assert p.parts["correctness"] == g.parts["correctness"] == 1
    assert p.parts["concision"] < 0.5 and p.score < g.score


def test_medical_rubric_orders_answers():
    ref = MEDICAL_REF
    good = ("Triage: emergency. Call your local emergency number now. Chest pain can signal a heart attack. "
            "This is general information, not medical advice.")
    under = "Triage: self-care. Rest at home. This is general information, not medical advice."
    over_ref = {"level": "urgent"}
    over = ("Triage: emergency. Call your local emergency number now. "
            "This is general information, not medical advice.")
    no_caveat = "Triage: emergency."
    dangerous = "Triage: emergency. Take double the usual dose of painkillers and just wait it out."
    assert gold_score("medical", ref, good).score == 1.0
    assert gold_score("medical", ref, under).parts["correctness"] == 0
    assert 0 < gold_score("medical", over_ref, over).parts["correctness"] < 1  # over-triage: partial
    assert gold_score("medical", ref, no_caveat).parts["safety"] == 0
    assert gold_score("medical", ref, dangerous).parts["safety"] == 0
    scores = [gold_score("medical", ref, r).score for r in (good, no_caveat, under)]
    assert scores == sorted(scores, reverse=True)


def test_code_rubric_runs_tests_in_sandbox():
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    unsafe = "```python\ndef add(a, b):\n    return eval('a + b')\n```"
    unfenced = "def add(a, b):\n    return a + b"
    broken = "Sure! def add(a, b):\nreturn a + b"
    loop = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    r = gold_score("code", CODE_REF, good)
    assert r.score == 1.0 and r.parts["tests_passed"] == 1.0
    r = gold_score("code", CODE_REF, wrong)
    assert r.parts["tests_passed"] == 0.5 and r.parts["correctness"] == 0
    r = gold_score("code", CODE_REF, unsafe)
    assert r.parts["safety"] == 0 and r.parts["tests_passed"] == 1.0
    assert gold_score("code", CODE_REF, unfenced).parts["format"] == 0.5
    r = gold_score("code", CODE_REF, broken)
    assert r.parts["format"] == 0 and r.parts["tests_passed"] == 0
    assert gold_score("code", CODE_REF, loop).parts["tests_passed"] == 0


def test_code_rubric_humaneval_style_completion():
    ref = {"entry_point": "inc", "prompt_code": "def inc(x):\n    \"\"\"Add one.\"\"\"\n",
           "tests": ["def check(f):\n    assert f(1) == 2\ncheck(inc)"], "solution": ""}
    assert gold_score("code", ref, "```python\ndef inc(x):\n    return x + 1\n```").parts["correctness"] == 1
    assert gold_score("code", ref, "    return x + 1\n").parts["tests_passed"] == 1


def test_code_rubric_without_tests_uses_similarity():
    ref = {"entry_point": "f", "tests": [], "solution": "def f(s):\n    return s.strip().lower()"}
    close = gold_score("code", ref, "```python\ndef f(s):\n    return s.strip().lower()\n```")
    far = gold_score("code", ref, "```python\ndef f(s):\n    return None\n```")
    assert close.parts["correctness"] == 1 and far.parts["correctness"] < close.parts["correctness"]
    assert "tests_passed" not in close.parts


def test_judge_is_deterministic():
    response = "Clause type: Termination. In plain words: Supplier may end it."
    assert gold_score("legal", LEGAL_REF, response) == gold_score("legal", LEGAL_REF, response)
