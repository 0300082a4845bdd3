"""The Linear sweep: a periodic re-read of Linear that feeds the webhooks' own commands.

Webhooks are the fast path; a delivery Linear gave up on (the bridge was down
through all its retries, or Linear disabled the webhook) is still acted on at
the next sweep. Modules: `queries` (GraphQL and filters), `decide` (which
command a node asks for, pure), `state` (the cursor and lease row in the
database), `sweeper` (one round), `loop` (the bridge-side timer) and `metrics`.
"""
