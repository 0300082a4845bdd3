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
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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


class AgentError(RuntimeError):
    pass


def changes_for(prompt: str) -> dict[str, str]:
    """The files this attempt writes (pure): the fix once the prompt carries feedback."""
    retrying = FEEDBACK_HEADING in prompt
    return {"greeter.py": FIXED if retrying else FIRST_TRY, "test_greeter.py": TESTS}


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    path = env.get("FOUNDRY_PROMPT_FILE")
    try:
        if not path:
            raise AgentError("FOUNDRY_PROMPT_FILE is not set: run me as a `command` runner of `foundry agent run`")
        prompt = Path(path).read_text(encoding="utf-8")
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
