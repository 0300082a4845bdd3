"""Foundry: tracker tickets to reviewed pull requests, one active run per issue."""

__version__ = "0.1.0"
