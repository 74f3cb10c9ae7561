"""The `llavolta` command line: every job as a subcommand with its `python -m` form's options, one error style."""

import importlib
import json
import re
import subprocess
import sys

import pytest
from helpers import REPO, llavolta

from image_llavolta.commands import Job, Jobs, command_main, main_for
from llavolta import cli

# Every job the toolkit has, written out here so that a command missing from the registry fails the test.
JOBS = [
    "extract-frames",
    "convert-qa",
    "validate",
    "make-synthetic",
    "convert",
    "train",
    "infer",
    "merge",
    "judge",
    "evaluate",
    "probe",
    "efficiency",
    "quickstart",
]
# Each command and the `python -m` form(s) it must equal: (module, leading arguments).
PYTHON_M = {
    "extract-frames": [("data_prep", ["extract-frames"])],
    "convert-qa": [("data_prep", ["convert-qa"])],
    "validate": [("data_prep", ["validate"])],
    "make-synthetic": [("data_prep", ["make-synthetic"])],
    "convert": [("video_llavolta.convert", [])],
    "train": [("image_llavolta.train", []), ("video_llavolta.train", [])],
    "infer": [("video_llavolta.qa_inference", [])],
    "merge": [("video_llavolta.qa_inference", ["merge"])],
    "judge": [("video_llavolta.judge", [])],
    "evaluate": [("image_llavolta.evaluate", [])],
    "probe": [("video_llavolta.probe", [])],
    "efficiency": [("image_llavolta.efficiency", [])],
    "quickstart": [("llavolta.quickstart", [])],
}


