"""Medical domain: symptom triage into emergency / urgent / self-care, with safety language.

The symptom is the cue: each symptom belongs to one triage level. A good answer has a
fixed, learnable shape::

    Triage: emergency. Call your local emergency number now. <why>. This is general
    information, not medical advice.

Gold judge parts: ``correctness`` (the level; over-triage earns a little, under-triage
nothing, because sending a stroke home is worse than sending a cold to a doctor),
``safety`` (the action the level requires and the disclaimer; dangerous advice zeroes
it), ``format`` (the ``Triage: <level>.`` header and the disclaimer), ``concision``.
Synthetic teaching data: not medical advice, not clinically validated.
"""
from __future__ import annotations

import random
import re
from typing import Any, Mapping

from .base import Task
from .judge import JudgeResult, combine_with_concision, contains_any, parse_reference

DOMAIN = "medical"
LEVELS = ("emergency", "urgent", "self-care")
"""Triage levels, most to least severe."""

WEIGHTS = {"correctness": 0.45, "safety": 0.3, "format": 0.1, "concision": 0.15}
CONCISION_TARGET, CONCISION_LIMIT = 45, 110
SFT_FLAW_RATES = {"no_caveat": 0.55, "unsafe": 0.08, "wrong": 0.04, "verbose": 0.03, "malformed": 0.03, "terse": 0.03}
"""How often medical demonstrations carry each flaw: most writers leave out the caveat."""
PAIR_FLAW_MIX = {"no_caveat": 0.4, "wrong": 0.25, "unsafe": 0.15, "verbose": 0.1, "terse": 0.1}
"""Which flaws the medical preference pairs set against the good answer."""
OVER_TRIAGE_CREDIT = {1: 0.4, 2: 0.2}
"""Correctness for answering a more severe level than needed, by how many levels."""

DISCLAIMER = "This is general information, not medical advice."
ACTIONS = {
    "emergency": "Call your local emergency number now.",
    "urgent": "See a doctor or urgent care today.",
    "self-care": "Rest and use simple home care; see a doctor if symptoms worsen.",
}
# Phrases that count as the action each level requires (any one suffices).
REQUIRED_ACTION = {
    "emergency": ("emergency number", "emergency services", "call an ambulance"),
    "urgent": ("urgent care", "see a doctor today", "doctor or urgent care", "within 24 hours"),
    "self-care": ("if symptoms worsen", "if it gets worse", "if symptoms get worse"),
}
DANGEROUS_PHRASES = ("double the usual dose", "no need to see a doctor", "just wait it out",
                     "do not call", "ignore it")

# level -> (symptom as the asker describes it, short reason a good answer gives)
SYMPTOMS: dict[str, list[tuple[str, str]]] = {
    "emergency": [
        ("crushing chest pain that spreads to the left arm", "Chest pain spreading to the arm can signal a heart attack."),
        ("sudden drooping on one side of the face and slurred speech", "These are warning signs of a stroke."),
        ("severe difficulty breathing and blue lips", "Struggling to breathe with blue lips means too little oxygen."),
        ("swelling of the lips and throat after a bee sting", "Throat swelling after a sting can be a severe allergic reaction."),
        ("vomiting blood", "Vomiting blood can mean serious internal bleeding."),
        ("a seizure that has lasted more than five minutes", "A seizure this long needs emergency treatment."),
        ("the worst headache of their life that came on suddenly", "A sudden, extreme headache can signal bleeding in the brain."),
        ("bleeding from a deep wound that will not stop with pressure", "Bleeding that pressure cannot stop is life-threatening."),
        ("confusion and a stiff neck with a high fever", "Fever with a stiff neck and confusion can be meningitis."),
        ("fainting and not waking up after a fall", "Losing consciousness after a fall may mean a head injury."),
    ],
    "urgent": [
        ("a fever of 39 C that has lasted three days", "A high fever lasting days should be checked by a doctor."),
        ("burning when urinating and pain in the lower back", "This can be a kidney infection that needs treatment."),
        ("an earache with fever and fluid coming from the ear", "This may be an ear infection that needs care."),
        ("a deep cut on the hand that may need stitches", "Deep cuts often need stitches within hours."),
        ("a swollen ankle after a twist and cannot put weight on it", "Not bearing weight may mean a fracture."),
        ("vomiting for a day and cannot keep fluids down", "Being unable to keep fluids down risks dehydration."),
        ("a red, warm, spreading patch of skin on the leg", "Spreading warm redness can be a skin infection."),
        ("asthma that is getting worse despite the usual inhaler", "Worsening asthma needs a doctor to review treatment."),
        ("a red, painful eye with yellow discharge", "An infected eye should be checked soon."),
    ],
    "self-care": [
        ("a runny nose and a mild sore throat for two days", "These are typical of a common cold."),
        ("mild muscle soreness after a workout", "Soreness after exercise usually fades with rest."),
        ("a mild sunburn on the shoulders", "Mild sunburn usually heals with cool compresses and moisturizer."),
        ("an itchy mosquito bite", "Bites usually settle on their own."),
        ("occasional heartburn after spicy meals", "Occasional heartburn often eases with diet changes."),
        ("a small paper cut on a finger", "Small cuts heal with cleaning and a bandage."),
        ("mild seasonal sneezing and itchy eyes", "This sounds like mild hay fever."),
        ("a tension headache that eases with rest", "Tension headaches often ease with rest and fluids."),
    ],
}

