"""``python -m gatewright ...``: the CLI (how the control plane starts build jobs with its own Python)."""

from gatewright.cli import main

main()
