"""The PII detector's new types (IPv6, names), its hard negatives, the planted corpus, the scorer, the audit."""
import importlib.util
import ipaddress
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from course_lib.audit.pii import (PlantedSpan, PlantedText, audit_dataset, audit_texts, mask, planted_corpus,
                                  score_detector, side_by_side)
from course_lib.data import find_pii, luhn_valid, save_records, scrub_pii
from course_lib.data.pii import PII_TYPES, PiiFinding

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("address", ["2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:db8::8a2e:370:7334",
                                     "fe80::1ff:fe23:4567:890a", "::ffff:192.0.2.128", "64:ff9b::203.0.113.9"])
def test_ipv6_addresses_found_in_every_form(address):
    assert [(f.kind, f.text) for f in find_pii(f"login from {address}.")] == [("ip_address", address)]


@pytest.mark.parametrize("text,name", [
    ("Dr. Kofi Mensah reviewed the chart.", "Kofi Mensah"),  # a title: names from no list count too
    ("Maria Garcia will attend the closing.", "Maria Garcia"),  # known first name, known last name
    ("# reviewed by John F. Smith", "John F. Smith"),
    ("Notices go to María García López at the premises.", "María García López"),
    ("Patient Raj Chen reports a mild fever.", "Raj Chen"),  # a cue, and one known name
    ("Sehr geehrte Frau Müller,", "Müller"),
])
def test_names_found_by_title_lists_or_cue(text, name):
    assert [(f.kind, f.text) for f in find_pii(text)] == [("person", name)]


HARD_NEGATIVES = [
    "See Section 4.2.1 of the Agreement; Clause 12.3 survives.", "Requires Python 3.11.2 and numpy 1.26.4.",
    "The fee is $1,250,000.00 payable in May 2024.", "assert add(123456, 654321) == 777777 and x = 1234567890123",
    "Order 4111 1111 1111 1112 shipped.", "Serve on 127.0.0.1:8000, ::1 or 0.0.0.0.",
    "The Agreement is effective 2024-01-15.", "May the Supplier assign this Agreement?",
    "Will Customer be liable for delays?", "May Supplier assign it? The Grace Period clause applies.",
    "Wire the refund to Chase Bank.", "Supplier shall pay Customer; the Tenant keeps the premises.",
    "evens = items[::2]; odds = items[1::2]", "std::vector<int> v;", "class DataLoader:", "started at 12:30:45",
    "MAC 00:1A:2B:3C:4D:5E", "BP 120/80, 12.5 mg twice daily, 38.5 C for 3 days", "ISBN 978-3-16-148410-0",
    "a maria garcia in lowercase is not caught",  # a known miss, kept visible: see docs/pii.md
]


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negatives_left_alone(text):
    assert find_pii(text) == []


def test_scrub_replaces_new_types_with_placeholders():
    clean, counts = scrub_pii("Dr. Ana Ivanova (+44 20 7946 0958) logged in from 2001:db8::1; SSN 123 45 6789.")
    assert clean == "Dr. [PERSON] ([PHONE]) logged in from [IP_ADDRESS]; SSN [SSN]."
    assert counts == {"person": 1, "phone": 1, "ip_address": 1, "ssn": 1}


def test_score_detector_matches_hand_computed_precision_and_recall():
    # Text A: an email found; a name missed while a wrong span is flagged as a name.
    # Text B: a name found by an overlapping piece; a phone flagged on a hard negative.
    text_a = PlantedText("a", "legal", (PlantedSpan("email", "plain", 0, 5), PlantedSpan("person", "plain", 10, 15)),
                         ())
    text_b = PlantedText("b", "legal", (PlantedSpan("person", "plain", 0, 4),),
                         (PlantedSpan("negative", "clause_number", 10, 14),))
    found = {"a": [PiiFinding("email", 0, 5, ""), PiiFinding("person", 20, 25, "")],
             "b": [PiiFinding("person", 2, 6, ""), PiiFinding("phone", 10, 12, "")]}
    score = score_detector(found.__getitem__, [text_a, text_b])
    assert score["per_type"]["email"] == {"planted": 1, "detections": 1, "correct": 1, "found": 1,
                                          "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert {k: score["per_type"]["person"][k] for k in ("precision", "recall", "f1")} == {
        "precision": 0.5, "recall": 0.5, "f1": 0.5}  # 1 of 2 flags right, 1 of 2 names found
    assert score["per_type"]["phone"]["precision"] == 0.0 and score["per_type"]["phone"]["recall"] is None
    assert score["per_type"]["mrn"]["precision"] is None  # never reported
    assert (score["all_types"]["precision"], score["all_types"]["recall"]) == (0.5, 0.667)  # 2/4, 2/3
    assert score["hard_negatives"] == {"total": 1, "flagged": 1, "flagged_by_form": {"clause_number": 1}}
    assert score["recall_by_form"]["person: plain"] == {"planted": 2, "found": 1, "recall": 0.5}
    table = side_by_side({"hand": score})
    assert "| person | 2 | 0.50 | 0.50 |" in table and "| mrn | 0 | – | – |" in table


