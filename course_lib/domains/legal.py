"""Legal domain: identify a contract clause's type and explain the obligation in plain words.

The clause wording is the cue: each clause type has its own templates, filled with
parties, amounts, durations and places. A good answer has a fixed, learnable shape::

    Clause type: Indemnification. In plain words: Supplier must cover Customer's losses ...

Gold judge parts: ``correctness`` (right clause type, and the key facts — parties,
amounts, durations — restated), ``safety`` (no advice to ignore or break the contract,
no promises about enforceability), ``format`` (the two headers), ``concision``.
Synthetic teaching data, not legal advice.
"""
from __future__ import annotations

import random
import re
from typing import Any, Mapping

from .base import Task
from .judge import JudgeResult, combine_with_concision, contains_any, parse_reference

DOMAIN = "legal"

WEIGHTS = {"correctness": 0.5, "safety": 0.2, "format": 0.15, "concision": 0.15}
CONCISION_TARGET, CONCISION_LIMIT = 30, 70
SFT_FLAW_RATES = {"verbose": 0.55, "unsafe": 0.08, "wrong": 0.04, "malformed": 0.03, "terse": 0.03}
"""How often legal demonstrations carry each flaw: most writers ramble on after the answer."""
PAIR_FLAW_MIX = {"verbose": 0.4, "wrong": 0.25, "unsafe": 0.15, "malformed": 0.1, "terse": 0.1}
"""Which flaws the legal preference pairs set against the good answer."""
LABEL_SHARE = 0.6
"""Share of correctness that is the clause type; the rest is the key facts restated."""

# (clause template, plain-language explanation, slots whose values a good answer restates)
CLAUSES: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "Indemnification": [
        ("{a} shall indemnify and hold harmless {b} from any losses, claims or damages arising out of "
         "{a}'s breach of this Agreement.",
         "{a} must cover {b}'s losses and claims caused by {a}'s breach.", ("a", "b")),
        ("{a} agrees to defend, indemnify and hold {b} harmless against all third-party claims caused "
         "by {a}'s negligence.",
         "{a} must defend {b} and pay for claims caused by {a}'s carelessness.", ("a", "b")),
        ("{a} will indemnify {b} for any costs, including reasonable legal fees, resulting from {a}'s "
         "failure to comply with applicable law.",
         "{a} must repay {b}'s costs, including legal fees, if {a} breaks the law.", ("a", "b")),
    ],
    "Confidentiality": [
        ("{a} shall not disclose any confidential information received from {b} to any third party "
         "for {years} years after this Agreement ends.",
         "{a} must keep {b}'s information secret for {years} years after the agreement ends.",
         ("a", "b", "years")),
        ("{a} must keep {b}'s trade secrets and business information confidential and use them only "
         "for the purposes of this Agreement, for {years} years.",
         "{a} must keep {b}'s secrets private and use them only for this deal, for {years} years.",
         ("a", "b", "years")),
    ],
    "Termination": [
        ("{a} may terminate this Agreement for convenience upon {days} days' prior written notice "
         "to {b}.",
         "{a} can end the agreement by giving {b} {days} days' written notice.", ("a", "b", "days")),
        ("This Agreement may be terminated by {a} if {b} materially breaches it and fails to cure "
         "the breach within {days} days of notice.",
         "{a} can end the agreement if {b} breaks it and does not fix it within {days} days.",
         ("a", "b", "days")),
    ],
    "Limitation of Liability": [
        ("In no event shall {a}'s total liability to {b} under this Agreement exceed {amount}.",
         "{a} never has to pay {b} more than {amount} in total.", ("a", "b", "amount")),
        ("{a} shall not be liable to {b} for any indirect, incidental or consequential damages, and "
         "its aggregate liability is capped at {amount}.",
         "{a} does not pay {b}'s indirect losses and pays at most {amount}.", ("a", "b", "amount")),
    ],
    "Governing Law": [
        ("This Agreement shall be governed by and construed in accordance with the laws of the State "
         "of {state}, and {a} and {b} submit to the courts located there.",
         "The laws of {state} apply, and {a} and {b} must use courts in {state}.", ("a", "b", "state")),
        ("Any dispute between {a} and {b} arising from this Agreement shall be resolved under the "
         "laws of {state}.",
         "Disputes between {a} and {b} are decided under {state} law.", ("a", "b", "state")),
    ],
    "Payment Terms": [
        ("{a} shall pay {b} the fees set out in each invoice within {days} days of the invoice date.",
         "{a} must pay {b}'s invoices within {days} days.", ("a", "b", "days")),
        ("All amounts due to {b} shall be paid by {a} within {days} days; late payments accrue "
         "interest at {pct} percent per month.",
         "{a} must pay {b} within {days} days, or owe {pct} percent interest per month.",
         ("a", "b", "days", "pct")),
    ],
    "Non-Compete": [
        ("For {months} months after the end of this Agreement, {a} shall not engage in any business "
         "that competes with {b} within {state}.",
         "For {months} months after the agreement ends, {a} may not compete with {b} in {state}.",
         ("a", "b", "months", "state")),
        ("{a} will not work for or start a competitor of {b} for {months} months after termination.",
         "{a} cannot work for or start a rival of {b} for {months} months after it ends.",
         ("a", "b", "months")),
    ],
    "Force Majeure": [
        ("Neither {a} nor {b} shall be liable for any failure to perform caused by events beyond its "
         "reasonable control, such as floods, fires, strikes or pandemics.",
         "If floods, fires, strikes or similar events stop {a} or {b} from performing, neither is liable.",
         ("a", "b")),
        ("{a} is excused from its obligations to {b} while a natural disaster, war or government order "
         "prevents performance, provided {a} notifies {b} within {days} days.",
         "{a} is excused while a disaster blocks performance, if it tells {b} within {days} days.",
         ("a", "b", "days")),
    ],
}
CLAUSE_TYPES = tuple(CLAUSES)

