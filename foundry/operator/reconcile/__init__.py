"""Reconcile logic: one plain function per phase (no kopf), driven by loop.reconcile_run."""
