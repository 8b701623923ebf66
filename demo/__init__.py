"""The end-to-end demo on a built-in default (a harness: not installed): ``python -m demo`` (just demo)."""
