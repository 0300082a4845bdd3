"""The `foundry` command. Each command group lives in its own module; this file
only assembles them so `foundry --help` lists everything."""

from __future__ import annotations

import importlib

import click

from foundry import __version__

# (module, attribute) of each top-level command; imported lazily so that
# `foundry --help` stays fast and one broken optional dependency cannot take
# down unrelated commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("foundry.cli.db", "db"),
    "agent": ("foundry.cli.agent", "agent"),
    "dev": ("foundry.cli.dev", "dev"),
    "bridge": ("foundry.cli.bridge", "bridge"),
    "operator": ("foundry.cli.operator", "operator"),
    "runs": ("foundry.cli.runs", "runs"),
    "approve": ("foundry.cli.decisions", "approve"),
    "reject": ("foundry.cli.decisions", "reject"),
    "stop": ("foundry.cli.decisions", "stop"),
    "replan": ("foundry.cli.decisions", "replan"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="foundry")
def cli() -> None:
    """Foundry turns a tracker ticket into a reviewed pull request, safely.

    One active run per issue, however many webhooks arrive.
    """


@cli.command()
def version() -> None:
    """Print Foundry's version."""
    click.echo(__version__)


def main() -> None:
    cli(prog_name="foundry")


if __name__ == "__main__":
    main()
