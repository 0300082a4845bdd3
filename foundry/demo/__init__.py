"""The local demo and the exploration stack behind `foundry dev demo|up|down`.

stack.py starts the pieces (control plane, CRDs, SQLite, the Linear and GitHub
stand-ins, `foundry bridge`, `foundry operator` with the local agent provider);
story.py plays one ticket through to a merged PR on top of it; agent.py is the
local coding agent; example_repo.py and ci.py are the small repository it
changes and the CI that judges the change.
"""
