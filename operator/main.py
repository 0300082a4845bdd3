"""kopf entry file: `FOUNDRY_NAMESPACE=<namespace> kopf run --standalone -n <namespace> operator/main.py`
(FOUNDRY_NAMESPACE: where the FoundryRuns are watched, which kopf does not tell its handlers).

Run by path only: a package named `operator` would shadow Python's stdlib
module of that name, so this folder has no __init__.py and nothing imports it.
`foundry operator` is the same operator with Foundry's own flags.
"""

from foundry.operator.handlers import *  # noqa: F401,F403 - importing registers the handlers
