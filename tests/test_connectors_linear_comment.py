"""LinearClient.get_comment and viewer_id against the local Linear (Linear's `comment(id:)` and `viewer`)."""

from __future__ import annotations

import pytest

from foundry.connectors.errors import NotFound
from foundry.connectors.linear import LinearClient
from foundry.dev.linear_server import LinearServer


def test_a_comment_is_read_back_with_its_issue_author_and_time():
    with LinearServer() as linear:
        linear.add_team("ACME")
        alice = linear.add_user("Alice", "alice@example.com")
        issue = linear.create_issue("ACME", "t", "d")
        said = linear.add_comment(issue, "/foundry approve ship it", user_id=alice)
        with LinearClient(linear.api_key, url=linear.graphql_url) as client:
            got = client.get_comment(said)
            assert (got.id, got.issue_id, got.user_id, got.user_email, got.body) == (
                said, issue, alice, "alice@example.com", "/foundry approve ship it")
            assert got.created_at.endswith("Z")
            with pytest.raises(NotFound):
                client.get_comment("no-such-comment")
            # Foundry's own user is the API key's, not the comment's author.
            assert client.viewer_id() == linear.bot != alice
