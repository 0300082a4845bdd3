"""Risk areas from ticket text and labels, and from changed file paths."""

from __future__ import annotations

import pytest
import yaml

from foundry.config import parse_config
from foundry.domain.risk import areas_from_paths, areas_from_ticket, areas_in_text


@pytest.mark.parametrize("text, areas", [
    ("Users cannot log in after the OAuth change", ("auth",)),
    ("Refunds are charged twice via Stripe", ("payments",)),
    ("Export must not include the phone number", ("pii",)),
    ("Add a migration to add column status", ("migrations",)),
    ("Bump the Terraform module for the load balancer", ("infra",)),
    ("Password reset email shows the invoice", ("auth", "payments")),
    ("Make the button blue", ()),
    ("The author of the post is in charge of the catalogue", ()),  # no 'auth' or 'charge' false positives
])
def test_areas_in_text(text, areas):
    assert areas_in_text(text) == areas


def test_ticket_labels_add_areas_and_order_is_stable():
    ticket = {"title": "Tidy up", "description": "nothing risky", "labels": ["risk:pii", "auth", "bug"]}
    assert areas_from_ticket(ticket) == ("auth", "pii")


@pytest.mark.parametrize("paths, areas", [
    (["src/auth/session.py"], ("auth",)),
    (["app/billing/invoice.py"], ("payments",)),
    (["migrations/versions/0003_add.py"], ("migrations",)),
    (["db/schema.sql"], ("migrations",)),
    (["infra/main.tf", "Dockerfile"], ("infra",)),
    ([".github/workflows/ci.yml"], ("infra",)),
    (["src/ui/Button.tsx", "README.md", "docs/authors.md"], ()),
])
def test_areas_from_paths(paths, areas):
    assert areas_from_paths(paths) == areas


def test_config_extends_words_and_paths():
    cfg = parse_config(yaml.safe_load("policy: {risk_keywords: {payments: [ledger]}, risk_paths: {pii: ['**/customers/**']}}"))
    assert areas_in_text("the ledger is off") == ()
    assert areas_in_text("the ledger is off", cfg) == ("payments",)
    assert areas_from_paths(["app/customers/model.py"], cfg) == ("pii",)
    assert areas_from_paths(["app/customers/model.py"]) == ()