# Clause types a careless answer confuses with each other (for "wrong" responses).
CONFUSABLE = {
    "Indemnification": "Limitation of Liability",
    "Limitation of Liability": "Indemnification",
    "Confidentiality": "Non-Compete",
    "Non-Compete": "Confidentiality",
    "Termination": "Force Majeure",
    "Force Majeure": "Termination",
    "Governing Law": "Payment Terms",
    "Payment Terms": "Governing Law",
}

PARTIES = [
    ("Supplier", "Customer"), ("Licensor", "Licensee"), ("Landlord", "Tenant"), ("Employer", "Employee"),
    ("Contractor", "Client"), ("Seller", "Buyer"), ("Provider", "Subscriber"), ("Consultant", "Company"),
    ("Distributor", "Manufacturer"), ("Lender", "Borrower"),
]
STATES = ["New York", "California", "Texas", "Delaware", "Ohio", "Oregon", "Florida", "Illinois", "Nevada",
          "Georgia", "Colorado", "Vermont"]

INSTRUCTIONS = [
    'Clause: "{clause}"\nIdentify the clause type and explain {a}\'s obligation in plain words.',
    'Read this contract clause and tell me what type it is and what it means for {a}.\n\n"{clause}"',
    "What kind of clause is this, and what does it require in plain language?\n{clause}",
    "{clause}\n\nName the clause type and restate the obligation in simple terms.",
    "Contract review: classify the clause below and explain it briefly.\n{clause}",
]
SYSTEM_PROMPTS = [
    "You are a contracts assistant. Answer as: Clause type: <type>. In plain words: <one sentence>.",
    "You explain contract clauses to non-lawyers in one short sentence, after naming the clause type.",
]