def test_planted_corpus_is_deterministic_with_every_type_and_valid_values():
    corpus = planted_corpus(120, seed=3)
    assert corpus == planted_corpus(120, seed=3) and corpus != planted_corpus(120, seed=4)
    spans = [(t.text[s.start:s.end], s) for t in corpus for s in t.pii]
    assert {s.kind for _, s in spans} == set(PII_TYPES)
    assert all(luhn_valid(value) for value, s in spans if s.kind == "credit_card")
    assert all(ipaddress.ip_address(value) for value, s in spans if s.kind == "ip_address")
    assert all(t.negatives and t.text.strip() == t.text for t in corpus)


def test_kit_detector_on_the_planted_corpus():
    """Regression guard for the numbers in docs/pii.md (measured there on 1000 texts)."""
    score = score_detector(find_pii, planted_corpus(300, seed=1))
    assert score["all_types"]["precision"] >= 0.97 and score["all_types"]["recall"] >= 0.85
    assert score["per_type"]["ip_address"]["recall"] == 1.0 and score["per_type"]["person"]["precision"] >= 0.95
    assert score["hard_negatives"]["flagged"] <= 0.02 * score["hard_negatives"]["total"]


def test_mask_keeps_context_and_hides_values():
    text = "Please email ana@example.com today. Unrelated words here. Call +44 20 7946 0958 now."
    assert mask(text, find_pii(text), context=6) == "…email [EMAIL] today… …Call [PHONE] now."
    assert mask(text, find_pii(text), context=200) == (
        "Please email [EMAIL] today. Unrelated words here. Call [PHONE] now.")


def test_audit_texts_counts_per_type_with_masked_examples():
    generations = ["Sure! Email ana@example.com or call (415) 555-0134.", "Clause type: Payment Terms.",
                   "Dr. Kofi Mensah, DOB: 03/14/1962, will see you."]
    audit = audit_texts(generations, max_examples=1)
    assert audit["records"] == 3 and audit["records_with_pii"] == 2
    assert audit["counts"] == {"email": 1, "mrn": 0, "dob": 1, "ssn": 0, "credit_card": 0, "ip_address": 0,
                               "phone": 1, "person": 1}
    assert audit["examples"] == [{"id": "0", "types": ["email", "phone"],
                                  "masked": "Sure! Email [EMAIL] or call [PHONE]."}]
    shown = audit_texts(generations, max_examples=5)["examples"]
    assert [e["id"] for e in shown] == ["0", "2"] and "Mensah" not in json.dumps(shown)


def test_audit_dataset_reads_a_jsonl_file(tmp_path):
    records = [{"id": "r1", "domain": "medical", "reference": "{}", "messages": [
                   {"role": "user", "content": "I am Maria Garcia, MRN 00482913. Is this urgent?"},
                   {"role": "assistant", "content": "Call your local emergency number now."}]},
               {"id": "r2", "domain": "legal", "reference": "{}", "messages": [
                   {"role": "user", "content": "May Supplier assign this Agreement?"},
                   {"role": "assistant", "content": "Clause type: Assignment."}]}]
    audit = audit_dataset(save_records(records, tmp_path / "sft.jsonl"))
    assert audit["records"] == 2 and audit["records_with_pii"] == 1
    assert audit["counts"]["person"] == 1 and audit["counts"]["mrn"] == 1
    assert audit["examples"][0]["id"] == "r1" and "00482913" not in audit["examples"][0]["masked"]
    assert audit_dataset(records) == audit  # records in memory read the same way


# Runs in a fresh interpreter: an audit hook ends it at the first name lookup or connection
# (socket creation alone is not traffic: urllib3 opens a local IPv6 socket to probe support).
OFFLINE_SCRIPT = textwrap.dedent("""
    import os, socket, sys

    def guard(event, args):
        lookup = event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex")
        if lookup or (event in ("socket.connect", "socket.sendto")
                      and args[0].family in (socket.AF_INET, socket.AF_INET6)):
            print("network attempt:", event, file=sys.stderr, flush=True)
            os._exit(3)

    sys.addaudithook(guard)
    text = "Dr. Maria Garcia, ana@example.co.uk, 2001:db8::1, DOB: 03/14/1962"
    {body}
""")


def _run_offline(body: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", OFFLINE_SCRIPT.format(body=body)]
    # Without a network namespace too, when this machine allows one (the hook guards either way).
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-rn"] + command
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_offline_guard_catches_a_lookup():
    result = _run_offline("socket.getaddrinfo('example.com', 443)")
    assert result.returncode == 3 and "network attempt" in result.stderr


def test_kit_detector_runs_offline():
    result = _run_offline("from course_lib.data import find_pii\nprint(sorted({f.kind for f in find_pii(text)}))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "['dob', 'email', 'ip_address', 'person']"


@pytest.mark.skipif(importlib.util.find_spec("presidio_analyzer") is None,
                    reason="presidio-analyzer not installed (optional: pip install 'course-lib[presidio]')")
def test_presidio_detector_runs_offline_without_a_spacy_model():
    """tldextract would fetch the public suffix list on first use; the adapter reads its bundled copy."""
    result = _run_offline("from course_lib.audit.pii import presidio_detector\n"
                          "print(sorted({f.kind for f in presidio_detector(text)}))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "['dob', 'email', 'ip_address', 'person']"
