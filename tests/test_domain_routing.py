"""Routing: a repo: label decides, else the keyword/path catalogue with a confidence rule."""

from __future__ import annotations

import yaml

from foundry.config import parse_config
from foundry.domain.routing import route

CFG = parse_config(yaml.safe_load("""
repositories:
  - {name: web, github: acme/web, keywords: [frontend, dashboard, checkout], paths: [src/ui/]}
  - {name: api, github: acme/api, keywords: [endpoint, backend], paths: [services/]}
"""))


def t(title="", description="", labels=()):
    return {"title": title, "description": description, "labels": list(labels)}


def test_label_wins_over_text():
    r = route(t("frontend dashboard", labels=["repo:api"]), CFG)
    assert (r.repo, r.via) == ("api", "label")


def test_label_is_case_insensitive_and_accepts_linear_label_objects():
    assert route(t(labels=[{"name": "Repo:WEB"}]), CFG).repo == "web"


def test_unknown_label_routes_nowhere_and_says_which():
    r = route(t("frontend dashboard", labels=["repo:mobile"]), CFG)
    assert r.repo is None and "repo:mobile" in r.reason and "web, api" in r.reason


def test_two_labels_are_ambiguous():
    r = route(t(labels=["repo:web", "repo:api"]), CFG)
    assert r.repo is None and "several" in r.reason


def test_keywords_route_when_confident():
    r = route(t("Dashboard is slow", "The frontend dashboard chart takes 5s."), CFG)
    assert r.repo == "web" and r.via == "catalogue" and r.scores == {"web": 2, "api": 0}


def test_a_path_counts_double():
    r = route(t("Bug", "Crash in services/billing.py when called"), CFG)
    assert r.repo == "api" and r.scores["api"] == 2


def test_one_keyword_is_not_enough():
    r = route(t("Fix the endpoint"), CFG)
    assert r.repo is None and "need 2" in r.reason


def test_close_scores_are_ambiguous():
    r = route(t("frontend dashboard endpoint backend"), CFG)
    assert r.repo is None and "ambiguous" in r.reason


def test_words_match_whole_words_only():
    # "backendless" and "endpoints-x" are not the keywords
    assert route(t("backendless endpoints-x"), CFG).scores["api"] == 0


def test_no_repositories_configured():
    r = route(t("anything"), parse_config(None))
    assert r.repo is None and "no repositories" in r.reason