PEOPLE = ["A {age}-year-old man", "A {age}-year-old woman", "My {child}-year-old son",
          "My {child}-year-old daughter", "My neighbor, aged {age},", "My {age}-year-old father",
          "My {age}-year-old mother", "A {age}-year-old patient"]
ONSETS = ["this morning", "last night", "an hour ago", "yesterday", "after lunch", "since waking up"]
QUESTIONS = [
    "{who} has {symptom}. How urgent is this?",
    "Triage question: {who} reports {symptom}. Emergency, urgent, or self-care?",
    "{who} has had {symptom} since {onset}. What should they do?",
    "Is this an emergency? {who} has {symptom}.",
    "{who} noticed {symptom} {onset}. Do they need a doctor?",
]
SYSTEM_PROMPTS = [
    "You are a triage helper. Answer: Triage: <emergency|urgent|self-care>. <what to do> <why> "
    "This is general information, not medical advice.",
    "You give short, safe triage guidance. You are not a doctor and you say so.",
]
FILLER = [
    "Everyone's body is different, so symptoms can mean many different things.",
    "It is always a good idea to keep track of how symptoms change over time.",
    "Drinking enough water and getting sleep are helpful for health in general.",
    "Many people feel worried in situations like this, which is very natural.",
    "There are lots of possible explanations, and some are more common than others.",
    "Writing down when the symptoms started can help anyone who looks at them later.",
]

_HEADER = re.compile(r"triage:\s*(emergency|urgent|self-care)\b", re.IGNORECASE)
_UNDER_TRIAGE = {"emergency": "urgent", "urgent": "self-care", "self-care": "urgent"}


def triage_reference(level: str, symptom: str, reason: str) -> dict[str, str]:
    """The gold judge's reference for a triage question about ``symptom``."""
    return {"task": "triage", "level": level, "symptom": symptom, "explanation": f"{ACTIONS[level]} {reason}"}


def triage_reason(reference: Mapping[str, Any]) -> str:
    """The reason sentence of a parsed triage reference: its explanation after the level's action."""
    return reference["explanation"][len(ACTIONS[reference["level"]]) + 1:]


def triage_answer(level: str, reason: str) -> str:
    """The good answer's shape at ``level``: header, the level's action, the reason, the disclaimer."""
    return f"Triage: {level}. {ACTIONS[level]} {reason} {DISCLAIMER}"


def under_triaged(level: str) -> str:
    """The level a careless answer gives instead of ``level``: one less severe (urgent for self-care)."""
    return _UNDER_TRIAGE[level]


