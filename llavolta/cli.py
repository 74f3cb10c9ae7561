"""The LLaVolta command line: every job of the toolkit is a command, with the options of its `python -m` form.

llavolta quickstart                                   # synthetic data to a table of two trained schemes
llavolta train configs/video/finetune.yaml scheme=two
llavolta <command> --help                             # a command's options
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from image_llavolta.commands import ArgumentParser, Command, Job, configure, run_parsed


@dataclass(frozen=True)
class Entry:
    """A command: where its job is (`module`, which has `add_arguments` / `run`, or `module:NAME`, a `Job` or
    `Jobs` of `image_llavolta.commands`) and its one-line help."""

    target: str
    help: str

    def load(self) -> Command:
        """Import the job (only now: most jobs load torch)."""
        name, _, attribute = self.target.partition(":")
        module = importlib.import_module(name)
        if attribute:
            return getattr(module, attribute)
        return Job(module.__doc__ or self.help, module.add_arguments, module.run)


COMMANDS = {
    "extract-frames": Entry("data_prep.cli:EXTRACT_FRAMES", "sample T frames of every video into frame directories"),
    "convert-qa": Entry("data_prep.cli:CONVERT_QA", "MSVD/MSRVTT/ActivityNet-QA to the unified QA JSONL"),
    "validate": Entry("data_prep.cli:VALIDATE", "check LLaVA / Video-LLaVA instruction JSON"),
    "make-synthetic": Entry("data_prep.cli:MAKE_SYNTHETIC", "generate the synthetic moving-shapes video QA data set"),
    "convert": Entry("video_llavolta.convert", "released Video-LLaVA and its LanguageBind towers to a HF checkpoint"),
    "train": Entry("llavolta.train", "staged training of a run config (its model family picks the trainer)"),
    "infer": Entry("video_llavolta.qa_inference:JOBS", "video QA inference on a QA JSONL (`infer merge`: join shards)"),
    "merge": Entry("video_llavolta.qa_inference:MERGE", "merge the rank shards of a video QA inference run"),
    "judge": Entry("video_llavolta.judge.cli", "judge video QA predictions into accuracy and score"),
    "evaluate": Entry("image_llavolta.evaluate:JOBS", "image benchmarks: answer and score (and `merge`, `score`)"),
    "probe": Entry("video_llavolta.probe", "the redundancy probe: test-time pooling sweep and attention profile"),
    "efficiency": Entry("llavolta.efficiency", "FLOPs, memory and time per compression setting, any model family"),
    "quickstart": Entry("llavolta.quickstart", "synthetic data to a trained baseline and staged scheme, in one table"),
}


def _version() -> str:
    try:
        return version("llavolta")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """`llavolta <command> [options]`: parse, run the command's job, return its exit code (2: bad input)."""
    # Only the chosen command's module is imported: `llavolta --help` and the data jobs start without torch, and
    # the data jobs' worker processes, which re-import the console script, start fast.
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(prog="llavolta", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llavolta {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True, title="commands")
    for name, entry in COMMANDS.items():
        if argv[:1] != [name]:
            sub.add_parser(name, help=entry.help)
            continue
        command = entry.load()
        argv = [
            name,
            *configure(sub.add_parser(name, help=entry.help, description=command.description), command, argv[1:]),
        ]
    return run_parsed(parser.parse_job_args(argv))
