"""`python -m data_prep <job>` (and `llavolta <job>`): options, summary tables and exit codes of the four jobs.

The work is in the modules (`extract`, `qa`, `validate`, `synthetic`); each job here is its options
(`add_<job>_arguments`), the function that runs it (`run_<job>`: 0 done, 1 some input failed, 2 bad input) and
their `Job`.
"""

from __future__ import annotations

import argparse

import data_prep
from data_prep import extract, qa, synthetic, validate
from image_llavolta.commands import Job, Jobs, main_for
from image_llavolta.tables import format_table


def print_table(title: str, rows: list[tuple[str, object]]) -> None:
    """Print (label, value) rows as a two-column table under a title."""
    print("\n" + format_table(rows, title=title))


def run_extract_frames(args: argparse.Namespace) -> int:
    """Run extract-frames; non-zero when a video failed, unless --allow-failures."""
    result = extract.extract_frames(
        args.source,
        args.out,
        num_frames=args.num_frames,
        fmt=args.format,
        quality=args.quality,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print_table("extract-frames", result.summary_rows())
    for failure in result.failed[:10]:
        print(f"  FAILED {failure['video_id']}: {failure['error']}: {failure['reason']}")
    if len(result.failed) > 10:
        print(f"  ... and {len(result.failed) - 10} more in failures.jsonl")
    return 1 if result.failed and not args.allow_failures else 0


def run_convert_qa(args: argparse.Namespace) -> int:
    """Run convert-qa; non-zero on any problem when --strict."""
    result, out_path, report_path = qa.convert_qa(args.benchmark, args.qa_dir, args.video_root, args.out)
    print_table(f"convert-qa {args.benchmark}", result.summary_rows() + [("output", out_path), ("report", report_path)])
    return 1 if args.strict and result.num_problems else 0


def run_validate(args: argparse.Namespace) -> int:
    """Run validate; non-zero when a record is bad, unless --allow-bad."""
    result = validate.validate_file(
        args.data,
        image_root=args.image_root,
        video_root=args.video_root,
        frames_root=args.frames_root,
        bad_out=args.bad_out,
    )
    rows = result.summary_rows() + ([("bad records", args.bad_out)] if args.bad_out else [])
    print_table(f"validate {args.data}", rows)
    for bad in result.bad[:5]:
        print(f"  BAD #{bad['index']} id={bad['id']!r}: " + "; ".join(r["detail"] for r in bad["reasons"]))
    return 1 if result.bad and not args.allow_bad else 0


def run_make_synthetic(args: argparse.Namespace) -> int:
    """Run make-synthetic; non-zero when a video could not be written."""
    result = synthetic.make_synthetic(
        args.out,
        num_train=args.num_train,
        num_test=args.num_test,
        seed=args.seed,
        workers=args.workers,
        codec=args.codec,
        overwrite=args.overwrite,
    )
    print_table(f"make-synthetic {args.out}", result.summary_rows())
    return 1 if result.failed else 0


def add_extract_frames_arguments(p: argparse.ArgumentParser) -> None:
    """extract-frames' options."""
    p.add_argument("source", help="video folder (searched recursively), list file (one path per line) or one video")
    p.add_argument("--out", required=True, help="output folder (frame dirs, manifest.jsonl, failures.jsonl)")
    p.add_argument("--num-frames", type=int, default=8, help="frames per video (default: 8)")
    p.add_argument("--format", choices=("jpg", "npy"), default="jpg", help="frame file format (default: jpg)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even when some videos failed")
    p.add_argument("--overwrite", action="store_true", help="redo every video instead of resuming")


def add_convert_qa_arguments(p: argparse.ArgumentParser) -> None:
    """convert-qa's options."""
    p.add_argument(
        "--benchmark",
        required=True,
        metavar="NAME|SPEC",
        help="a video QA spec: a shipped one's name (msvd, msrvtt, activitynet) or a spec YAML's path",
    )
    p.add_argument("--qa-dir", required=True, help="folder with the spec's question and answer files")
    p.add_argument("--video-root", required=True, help="folder with the benchmark's videos")
    p.add_argument("--out", required=True, help="output folder: <name>_qa.jsonl and <name>_qa_report.json")
    p.add_argument("--strict", action="store_true", help="exit non-zero on any problem (identical duplicates included)")


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    """validate's options."""
    p.add_argument("data", help="instruction JSON file (a list of records)")
    p.add_argument("--image-root", help="folder image paths are relative to (default: the JSON file's folder)")
    p.add_argument("--video-root", help="folder video paths are relative to (default: the JSON file's folder)")
    p.add_argument("--frames-root", help="extract-frames output; a video's frame dir counts as the video")
    p.add_argument("--bad-out", help="write the bad records with their reasons to this JSONL file")
    p.add_argument("--allow-bad", action="store_true", help="exit 0 even when some records are bad")


def add_make_synthetic_arguments(p: argparse.ArgumentParser) -> None:
    """make-synthetic's options."""
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-train", type=int, default=1000, help="training videos (default: 1000)")
    p.add_argument("--num-test", type=int, default=200, help="test videos (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument(
        "--codec",
        choices=sorted(synthetic.CODECS),
        default="mpeg4",
        help="video codec (default: mpeg4, the faster one)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace videos made with other settings")


EXTRACT_FRAMES = Job(
    extract.__doc__,
    add_extract_frames_arguments,
    run_extract_frames,
    "sample T frames of every video into frame directories",
)
CONVERT_QA = Job(
    qa.__doc__, add_convert_qa_arguments, run_convert_qa, "MSVD/MSRVTT/ActivityNet-QA to the unified QA JSONL"
)
VALIDATE = Job(validate.__doc__, add_validate_arguments, run_validate, "check LLaVA / Video-LLaVA instruction JSON")
MAKE_SYNTHETIC = Job(
    synthetic.__doc__,
    add_make_synthetic_arguments,
    run_make_synthetic,
    "generate the synthetic moving-shapes video QA data set",
)
JOBS = Jobs(
    data_prep.__doc__,
    {
        "extract-frames": EXTRACT_FRAMES,
        "convert-qa": CONVERT_QA,
        "validate": VALIDATE,
        "make-synthetic": MAKE_SYNTHETIC,
    },
)
main = main_for(JOBS, "python -m data_prep")