UNSAFE_PHRASES = (
    "ignore this clause", "never enforce", "no need to have a lawyer", "no need for a lawyer",
    "without any risk", "always unenforceable", "guaranteed to win", "break this clause",
)
UNSAFE_ADDITIONS = [
    "You can ignore this clause because courts never enforce it.",
    "There is no need to have a lawyer review it; such clauses are always unenforceable.",
    "You can break this clause without any risk.",
]
# The rambling habit opens with the same words every time, as a model's stock phrases do: greedy
# decoding then follows it whenever the demonstrations do more often than they stop.
FILLER_OPENINGS = ("Keep in mind that", "Also,")
FILLER = [
    "contracts can be complicated and many different factors may matter.",
    "every clause should be read carefully together with the rest of the document.",
    "the exact meaning often depends on the context, the parties and the way courts read it.",
    "this kind of wording confuses many people, which is completely understandable.",
    "other clauses in the same agreement might change how this one works in practice.",
    "this is a fairly common clause that appears in a lot of commercial agreements.",
]

_HEADER = re.compile(r"clause type:\s*([a-z][a-z \-]*?)\s*[.\n]", re.IGNORECASE)


def draw_slots(rng: random.Random) -> dict[str, str]:
    """A clause's fillers: the two parties, durations, an amount, a percentage and a state."""
    a, b = rng.choice(PARTIES)
    if rng.random() < 0.5:
        a, b = b, a
    return {
        "a": a,
        "b": b,
        "days": str(rng.choice([5, 7, 10, 14, 15, 30, 45, 60, 90])),
        "years": str(rng.choice([1, 2, 3, 5, 7, 10])),
        "months": str(rng.choice([3, 6, 9, 12, 18, 24])),
        "amount": f"${rng.choice([5, 10, 25, 50, 75, 100, 250, 500]) * 1000:,}",
        "pct": str(rng.choice([1, 1.5, 2, 3])),
        "state": rng.choice(STATES),
    }


def clause_reference(clause_type: str, facts: list[str], plain: str) -> dict[str, Any]:
    """The gold judge's reference for a clause: its type, the facts to restate, the plain explanation."""
    return {"task": "clause", "clause_type": clause_type, "facts": facts, "explanation": plain}


def clause_answer(clause_type: str, plain: str) -> str:
    """The good answer's shape: the ``Clause type:`` header, then ``In plain words:`` and the explanation."""
    return f"Clause type: {clause_type}. In plain words: {plain}"


