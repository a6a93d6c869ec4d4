"""``neuroauth``: enroll owners, train and evaluate models, replay recordings, benchmark the engine.

Each package owns its commands (a ``register`` function adding parsers whose
``run`` default is the handler); this module puts them together, runs the one
asked for, and turns the errors a person can act on into one line and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from .errors import NeuroAuthError

#: The modules whose ``register(subparsers)`` adds commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "neuroauth.daemon.enroll_command",  # enroll
    "neuroauth.enroll.commands",  # templates
    "neuroauth.training.commands",  # train, evaluate, crossval, cohort, report
    "neuroauth.training.study.commands",  # embedders, study; learned embedders for train, report
    "neuroauth.daemon.replay",  # replay
    "neuroauth.daemon.watch",  # watch
    "neuroauth.demo",  # demo
    "neuroauth.bench",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroauth", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class Stopped(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that every atomic write removes its temporary file."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped


# what a command stopped half-way picks up when it is run again
RESUMING = {
    "train": "training resumes from <out>.partial and <out>.embedder.partial when run again",
    "crossval": "with --keep-checkpoints, a denoiser's training resumes and finished ones are reused",
    "embedders": "with --keep-checkpoints, its finished fits are reused and the training of a fit "
    "continues when run again",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if in_main_thread else None
    try:
        return args.run(args)
    except NeuroAuthError as exc:
        print(f"neuroauth {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"neuroauth {args.command}: {exc}", file=sys.stderr)
        return 2
    except (Stopped, KeyboardInterrupt) as exc:
        by = "SIGTERM" if isinstance(exc, Stopped) else "Ctrl-C"
        hint = f" ({RESUMING[args.command]})" if args.command in RESUMING else ""
        print(
            f"neuroauth {args.command}: stopped by {by} before finishing; every file it was writing is "
            f"as it was before{hint}",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Stopped) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
