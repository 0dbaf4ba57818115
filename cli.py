"""The command line of the YOLO backend: one argparse tree, each command's code in `commands/`.

Examples: `EXAMPLES` (also at the end of `python cli.py --help`).

The environment is read once into the server's `core.settings.Settings`: its `LABEL_STUDIO_URL` and
`LABEL_STUDIO_API_KEY` are the defaults of `--ls-url` and `--ls-api-key` (the key may be a personal
access token or a legacy token), the rest (MODEL_ROOT, DEVICE, ...) is used as the server uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from commands import COMMANDS
from core.settings import Settings

EXAMPLES = """\
    python cli.py predict --project 1 --tasks 1,2,3        # predict in this process, upload (SDK)
    python cli.py --project 1 --all-tasks                  # the same: `predict` is the default command
    python cli.py --project 1 --tasks 1,2 --dry-run predictions.json   # write, do not upload
    python cli.py train --project 1 [--control label]      # train, evaluate, promote; follow the job
    python cli.py evaluate --project 1 [--model-path x.pt] # how good a model is, without training
    python cli.py models --project 1 [--use VERSION|base]  # trained versions; switch (roll back)
    python cli.py export-int8 --project 1 [--limit 64]     # INT8 export, calibrated on the project
"""


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """`cli.py COMMAND ...`: one subparser per module of `commands/`, defaults from `settings`."""
    parser = argparse.ArgumentParser(
        prog="cli.py",
        description="Run the YOLO backend on Label Studio projects: predict, train, evaluate, switch models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(sub, settings)
        sub.set_defaults(command_module=command, command_parser=sub)
    return parser


def with_default_command(argv: list[str]) -> list[str]:
    """The older form `cli.py --project 1 --tasks 1,2` (options first, no command) means `predict`."""
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        return ["predict", *argv]
    return argv


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Parse the command line and run its command; the exit status (0 ok, 1 some failed, 2 none ran)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = settings or Settings()
    args = build_parser(settings).parse_args(with_default_command(argv))
    check = getattr(args.command_module, "check", None)
    if check is not None:
        check(args, args.command_parser)
    return args.command_module.run(args, settings)


if __name__ == "__main__":
    os.environ.setdefault("YOLO_VERBOSE", "false")
    sys.exit(main())
