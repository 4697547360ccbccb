"""``python -m gradcheck_cli``."""

from gradcheck_cli.cli import entry

# Guarded: a spawned worker imports the main module again (as __mp_main__) and must not run the CLI.
if __name__ == "__main__":
    entry()
