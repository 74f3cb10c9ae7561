"""`python -m data_prep <sub-command>`: argument parsing, summary tables and exit codes; the work is in the modules."""

from __future__ import annotations

import argparse
import sys

import data_prep
from data_prep import extract, qa, synthetic, validate


def print_table(title: str, rows: list[tuple[str, object]]) -> None:
    """Print (label, value) rows as a two-column table under a title."""
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 12))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def _extract_frames(args: argparse.Namespace) -> int:
    """Run extract-frames; non-zero when a video failed, unless --allow-failures."""
    result = extract.extract_frames(
        args.source, args.out, num_frames=args.num_frames, fmt=args.format, quality=args.quality,
        workers=args.workers, overwrite=args.overwrite,
    )
    print_table("extract-frames", result.summary_rows())
    for failure in result.failed[:10]:
        print(f"  FAILED {failure['video_id']}: {failure['error']}: {failure['reason']}")
    if len(result.failed) > 10:
        print(f"  ... and {len(result.failed) - 10} more in failures.jsonl")
    return 1 if result.failed and not args.allow_failures else 0


def _convert_qa(args: argparse.Namespace) -> int:
    """Run convert-qa; non-zero on any problem when --strict."""
    result, out_path, report_path = qa.convert_qa(args.benchmark, args.qa_dir, args.video_root, args.out)
    print_table(f"convert-qa {args.benchmark}", result.summary_rows() + [("output", out_path), ("report", report_path)])
    return 1 if args.strict and result.num_problems else 0


def _validate(args: argparse.Namespace) -> int:
    """Run validate; non-zero when a record is bad, unless --allow-bad."""
    result = validate.validate_file(
        args.data, image_root=args.image_root, video_root=args.video_root, frames_root=args.frames_root,
        bad_out=args.bad_out,
    )
    rows = result.summary_rows() + ([("bad records", args.bad_out)] if args.bad_out else [])
    print_table(f"validate {args.data}", rows)
    for bad in result.bad[:5]:
        print(f"  BAD #{bad['index']} id={bad['id']!r}: " + "; ".join(r["detail"] for r in bad["reasons"]))
    return 1 if result.bad and not args.allow_bad else 0


def _make_synthetic(args: argparse.Namespace) -> int:
    """Run make-synthetic; non-zero when a video could not be written."""
    result = synthetic.make_synthetic(
        args.out, num_train=args.num_train, num_test=args.num_test, seed=args.seed, workers=args.workers,
        codec=args.codec, overwrite=args.overwrite,
    )
    print_table(f"make-synthetic {args.out}", result.summary_rows())
    return 1 if result.failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its four sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep", description=data_prep.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<sub-command>")

    p = sub.add_parser("extract-frames", help="sample T frames of every video into frame directories",
                       description=extract.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="video folder (searched recursively), list file (one path per line) or one video")
    p.add_argument("--out", required=True, help="output folder (frame dirs, manifest.jsonl, failures.jsonl)")
    p.add_argument("--num-frames", type=int, default=8, help="frames per video (default: 8)")
    p.add_argument("--format", choices=("jpg", "npy"), default="jpg", help="frame file format (default: jpg)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even when some videos failed")
    p.add_argument("--overwrite", action="store_true", help="redo every video instead of resuming")
    p.set_defaults(func=_extract_frames)

    p = sub.add_parser("convert-qa", help="MSVD/MSRVTT/ActivityNet-QA to the unified QA JSONL",
                       description=qa.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", required=True, metavar="NAME|SPEC",
                   help="a video QA spec: a shipped one's name (msvd, msrvtt, activitynet) or a spec YAML's path")
    p.add_argument("--qa-dir", required=True, help="folder with the spec's question and answer files")
    p.add_argument("--video-root", required=True, help="folder with the benchmark's videos")
    p.add_argument("--out", required=True, help="output folder: <name>_qa.jsonl and <name>_qa_report.json")
    p.add_argument("--strict", action="store_true", help="exit non-zero on any problem (identical duplicates included)")
    p.set_defaults(func=_convert_qa)

    p = sub.add_parser("validate", help="check LLaVA / Video-LLaVA instruction JSON",
                       description=validate.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="instruction JSON file (a list of records)")
    p.add_argument("--image-root", help="folder image paths are relative to (default: the JSON file's folder)")
    p.add_argument("--video-root", help="folder video paths are relative to (default: the JSON file's folder)")
    p.add_argument("--frames-root", help="extract-frames output; a video's frame dir counts as the video")
    p.add_argument("--bad-out", help="write the bad records with their reasons to this JSONL file")
    p.add_argument("--allow-bad", action="store_true", help="exit 0 even when some records are bad")
    p.set_defaults(func=_validate)

    p = sub.add_parser("make-synthetic", help="generate the synthetic moving-shapes video QA data set",
                       description=synthetic.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-train", type=int, default=1000, help="training videos (default: 1000)")
    p.add_argument("--num-test", type=int, default=200, help="test videos (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--codec", choices=sorted(synthetic.CODECS), default="mpeg4",
                   help="video codec (default: mpeg4, the faster one)")
    p.add_argument("--overwrite", action="store_true", help="replace videos made with other settings")
    p.set_defaults(func=_make_synthetic)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the sub-command, return its exit code; bad input is one clear line, exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as err:  # a missing input folder, a malformed file: no traceback needed
        print(f"error: {err}", file=sys.stderr)
        return 2