def help_text(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def python_m_main(module: str):
    """The `main` that `python -m module` runs (a package's is in its __main__)."""
    found = importlib.import_module(module)
    return (importlib.import_module(f"{module}.__main__") if hasattr(found, "__path__") else found).main


def usage(text: str, prog: str) -> str:
    """The usage paragraph without its program name, whitespace collapsed (argparse wraps it by the name's length)."""
    paragraph = text.split("\n\n", 1)[0]
    assert paragraph.startswith(f"usage: {prog} "), paragraph
    return " ".join(paragraph[len(f"usage: {prog} ") :].split())


def test_the_registry_has_every_job():
    assert list(cli.COMMANDS) == JOBS


@pytest.mark.parametrize("name", JOBS)
def test_each_command_takes_the_options_of_its_python_m_form(name, capsys):
    ours = help_text(cli.main, [name], capsys)
    for module, leading in PYTHON_M[name]:
        theirs = help_text(python_m_main(module), leading, capsys)
        prog = " ".join(["python -m", module, *leading])
        assert usage(ours, f"llavolta {name}") == usage(theirs, prog)


def test_help_and_version_through_the_console_script():
    shown = llavolta("--help")
    assert shown.returncode == 0
    listed = re.findall(r"^ {4}([a-z-]+)", shown.stdout.split("\ncommands:\n")[1], re.M)
    assert listed == JOBS
    assert llavolta("--version").stdout.startswith("llavolta ")
    module_form = subprocess.run([sys.executable, "-m", "llavolta", "--help"], cwd=REPO, capture_output=True, text=True)
    assert module_form.stdout == shown.stdout


def test_help_and_data_jobs_load_no_torch():
    code = (
        "import sys, contextlib, io\nfrom llavolta.cli import main\n"
        "for argv in (['--help'], ['make-synthetic', '--help'], ['extract-frames', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_data_jobs_end_to_end_through_the_console_script(tmp_path):
    made = llavolta("make-synthetic", "--out", tmp_path / "synthetic", "--num-train", 3, "--num-test", 1, "--seed", 5)
    assert made.returncode == 0, made.stderr
    assert re.search(r"^train videos +3$", made.stdout, re.M)  # the summary table
    reference = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep",
            "make-synthetic",
            "--out",
            tmp_path / "ref",
            "--num-train",
            "3",
            "--num-test",
            "1",
            "--seed",
            "5",
        ],
        cwd=REPO,
        capture_output=True,
    )
    assert reference.returncode == 0
    for name in ("train.json", "test_qa.jsonl", "metadata.jsonl"):  # the same job as the python -m form
        assert (tmp_path / "synthetic" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()

    frames = llavolta(
        "extract-frames",
        tmp_path / "synthetic" / "videos",
        "--out",
        tmp_path / "frames",
        "--format",
        "npy",
        "--num-frames",
        4,
    )
    assert frames.returncode == 0, frames.stderr
    manifest = [json.loads(line) for line in (tmp_path / "frames" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["video_id"] for m in manifest) == ["test_00000", "train_00000", "train_00001", "train_00002"]
    for video in manifest:
        assert len(list((tmp_path / "frames" / video["video_id"]).glob("*.npy"))) == 4

    checked = llavolta(
        "validate",
        tmp_path / "synthetic" / "train.json",
        "--video-root",
        tmp_path / "synthetic" / "videos",
        "--frames-root",
        tmp_path / "frames",
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "args, prog, names",
    [
        (["validate", "{tmp}/nope.json"], "llavolta validate", "nope.json"),  # the job's own error
        (["train", "{tmp}/nope.yaml"], "llavolta train", "nope.yaml"),
        (["extract-frames", "--out", "{tmp}/o"], "llavolta extract-frames", "source"),  # argparse's
        (
            ["evaluate", "score", "--benchmark", "b", "--data", "d", "--out", "o", "--bogus"],
            "llavolta evaluate score",
            "unrecognized arguments: --bogus",
        ),
        (["trian"], "llavolta", "'trian'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, prog, names, tmp_path):
    done = llavolta(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"{prog}: error: ") and names in done.stderr


def write_config(config_path, **model) -> str:
    """A run config whose data files exist, so that it fails on the model section only."""
    folder = config_path.parent
    (folder / "train.json").write_text(
        json.dumps(
            [{"id": "t", "conversations": [{"from": "human", "value": "hello ?"}, {"from": "gpt", "value": "hi ."}]}]
        )
    )
    config_path.write_text(
        json.dumps({"output_dir": str(folder / "run"), "model": model, "data": {"train": [str(folder / "train.json")]}})
    )
    return str(config_path)


def test_train_needs_a_family_it_knows(tmp_path, capsys):
    unnamed = write_config(tmp_path / "unnamed.yaml", tiny={"layers": 2})
    assert cli.main(["train", unnamed]) == 2
    err = capsys.readouterr().err
    assert (
        "model.family" in err
        and "['llava', 'llava_onevision', 'qwen2_5_vl', 'qwen2_vl', 'video_llava']" in err
        and unnamed in err
    )
    other = write_config(tmp_path / "other.yaml", tiny={"layers": 2}, family="qwen3_vl")
    assert cli.main(["train", other]) == 2
    assert "trains a 'qwen3_vl' model" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_family_must_agree_with_the_checkpoint(tmp_path, capsys):
    from image_llavolta.configs import tiny_llava_config

    tiny_llava_config().save_pretrained(tmp_path / "ckpt")  # a LLaVA checkpoint's config.json
    config = write_config(tmp_path / "run.yaml", path=str(tmp_path / "ckpt"), family="video_llava")
    assert cli.main(["train", config]) == 2
    assert (
        f"model.family is 'video_llava', but {tmp_path / 'ckpt'} holds a 'llava' checkpoint" in capsys.readouterr().err
    )


def test_each_trainer_refuses_another_familys_run(tmp_path, capsys):
    import image_llavolta.train
    import video_llavolta.train

    video = write_config(tmp_path / "video.yaml", tiny={"layers": 2}, family="video_llava")
    assert image_llavolta.train.main([video]) == 2
    assert "this run trains a 'video_llava' model, not 'llava'" in capsys.readouterr().err
    image = write_config(tmp_path / "image.yaml", tiny={"layers": 2}, family="llava")
    assert video_llavolta.train.main([image]) == 2
    assert "this run trains a 'llava' model, not 'video_llava'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# image_llavolta.commands with toy jobs


def toy_jobs(calls: list) -> Jobs:
    def add_run(p):
        p.add_argument("--n", type=int, required=True)

    def add_merge(p):
        p.add_argument("--parts", type=int, default=2)

    def run(args):
        calls.append(("run", args.n))
        if args.n < 0:
            raise ValueError(f"n must be >= 0, got {args.n}")
        return 0

    def merge(args):
        calls.append(("merge", args.parts))
        raise FileNotFoundError("no shard at out.rank0-of-2.jsonl")

    return Jobs(
        "Toy: a run and a merge.",
        {"run": Job("Run it.", add_run, run), "merge": Job("Merge it.", add_merge, merge)},
        default="run",
    )


def test_jobs_dispatch_by_their_first_argument_and_default_to_the_default_job(capsys):
    calls = []
    main = main_for(toy_jobs(calls), "toy")
    assert main(["--n", "3"]) == 0 and main(["run", "--n", "4"]) == 0
    assert main(["merge", "--parts", "5"]) == 2  # its FileNotFoundError: bad input
    assert calls == [("run", 3), ("run", 4), ("merge", 5)]
    assert capsys.readouterr().err == "toy merge: error: no shard at out.rank0-of-2.jsonl\n"
    assert main(["--n", "-1"]) == 2
    assert capsys.readouterr().err == "toy run: error: n must be >= 0, got -1\n"


def test_the_default_jobs_help_lists_the_others(capsys):
    text = help_text(main_for(toy_jobs([]), "toy"), [], capsys)
    assert text.startswith("usage: toy run [-h] --n N\n")
    assert text.rstrip().endswith("other jobs (`<job> --help` for theirs):\n  merge     Merge it")


def test_usage_errors_are_one_line(capsys):
    main = command_main(lambda p: p.add_argument("--n", type=int), lambda args: 0, "one", "One job.")
    with pytest.raises(SystemExit) as exit_info:
        main(["--n", "x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "one: error: argument --n: invalid int value: 'x' (see one --help)\n"


def test_a_traceback_on_request(monkeypatch):
    monkeypatch.setenv("LLAVOLTA_TRACEBACK", "1")
    with pytest.raises(ValueError, match="n must be >= 0"):
        main_for(toy_jobs([]), "toy")(["--n", "-1"])


def test_a_job_that_returns_nothing_exits_0():
    assert command_main(lambda p: None, lambda args: None, "quiet", None)([]) == 0


def test_jobs_refuse_a_default_they_do_not_hold():
    with pytest.raises(ValueError, match="default job 'score' is not one of"):
        Jobs("x", {"run": Job("Run.", lambda p: None, lambda a: 0)}, default="score")


def test_a_family_is_a_model_type_name(tmp_path):
    from image_llavolta.train_config import load_config

    config = write_config(tmp_path / "run.yaml", tiny={"layers": 2}, family=3)
    with pytest.raises(ValueError, match=r"run.yaml: model.family: expected a model type such as 'llava', got 3"):
        load_config(config)


def test_the_quickstart_config_trains_with_the_video_trainer(monkeypatch):
    from image_llavolta.train import run_family
    from image_llavolta.train_config import load_config
    from llavolta.train import TRAINERS

    monkeypatch.chdir(REPO)
    assert TRAINERS[run_family(load_config("configs/video/quickstart.yaml"))] == "video_llavolta.train"
