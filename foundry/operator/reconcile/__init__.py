"""Reconcile logic: one plain function per phase (no kopf), driven by loop.reconcile_run.

Read in this order:

- loop.py: the driver and STEPS, the step of each active phase;
- steps_intake.py: Pending (the database claim), Analysing (the plan);
- steps_approval.py: WaitingApproval, and the checks every human decision passes;
- steps_agent.py: Approved (dispatch), AgentRunning (results, retries);
- steps_pr.py: PROpen, ReviewRequired (the diff policy, remediation, merged or closed);
- steps_endings.py: a human's reject or stop, a configuration the run no longer fits;
- finalize.py: a deleted run.

A step is `(deps, run) -> Transition | Stay` (outcome.py) over a read-only
view of the run (view.py); commit.py records a Transition. The judgements are
foundry.domain's pure functions. The I/O a step needs is in agentio.py (the
agent provider and the policy gate), commentio.py (one ticket comment per
purpose), prtruth.py (the PR as GitHub has it, if it is Foundry's) and
feedback.py (what failed, for a remediation); jobinput.py and timing.py are
pure, passcache.py shares reads within one pass.
"""
