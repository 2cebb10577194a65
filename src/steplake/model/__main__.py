"""``python -m steplake.model [serve] --port N`` (``serve`` is the default command)."""

from __future__ import annotations

import sys

from .cli import model


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*model.commands, "--help", "-h"):
        args.insert(0, "serve")
    model.main(args=args, prog_name="python -m steplake.model")


if __name__ == "__main__":
    main()
