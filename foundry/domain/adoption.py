"""Whether a pull request found on a run's branch is Foundry's own (pure; no I/O).

The branch name `foundry/<run>` is computable, and anyone with push access can
open a PR from it. Foundry adopts a PR (judges it, announces it, merges its
outcome into the run) only when both hold:

- it was opened by Foundry's own GitHub identity (the App's `<slug>[bot]`, or
  the user of Foundry's token), which only Foundry's tokens can act as;
- its head commit is the runner's: authored as the Foundry agent and carrying
  the trailers the runner writes for this run (foundry.runner.publish).

None means adopt; otherwise the reason, in words for the people on the ticket.
"""

from __future__ import annotations

import re

RUNNER_AUTHOR = "Foundry agent"  # foundry.runner.gitops.AUTHOR_NAME
_TRAILER = re.compile(r"^(Foundry-Run|Foundry-Attempt):[ \t]*(\S+)[ \t]*$", re.MULTILINE)


def runner_trailers(message: str) -> dict[str, str]:
    """The Foundry-Run / Foundry-Attempt trailers of a commit message (its last paragraph)."""
    last = message.strip().split("\n\n")[-1]
    return {k: v for k, v in _TRAILER.findall(last)}


def check_opener(number: int, opener: str | None, foundry_login: str) -> str | None:
    if opener and opener.lower() == foundry_login.lower():
        return None
    return f"PR #{number} was opened by {opener or 'an unknown user'}, not by Foundry ({foundry_login})"


def check_head(number: int, sha: str, author_name: str | None, message: str, run: str, attempt: int) -> str | None:
    """The head commit must be one the runner pushed for this run, at an attempt it has started."""
    trailers = runner_trailers(message)
    said = trailers.get("Foundry-Attempt", "")
    if (author_name != RUNNER_AUTHOR or trailers.get("Foundry-Run") != run
            or not said.isdigit() or not 1 <= int(said) <= max(1, attempt)):
        return (f"the head {sha[:12]} of PR #{number} was not pushed by Foundry's runner for this run "
                f"(author {author_name or 'unknown'}, no Foundry-Run: {run} trailer of a started attempt)")
    return None


def not_adopted_comment(issue_key: str, number: int, url: str, why: str) -> str:
    def line(text: object) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    link = f"[PR #{number}]({url})" if url else f"PR #{number}"
    return (f"### Foundry did not adopt {link} for {line(issue_key)}\n\n"
            f"**Why:** {line(why)}\n\n"
            "Foundry judges and reports only pull requests it opened itself from commits its runner pushed. "
            "This one is left alone; the run goes on as if there were no pull request.")