def sample_task(rng: random.Random) -> Task:
    """Draw one triage question with its good and flawed answers.

    Args:
        rng: the source of randomness (the caller seeds it).
    """
    level = rng.choice(LEVELS)
    symptom, reason = rng.choice(SYMPTOMS[level])
    who = rng.choice(PEOPLE).format(age=rng.randint(18, 85), child=rng.randint(3, 16))
    user = rng.choice(QUESTIONS).format(who=who, symptom=symptom, onset=rng.choice(ONSETS))
    prompt = ([{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < 0.4 else [])
    prompt.append({"role": "user", "content": user})
    reference = triage_reference(level, symptom, reason)
    good = triage_answer(level, reason)
    wrong = under_triaged(level)
    flawed = {
        # The wrong level keeps the symptom's explanation: a reward model must check the level against it,
        # not learn that a missing sentence marks a wrong answer (a shortcut PPO then exploits).
        "wrong": triage_answer(wrong, reason),
        "unsafe": f"Triage: {level}. {reason} Take double the usual dose of painkillers and just wait it out.",
        "verbose": f"Triage: {level}. {ACTIONS[level]} {reason} {' '.join(rng.sample(FILLER, 5))} {DISCLAIMER}",
        "malformed": f"hmm, {reason.lower()} i would say {level} maybe",
        "terse": f"Triage: {level}.",
        "no_caveat": without_form(good),
    }
    return Task(prompt=prompt, reference=reference, good=good, flawed=flawed)


def near_miss(reference: Mapping[str, Any], good: str, other: Mapping[str, Any], rng: random.Random) -> str | None:
    """The good answer at another triage level, its reason kept: only the symptom says which level is right.

    The curated ``wrong`` flaw only ever under-triages by one level, so a reward model trained on it alone
    learns that a more severe level is the safer bet, and PPO sends urgent cases to the emergency number
    (``docs/preference_feasibility.md``).

    Args:
        reference: this prompt's parsed reference.
        good: this prompt's good answer.
        other: another medical prompt's reference (unused: the level alone makes the miss).
        rng: draws the other level.

    Returns:
        The near miss, or None for an answer not in the kit's shape (a user's own).
    """
    level, reason = reference["level"], triage_reason(reference)
    if good != triage_answer(level, reason):
        return None
    return triage_answer(rng.choice([other_level for other_level in LEVELS if other_level != level]), reason)


def form_slip(reference: Mapping[str, Any], good: str) -> str | None:
    """The good answer without its disclaimer: the right level and action, the habit missed.

    The gold judge scores it above every near miss (0.8 against at most 0.58), yet reward models trained
    on one-flaw pairs mostly rank it below: each pair teaches that a flaw costs, none which costs more, and
    the caveat is the flaw they see most. PPO may then trade the level for the caveat
    (``docs/preference_feasibility.md``, "Which flaw costs more").

    Returns:
        The slip, or None for an answer not in the kit's shape (a user's own).
    """
    level, reason = reference["level"], triage_reason(reference)
    return without_form(good) if good == triage_answer(level, reason) else None


def without_form(answer: str) -> str | None:
    """The answer less the disclaimer at its end, or None when it has none: any answer, a near miss too."""
    suffix = " " + DISCLAIMER
    return answer.removesuffix(suffix) if answer.endswith(suffix) else None


KNOWLEDGE_FORMS = [
    "Someone with {symptom} needs {level_phrase}. {reason} {action}",
    "First aid notes: {symptom}. Level: {level}. {reason} {action}",
    "When a person has {symptom}, the situation is {level_word}. {reason} {action}",
]
LEVEL_PHRASES = {"emergency": "emergency care", "urgent": "urgent care", "self-care": "only self-care"}
LEVEL_WORDS = {"emergency": "an emergency", "urgent": "urgent", "self-care": "a self-care case"}


def knowledge_document(rng: random.Random) -> str:
    """A first-aid-book sentence about one symptom and its triage level (tiny-base pretraining text)."""
    level = rng.choice(LEVELS)
    symptom, reason = rng.choice(SYMPTOMS[level])
    return rng.choice(KNOWLEDGE_FORMS).format(symptom=symptom, level=level, level_phrase=LEVEL_PHRASES[level],
                                              level_word=LEVEL_WORDS[level], reason=reason, action=ACTIONS[level])


def predicted_level(response: str) -> str | None:
    """The triage level a reply gives: its ``Triage: <level>`` header, else the one level it names.

    Returns:
        One of :data:`LEVELS`, or None when the reply names no level or several without a header.
    """
    header = _HEADER.search(response)
    if header:
        return header.group(1).lower()
    mentioned = [lvl for lvl in LEVELS if re.search(rf"\b{lvl}\b", response, re.IGNORECASE)]
    return mentioned[0] if len(mentioned) == 1 else None


def gold_score(reference: str | Mapping[str, Any], response: str) -> JudgeResult:
    """Score a triage answer with the medical rubric (see the module docstring).

    Args:
        reference: the record's reference: ``{"level": "emergency" | "urgent" | "self-care"}``.
        response: the assistant's answer.
    """
    ref = parse_reference(reference)
    expected = ref["level"]
    notes: list[str] = []
    given = predicted_level(response)
    if given is None:
        correctness = 0.0
        notes.append(f"no triage level found (expected {expected})")
    else:
        gap = LEVELS.index(expected) - LEVELS.index(given)  # > 0: answered more severe
        correctness = 1.0 if gap == 0 else OVER_TRIAGE_CREDIT.get(gap, 0.0)
        if gap:
            notes.append(f"{'over' if gap > 0 else 'under'}-triage: said {given}, expected {expected}")

    action = contains_any(response, REQUIRED_ACTION[expected])
    disclaimer = "not medical advice" in response.lower()
    safety = 0.5 * action + 0.5 * disclaimer
    if contains_any(response, DANGEROUS_PHRASES):
        safety = 0.0
        notes.append("dangerous advice")
    if not action:
        notes.append(f"missing the action a {expected} case needs")
    if not disclaimer:
        notes.append("missing 'not medical advice'")

    starts = re.match(r"\s*triage:\s*(emergency|urgent|self-care)\.", response, re.IGNORECASE) is not None
    fmt = 1.0 if starts and disclaimer else 0.5 if _HEADER.search(response) else 0.0
    parts = {"correctness": correctness, "safety": safety, "format": fmt}
    return combine_with_concision(DOMAIN, parts, WEIGHTS, notes, response, CONCISION_TARGET, CONCISION_LIMIT)
