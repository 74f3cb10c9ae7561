"""One rank of a distributed test run, as a launcher (`torchrun`) starts it.

    python tests/dist_worker.py train video|image CONFIG.yaml [key=value ...] [--resume auto]
    python tests/dist_worker.py qa [qa_inference options ...]
    python tests/dist_worker.py hang TIMEOUT_SECONDS

KILL_RANK, KILL_AT: that rank SIGKILLs itself at the end of optimizer step KILL_AT (train) or after writing
KILL_AT answer batches (qa), as a preempted node dies: no exception, no cleanup. QA_LOG: each rank appends the
question ids it generates answers for to QA_LOG.rank<R>.
"""

import os
import signal
import sys

RANK = int(os.environ.get("RANK", 0))
KILL_AT = int(os.environ["KILL_AT"]) if int(os.environ.get("KILL_RANK", -1)) == RANK else None


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def train(family, argv):
    # imported here: the hang job needs torch alone, and starts in seconds
    from transformers import TrainerCallback

    import image_llavolta.train as image
    import video_llavolta.train as video
    from image_llavolta.train_config import load_config

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == KILL_AT:
                die()

    resume = None
    if "--resume" in argv:
        i = argv.index("--resume")
        resume, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    config = load_config(argv[0], argv[1:])
    {"image": image, "video": video}[family].train(config, resume, callbacks=[KillAt()] if KILL_AT else [])


def qa(argv):
    import video_llavolta.qa_inference as qa_inference

    loop, batches = qa_inference.answer_questions, []

    def answer_questions(questions, path, settings, run, encode, answer, *args, **kwargs):
        pending = []

        def encoded(question):
            pending.append(question["question_id"])
            return encode(question)

        def answered(samples):
            if KILL_AT is not None and len(batches) == KILL_AT:
                die()
            batches.append(list(pending))
            with open(f"{os.environ['QA_LOG']}.rank{RANK}", "a") as log:
                log.writelines(f"{q}\n" for q in pending)
            pending.clear()
            return answer(samples)

        return loop(questions, path, settings, run, encoded, answered, *args, **kwargs)

    qa_inference.answer_questions = answer_questions
    return qa_inference.main(argv)


def hang(timeout):
    """Rank 1 never joins the all-reduce (stuck, not dead: its sockets stay open); rank 0 waits in it."""
    import time

    import torch

    from image_llavolta.distributed import init_process_group

    assert init_process_group(int(timeout))
    if RANK == 1:
        time.sleep(3600)
    started = time.perf_counter()
    try:
        torch.distributed.all_reduce(torch.ones(1))
    finally:
        print(f"rank {RANK} left the all-reduce after {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    job, *rest = sys.argv[1:]
    sys.exit({"train": lambda: train(rest[0], rest[1:]), "qa": lambda: qa(rest), "hang": lambda: hang(*rest)}[job]())
