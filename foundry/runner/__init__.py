"""Foundry's agent runner: `foundry agent run`, the entrypoint of the agent image.

docs/agent-contract.md is its contract. Modules: jobinput (input.json v2),
layout (paths), prompt, gitops (hardened git), publish (the one commit, the
PR), pulls (GitHub REST), result (the termination message), steps (prepare,
agent, publish, run_all); agents/ holds the coding-agent CLI adapters.
"""