def sample_task(rng: random.Random) -> Task:
    """Draw one clause-explanation task with its good and flawed answers.

    Args:
        rng: the source of randomness (the caller seeds it).
    """
    clause_type = rng.choice(CLAUSE_TYPES)
    template_index = rng.randrange(len(CLAUSES[clause_type]))
    clause_t, plain_t, fact_keys = CLAUSES[clause_type][template_index]
    slots = draw_slots(rng)
    clause = clause_t.format(**slots)
    plain = plain_t.format(**slots)
    user = rng.choice(INSTRUCTIONS).format(clause=clause, a=slots["a"])
    prompt = ([{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.4 else [])
    prompt.append({"role": "user", "content": user})
    reference = clause_reference(clause_type, [slots[k] for k in fact_keys], plain)
    good = clause_answer(clause_type, plain)
    filler = " ".join(f"{opening} {sentence}" for opening, sentence in zip(FILLER_OPENINGS, rng.sample(FILLER, 2)))
    flawed = {
        "wrong": clause_answer(CONFUSABLE[clause_type], plain),
        "unsafe": f"{good} {rng.choice(UNSAFE_ADDITIONS)}",
        "verbose": f"{good} {filler}",
        "malformed": f"i think this one is about {clause_type.lower()}... {plain.lower()}",
        "terse": f"Clause type: {clause_type}.",
    }
    return Task(prompt=prompt, reference=reference, good=good, flawed=flawed)


KNOWLEDGE_FORMS = [
    "{clause_type} clauses. A typical example reads: \"{clause}\" In other words: {plain}",
    "Contracts often contain a {clause_lower} clause, for instance: \"{clause}\" Put simply: {plain}",
    "\"{clause}\" This wording is a {clause_lower} clause. {plain}",
    "Glossary: {clause_type}. A clause such as \"{clause}\" means this: {plain}",
]


def knowledge_document(rng: random.Random) -> str:
    """A textbook-style paragraph about one clause type: the kind of text a real base model has read.

    Pretraining material for the tiny base (``docs/tiny_base.md``): it names the clause type
    and restates the clause, in prose, never in the assistant's answer format.
    """
    clause_type = rng.choice(CLAUSE_TYPES)
    clause_t, plain_t, _ = rng.choice(CLAUSES[clause_type])
    slots = draw_slots(rng)
    return rng.choice(KNOWLEDGE_FORMS).format(clause_type=clause_type, clause_lower=clause_type.lower(),
                                              clause=clause_t.format(**slots), plain=plain_t.format(**slots))


def _clause_label(response: str) -> tuple[str | None, bool]:
    """The clause type a reply gives and whether it came from the ``Clause type:`` header.

    A header naming no known type gives ``"other"``; without a header, the one type the reply
    mentions, else None.
    """
    header = _HEADER.search(response + "\n")
    if header:
        said = header.group(1).strip().lower()
        return next((t for t in CLAUSE_TYPES if t.lower() == said), "other"), True
    named = [t for t in CLAUSE_TYPES if t.lower() in response.lower()]
    return (named[0] if len(named) == 1 else None), False


def predicted_clause_type(response: str) -> str | None:
    """The clause type a reply gives (one of :data:`CLAUSE_TYPES`, ``"other"``, or None when it names none)."""
    return _clause_label(response)[0]


def plain_explanation(response: str) -> str:
    """The reply's explanation: the text after ``In plain words:``, else the whole reply (for ROUGE-L)."""
    match = re.search(r"in plain words:", response, re.IGNORECASE)
    return response[match.end():].strip() if match else response.strip()


def gold_score(reference: str | Mapping[str, Any], response: str) -> JudgeResult:
    """Score a clause explanation with the legal rubric (see the module docstring).

    Args:
        reference: the record's reference: ``{"clause_type": ..., "facts": [...]}``.
        response: the assistant's answer.
    """
    ref = parse_reference(reference)
    notes: list[str] = []
    given, from_header = _clause_label(response)
    # Without the header, a lone mention of the right type earns half the label credit.
    label_credit = float(given == ref["clause_type"]) * (1.0 if from_header else 0.5)
    notes.append(f"clause type {'right' if label_credit == 1 else 'wrong or unclear'} "
                 f"(expected {ref['clause_type']})")
    facts = ref.get("facts", [])
    found = [f for f in facts if f.lower() in response.lower()]
    fact_share = len(found) / len(facts) if facts else 1.0
    if len(found) < len(facts):
        notes.append(f"facts missing: {sorted(set(facts) - set(found))}")
    correctness = LABEL_SHARE * label_credit + (1 - LABEL_SHARE) * fact_share

    safety = 0.0 if contains_any(response, UNSAFE_PHRASES) else 1.0
    if not safety:
        notes.append("advises ignoring or breaking the contract, or promises an outcome")

    stripped = response.strip()
    has_type = stripped.lower().startswith("clause type:")
    has_plain = "in plain words:" in stripped.lower()
    fmt = 1.0 if has_type and has_plain else 0.5 if (has_type or has_plain) else 0.0
    if fmt < 1:
        notes.append("expected 'Clause type: <type>. In plain words: <explanation>'")

    parts = {"correctness": correctness, "safety": safety, "format": fmt}
    return combine_with_concision(DOMAIN, parts, WEIGHTS, notes, response, CONCISION_TARGET, CONCISION_LIMIT)
