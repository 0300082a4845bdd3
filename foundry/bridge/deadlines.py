"""How long the bridge waits on its dependencies, so its answer reaches the sender in time.

Linear gives a webhook 5 s and GitHub 10 s; an answer later than that is a
failed delivery however right it is, and a 503 that arrives too late tells the
sender nothing. So every delivery has a deadline under the tighter limit, and
every call the bridge makes (the API server, PostgreSQL) has a timeout of its
own under that deadline: a hung dependency costs one call's timeout and a 503,
never the sender's patience. Why these numbers: docs/decisions/0008-bridge-deadlines.md.
"""

from __future__ import annotations

# The senders' own limits, for reference and for the tests that hold the bridge to them.
SENDER_LIMIT_SECONDS = {"linear": 5.0, "github": 10.0}

# From the first byte read to the answer, whatever the dependencies do. The
# 1.5 s below Linear's 5 s are for the network, the event loop of a busy bridge
# and the sender's own clock.
DELIVERY_DEADLINE_SECONDS = 3.5

# One request to the API server (connect included). An intake makes at most two
# (create, then read on a conflict) after its claim; a hung server costs one.
KUBE_CONNECT_SECONDS = 1.5
KUBE_REQUEST_SECONDS = 2.5

# PostgreSQL: establishing a connection (libpq counts whole seconds, at least 2),
# and any one statement, enforced by the server (statement_timeout) and, for a
# server that stopped answering altogether, by the client.
SQL_CONNECT_SECONDS = 2
SQL_STATEMENT_SECONDS = 2.5

# /readyz answers within this even when both dependencies hang.
READY_TIMEOUT_SECONDS = 3.0
