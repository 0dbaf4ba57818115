"""The commands of `cli.py`, one module each (`predict`, `train`, `evaluate`, `models`, `export-int8`),
beside `server/` at the top layer. Each module has `NAME`, `HELP`, `add_arguments(parser, settings)`,
`check(args, parser)` (optional: checks argparse cannot make) and `run(args, settings) -> exit status`; `COMMANDS` lists them in help order."""

from commands import evaluate, export_int8, models, predict, train

COMMANDS = (predict, train, evaluate, models, export_int8)

__all__ = ["COMMANDS"]
