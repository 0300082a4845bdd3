"""The agent-written plan (foundry.domain.plans): finding it in an answer, validating it, its hash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundry.domain import plans as P

PLAN = {
    "summary": "Strip surrounding whitespace from names before greeting.",
    "files": [{"path": "greeter.py", "why": "greet() formats the raw name"},
              {"path": "tests/test_greeter.py", "why": "a test for padded names"}],
    "approach": "Call name.strip() in greet(); keep the signature.",
    "tests": ["tests/test_greeter.py: greet('  Ada ') == 'Hello, Ada!'"],
    "risks": ["Callers relying on the padding (none found by grep)."],
    "openQuestions": [],
}


def answer(obj: object, before: str = "Here is the plan.\n\n", info: str = "json") -> str:
    return f"{before}```{info}\n{json.dumps(obj, indent=2)}\n```\n"


def test_a_plan_in_an_answer_is_found_validated_and_rendered() -> None:
    plan = P.parse_answer(answer(PLAN))
    assert plan.as_dict() == PLAN
    assert plan.paths == ("greeter.py", "tests/test_greeter.py") and not plan.needs_answers
    md = P.render_markdown(plan)
    for heading in ("### Summary", "### Files to change", "### Approach", "### Tests", "### Risks",
                    "### Open questions"):
        assert heading in md
    assert "- `greeter.py`: greet() formats the raw name" in md
    assert md.rstrip().endswith("- (none)")  # no open questions
    fields = P.summary_fields(plan)
    assert fields["hash"] == P.plan_hash(plan) and fields["json"] == PLAN and fields["markdown"] == md


def test_the_last_json_block_wins_and_other_fences_are_skipped() -> None:
    text = ("First a sketch:\n" + answer({**PLAN, "summary": "draft"}) + "Some code:\n```python\nprint(1)\n```\n"
            + "````json\n" + json.dumps(PLAN) + "\n```\nstill inside\n````\n")
    # The four-backtick block is the last one; a three-backtick line does not close it.
    with pytest.raises(P.PlanError, match="not valid JSON"):
        P.parse_answer(text)
    assert P.parse_answer(answer({**PLAN, "summary": "draft"}) + answer(PLAN)).summary == PLAN["summary"]


def test_whitespace_and_key_order_do_not_change_the_plan_or_its_hash() -> None:
    messy = {k: PLAN[k] for k in reversed(P.KEYS)}
    messy["summary"] = "  " + PLAN["summary"] + "\n"
    messy["files"] = [{"why": "greet() formats the raw name", "path": "./greeter.py"}, PLAN["files"][1]]
    assert P.plan_hash(P.validate(messy)) == P.plan_hash(P.validate(PLAN))


@pytest.mark.parametrize("change", [
    lambda p: {**p, "summary": p["summary"] + "!"},
    lambda p: {**p, "files": p["files"][:1]},
    lambda p: {**p, "files": list(reversed(p["files"]))},  # the order of files is part of what was read
    lambda p: {**p, "tests": []},
    lambda p: {**p, "risks": p["risks"] + ["another"]},
    lambda p: {**p, "openQuestions": ["Which greeting?"]},
    lambda p: {**p, "approach": p["approach"].replace("strip", "lstrip")},
])
def test_any_change_to_what_is_read_gives_a_new_hash(change) -> None:
    assert P.plan_hash(P.validate(change(PLAN))) != P.plan_hash(P.validate(PLAN))


@pytest.mark.parametrize("text,message", [
    ("No plan here, sorry.", "no ```json block"),
    ("```python\n{}\n```", "no ```json block"),
    ("```json\n{\"summary\": \n```", "not valid JSON"),
    ("```json\n[1, 2]\n```", "must be a JSON object, got a list"),
    (answer({k: v for k, v in PLAN.items() if k != "approach"}), "lacks approach"),
    (answer({**PLAN, "extra": 1}), "unknown fields extra"),
    (answer({**PLAN, "summary": "   "}), "plan.summary is empty"),
    (answer({**PLAN, "tests": "run them"}), "plan.tests must be a list of strings, got a string"),
    (answer({**PLAN, "risks": [1]}), r"plan.risks\[0\] must be a string, got a number"),
    (answer({**PLAN, "files": [{"path": "../etc/passwd", "why": "x"}]}), "without '..'"),
    (answer({**PLAN, "files": [{"path": "/abs", "why": "x"}]}), "relative to the repository root"),
    (answer({**PLAN, "files": [{"path": ".git/config", "why": "x"}]}), "inside .git"),
    (answer({**PLAN, "files": [{"path": "a.py"}]}), r"plan.files\[0\].why must be a string, got null"),
    (answer({**PLAN, "files": [{"path": "a.py", "why": "x"}, {"path": "./a.py", "why": "y"}]}), "listed twice"),
    (answer({**PLAN, "files": [], "openQuestions": []}), "names no file to change and asks no question"),
    ("```json\n" + "x" * (P.MAX_PLAN_BYTES + 1) + "\n```", f"at most {P.MAX_PLAN_BYTES} bytes"),
])
def test_a_malformed_plan_is_refused_with_a_reason_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(P.PlanError, match=message):
        P.parse_answer(text)


def test_an_oversized_plan_of_valid_parts_is_refused() -> None:
    many = [f"risk {i}: " + "r" * (P.MAX_ITEM - 20) for i in range(P.MAX_ITEMS)]
    with pytest.raises(P.PlanError, match=f"at most {P.MAX_PLAN_BYTES} bytes"):
        P.validate({**PLAN, "risks": many})


def test_a_plan_that_only_asks_questions_is_valid_and_needs_answers() -> None:
    plan = P.validate({**PLAN, "files": [], "openQuestions": ["Which service owns greetings?"]})
    assert plan.needs_answers and plan.paths == ()


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(lambda s: s.strip())
_segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(lambda s: s not in (".", ".."))
_plans = st.fixed_dictionaries({
    "summary": _text, "approach": _text,
    "files": st.lists(st.fixed_dictionaries({"path": st.lists(_segment, min_size=1, max_size=3).map("/".join),
                                             "why": _text}),
                      min_size=1, max_size=4, unique_by=lambda f: f["path"]).filter(
        lambda fs: all(f["path"].split("/")[0] != ".git" for f in fs)),
    "tests": st.lists(_text, max_size=3), "risks": st.lists(_text, max_size=3),
    "openQuestions": st.lists(_text, max_size=2),
})


@settings(max_examples=60, deadline=None)
@given(_plans)
def test_the_canonical_form_round_trips_and_its_hash_is_stable(raw) -> None:
    plan = P.validate(raw)
    canonical = P.canonical_json(plan)
    again = P.parse_json(canonical)
    assert again == plan and P.canonical_json(again) == canonical and P.plan_hash(again) == P.plan_hash(plan)
    # Through an answer, pretty-printed with shuffled keys, the plan is the same plan.
    shuffled = {k: raw[k] for k in sorted(raw, reverse=True)}
    assert P.plan_hash(P.parse_answer(answer(shuffled))) == P.plan_hash(plan)


@settings(max_examples=60, deadline=None)
@given(_plans, _text)
def test_a_changed_summary_always_changes_the_hash(raw, extra) -> None:
    plan = P.validate(raw)
    changed = P.validate({**raw, "summary": raw["summary"].strip() + " " + extra})
    assert P.plan_hash(changed) != P.plan_hash(plan)
