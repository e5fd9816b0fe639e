"""`python -m creditgym ...` runs the command line."""

from creditgym.cli import app

if __name__ == "__main__":
    app()
