"""Clients for the outside services: Linear (GraphQL) and GitHub (REST), plus
the hidden markers that make Foundry's comments write-once."""

from foundry.connectors.marked_comments import PURPOSES, marker, post_once
from foundry.connectors.errors import (
    BadResponse, ConnectFailed, ConnectorError, NetworkError, NotFound, RateLimited, ServerError, Timeout, Unauthorized,
)
from foundry.connectors.github import GitHubClient
from foundry.connectors.linear import LinearClient, LinearComment, LinearIssue, WorkflowState
from foundry.connectors.retry import RetryPolicy

__all__ = [
    "PURPOSES", "BadResponse", "ConnectFailed", "ConnectorError", "GitHubClient", "LinearClient", "LinearComment",
    "LinearIssue", "NetworkError", "NotFound", "RateLimited", "RetryPolicy", "ServerError", "Timeout",
    "Unauthorized", "WorkflowState", "marker", "post_once",
]
