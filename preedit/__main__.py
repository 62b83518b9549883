"""`python -m preedit` is the same as the `preedit` console script."""

from preedit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
