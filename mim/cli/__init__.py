"""`mim <command>`: `main` builds the parser from the command modules (`stages`, `runs`, `bench`, `services`)."""

from mim.cli.main import main

__all__ = ["main"]
