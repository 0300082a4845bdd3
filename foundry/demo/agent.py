"""The demo's coding agent: a `command` runner for `foundry agent run`.

Foundry's runner clones the example repository from the GitHub stand-in (real
git over smart HTTP), writes the prompt, and starts this program in the work
tree with $FOUNDRY_PROMPT_FILE naming the prompt. It edits files and exits 0;
the runner then builds the commit (author, trailers), checks it against policy,
pushes `foundry/<run>` and opens or updates the draft pull request. So the
demo exercises exactly what a real coding-agent CLI would go through.

It is scripted, not clever: the first attempt handles the spaces around a name
but forgets the empty name, so the demo's CI fails once and Foundry's retry
(attempt 2, whose prompt carries the CI failure as feedback) fixes it.

Given a plan prompt (input.json mode plan, decision 0020), it plans instead: it
reads greeter.py and test_greeter.py in the work tree, changes nothing (the
runner compares the work tree afterwards and throws away a plan made by
changing files), and answers with the plan's JSON block naming what it read
(foundry.domain.plans). The command runner's answer is the `summary` of its
last stdout line, so the whole answer, block included, goes there.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

FIRST_TRY = (
    '"""Greetings for the people who use our product."""\n\n\n'
    "def greet(name: str) -> str:\n"
    "    # Sign-up sends names with stray spaces around them.\n"
    '    return f"Hello, {name.strip()}!"\n'
)
FIXED = (
    '"""Greetings for the people who use our product."""\n\n\n'
    "def greet(name: str) -> str:\n"
    "    # Sign-up sends names with stray spaces around them, or no name at all.\n"
    "    name = name.strip()\n"
    '    return f"Hello, {name or \'there\'}!"\n'
)
TESTS = (
    "import unittest\n\n"
    "from greeter import greet\n\n\n"
    "class GreetTest(unittest.TestCase):\n"
    "    def test_greets_by_name(self):\n"
    '        self.assertEqual(greet("Ada"), "Hello, Ada!")\n\n'
    "    def test_ignores_surrounding_spaces(self):\n"
    '        self.assertEqual(greet("  Ada "), "Hello, Ada!")\n\n'
    "    def test_greets_someone_without_a_name(self):\n"
    '        self.assertEqual(greet(""), "Hello, there!")\n'
    '        self.assertEqual(greet("   "), "Hello, there!")\n\n\n'
    'if __name__ == "__main__":\n'
    "    unittest.main()\n"
)


# The prompt's section that only a remediation attempt has (foundry.runner.prompt).
FEEDBACK_HEADING = "## Feedback on the previous attempt"
# The section only a plan prompt has (foundry.runner.prompt.build_plan_prompt).
PLAN_HEADING = "## Your answer"
CODE, TESTS_FILE = "greeter.py", "test_greeter.py"


class AgentError(RuntimeError):
    pass


def changes_for(prompt: str) -> dict[str, str]:
    """The files this attempt writes (pure): the fix once the prompt carries feedback."""
    retrying = FEEDBACK_HEADING in prompt
    return {"greeter.py": FIXED if retrying else FIRST_TRY, "test_greeter.py": TESTS}


def plan_for(tree: dict[str, str | None]) -> dict[str, Any]:
    """The plan for the ticket, from the files as read (pure; None: the file is not there).

    It names what it found (greet()'s line and return, the tests there are), so the plan
    approvers read is about this repository, not a canned text."""
    code, tests = tree.get(CODE), tree.get(TESTS_FILE)
    define = re.search(r"^def greet\(.*$", code or "", re.M)
    if define is None:
        return {"summary": f"I could not find greet() in {CODE}, so I cannot plan the change yet.", "files": [],
                "approach": "Wait for an answer, then plan again.", "tests": [], "risks": [],
                "openQuestions": [f"Where does the greeting live? {CODE} " +
                                  ("has no greet() function." if code is not None else "does not exist.")]}
    line = (code or "")[: define.start()].count("\n") + 1
    returned = re.search(r"^\s*return (.+)$", (code or "")[define.end():], re.M)
    returns = returned.group(1).strip() if returned else "its greeting"
    names = re.findall(r"^\s*def (test_\w+)", tests or "", re.M)
    had = (f"{TESTS_FILE} has {len(names)} test ({', '.join(names)})" if len(names) == 1 else
           f"{TESTS_FILE} has {len(names)} tests ({', '.join(names)})" if names else f"{TESTS_FILE} has no test")
    return {
        "summary": (f"greet() in {CODE} (line {line}) returns {returns} as given, so the spaces around a name stay "
                    "and an empty name reads 'Hello, !'. Strip the name and greet 'there' when nothing is left; "
                    f"{had}, so add tests for both cases."),
        "files": [
            {"path": CODE, "why": f"greet() (line {line}) returns {returns}: strip the name, greet 'there' "
                                  "when it is empty"},
            {"path": TESTS_FILE, "why": f"{had.removeprefix(TESTS_FILE + ' ')}: add tests for a name with "
                                        "spaces and for an empty one"},
        ],
        "approach": ("1. In greet(), strip the name. 2. Return 'Hello, there!' when the stripped name is empty, "
                     "else 'Hello, <name>!' as now. 3. Add the two tests next to the existing ones."),
        "tests": ['greet("  Ada ") == "Hello, Ada!"', 'greet("") == greet("   ") == "Hello, there!"',
                  *(f"{n} keeps passing" for n in names), f"python -m unittest {TESTS_FILE[:-3]}"],
        "risks": ["Callers that relied on the name being returned with its spaces get it stripped."],
        "openQuestions": [],
    }


def plan_answer(plan: dict[str, Any]) -> str:
    """The answer the runner parses: a sentence, then the plan in one ```json block."""
    return (f"I read {CODE} and {TESTS_FILE} and changed nothing. The plan:\n\n"
            f"```json\n{json.dumps(plan, indent=2)}\n```\n")


def make_plan() -> int:
    """Read the work tree (the current directory), write nothing, answer with the plan."""
    tree = {name: (Path(name).read_text(encoding="utf-8") if Path(name).is_file() else None)
            for name in (CODE, TESTS_FILE)}
    plan = plan_for(tree)
    print(json.dumps({"summary": plan_answer(plan), "turns": 1}))
    return 0


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    path = env.get("FOUNDRY_PROMPT_FILE")
    try:
        if not path:
            raise AgentError("FOUNDRY_PROMPT_FILE is not set: run me as a `command` runner of `foundry agent run`")
        prompt = Path(path).read_text(encoding="utf-8")
        if PLAN_HEADING in prompt:
            return make_plan()
        files = changes_for(prompt)
        for name, content in files.items():
            Path(name).write_text(content, encoding="utf-8")
    except (AgentError, OSError) as exc:
        print(f"demo agent: {exc}", file=sys.stderr)
        return 1
    fixing = FEEDBACK_HEADING in prompt
    summary = ("Handled the empty name the CI failure pointed at: greet() now says 'Hello, there!'."
               if fixing else "greet() now strips the spaces around a name; tests added for both cases.")
    # The last stdout line, as JSON, is what the command runner reports.
    print(json.dumps({"summary": summary, "turns": 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
