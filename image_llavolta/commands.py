"""The one shape of a command line: every `python -m` form and every `llavolta` subcommand is built from jobs.

A job module exposes its options and the function that does the job, and gets its `python -m` form from here:

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # 0 done; 1 done, with failures recorded in the output
    main = command_main(add_arguments, run, "python -m package.module", __doc__)

A module with several jobs (image evaluation: run, merge, score) lists them as `Jobs`: the first argument names
the job, and the `default` job runs when it names none, so `python -m image_llavolta.evaluate --benchmark ...`
and `python -m image_llavolta.evaluate merge ...` are both that module's command line (`--help` alone is the
default job's, listing the others).

Bad input is one line on stderr, `<prog>: error: <what, naming the file, sample or field>`, and exit code 2,
without a traceback: an unknown or missing option, or an OSError / ValueError the job raises (a missing file, a
malformed config). Set LLAVOLTA_TRACEBACK=1 to see the traceback of such an error instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TRACEBACK_ENV = "LLAVOLTA_TRACEBACK"


@dataclass(frozen=True)
class Job:
    """One job: what it does, its options, the function that runs it and its one-line help (default: the
    description's first line)."""

    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    summary: str | None = None

    @property
    def help(self) -> str:
        """The one-line help."""
        return self.summary or first_line(self.description)


@dataclass(frozen=True)
class Jobs:
    """Several jobs under one command line, named by its first argument; `default` runs when it names none."""

    description: str
    jobs: dict[str, Job]
    default: str | None = None

    def __post_init__(self):
        if self.default is not None and self.default not in self.jobs:
            raise ValueError(f"default job {self.default!r} is not one of {sorted(self.jobs)}")


Command = Job | Jobs


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Docstrings keep their layout; options up to 30 characters long keep their help on their own line."""

    def __init__(self, prog: str, **kwargs):
        super().__init__(prog, max_help_position=32, **kwargs)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with a usage error reported as one line and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """Print `<prog>: error: <message>` and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_job_args(self, argv: Sequence[str]) -> argparse.Namespace:
        """`parse_args`, with arguments nobody takes reported by the job's parser rather than the top one."""
        args, extra = self.parse_known_args(argv)
        if extra:
            ArgumentParser(prog=getattr(args, "_prog", self.prog)).error(f"unrecognized arguments: {' '.join(extra)}")
        return args


def first_line(text: str | None) -> str:
    """A docstring's first line, without its full stop."""
    return (text or "").strip().split("\n", 1)[0].rstrip(".")


def configure(parser: argparse.ArgumentParser, command: Command, argv: Sequence[str]) -> list[str]:
    """Give `parser` the command's options (a sub-parser per job of `Jobs`); returns `argv`, a default job named."""
    argv = list(argv)
    if isinstance(command, Job):
        command.add_arguments(parser)
        parser.set_defaults(_run=command.run, _prog=parser.prog)
        return argv
    sub = parser.add_subparsers(dest="_job", metavar="<job>", required=True, title="jobs")
    for name, job in command.jobs.items():
        epilog = _other_jobs(command, name) if name == command.default else None
        configure(sub.add_parser(name, help=job.help, description=job.description, epilog=epilog), job, [])
    if command.default is None or (argv and argv[0] in command.jobs):
        return argv
    return [command.default, *argv]


def _other_jobs(command: Jobs, name: str) -> str:
    """The default job's epilog: the other jobs, one line each."""
    others = [f"  {other:<8}  {job.help}" for other, job in command.jobs.items() if other != name]
    return "other jobs (`<job> --help` for theirs):\n" + "\n".join(others)


def run_parsed(args: argparse.Namespace) -> int:
    """Run the job `configure` chose; bad input (OSError, ValueError) is one line on stderr and exit code 2."""
    try:
        return int(args._run(args) or 0)
    except (OSError, ValueError) as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{args._prog}: error: {err}", file=sys.stderr)
        return 2


def main_for(command: Command, prog: str) -> Callable[[Sequence[str] | None], int]:
    """The `main(argv=None) -> int` of the `python -m` form `prog` running `command`."""

    def main(argv: Sequence[str] | None = None) -> int:
        """Parse `argv` (default: the command line) and run the job; returns the exit code (2: bad input)."""
        parser = ArgumentParser(prog=prog, description=command.description)
        argv = configure(parser, command, sys.argv[1:] if argv is None else argv)
        return run_parsed(parser.parse_job_args(argv))

    return main


def command_main(
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    prog: str,
    description: str | None,
) -> Callable[[Sequence[str] | None], int]:
    """The `main(argv=None) -> int` of a one-job `python -m` form."""
    return main_for(Job(description or "", add_arguments, run), prog)
