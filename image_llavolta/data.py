"""Instruction-tuning data for staged training: samples, batches and a modality-grouped sampler.

Records follow the LLaVA-1.5 instruction format (one JSON list per file)::

    {"id": "000123", "image": "coco/a.jpg" | ["a.jpg", ...],     (no "image": a text-only record)
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "..."}]}

Image paths are relative to `image_root`. `InstructionDataset.MEDIA` lists the media kinds a dataset loads;
`video_llavolta.data` adds videos through it. A record with a media field the dataset does not load (a video
given to the image dataset) is an error at load, naming the file and the record: it is a wrong data file, not
a bad sample, and dropping such records one by one would train on silently reweighted data (or stop the run
part-way at the failure limit).

A sample that cannot be used (its media fails to load, or it is longer than `max_length`) comes back as a
`SampleFailure`: never replaced by another sample, never raised, so one bad file neither kills a run nor
silently reweights the data. `TrainCollator` drops failures and hands them to the trainer to log and count.

`ModalityLengthGroupedSampler` orders an epoch in global batches of one modality each (with ZeRO-3 every rank
must run the same encoder sub-modules in a step, or the parameter all-gathers deadlock) and of similar lengths
(less padding).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .configs import placeholder_tokens
from .conversation import VICUNA_V1, Template
from .inputs import collate, load_image
from .labels import IGNORE_INDEX, conversation_error, encode_conversation

MEDIA_FIELDS = ("image", "video")  # the media fields of the LLaVA / Video-LLaVA formats


@dataclass(frozen=True)
class SampleFailure:
    """A sample that could not be built: its id, the file at fault and why."""

    id: str
    path: str  # the media file (or frame directory) that failed, or the JSON file for a too-long sample
    reason: str


def _media(record: dict, kind: str) -> list[str]:
    """The record's paths of one media kind as a list (a single string is one file)."""
    value = record.get(kind, [])
    return [value] if isinstance(value, str) else list(value)


def record_error(record, tags: dict[str, str]) -> str | None:
    """Why a record is unusable by a dataset loading the media `tags` (field -> placeholder), or None."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    rid = record.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid).strip() == "":
        return f"'id' must be a non-empty string or an integer, got {rid!r}"
    problem = conversation_error(record.get("conversations"))
    if problem:
        return problem
    if unloaded := [kind for kind in MEDIA_FIELDS if kind in record and kind not in tags]:
        return (
            f"a {unloaded[0]!r} record, but this data set loads only {' and '.join(tags)} and text records "
            f"(train videos with video_llavolta.train)"
        )
    turns = record["conversations"]
    for kind, tag in tags.items():
        value = record.get(kind, [])
        paths = [value] if isinstance(value, str) else value
        if (
            not isinstance(paths, list)
            or (kind in record and not paths)
            or not all(isinstance(p, str) and p.strip() for p in paths)
        ):
            return f"{kind!r} must be a non-empty path or list of paths, got {value!r}"
        in_human = sum(turn["value"].count(tag) for turn in turns[::2])
        if in_human != len(paths):
            return f"{in_human} x {tag} in the human turns but {len(paths)} {kind} file(s)"
        if any(tag in turn["value"] for turn in turns[1::2]):
            return f"a gpt turn contains {tag}"
    return None


class InstructionDataset(Dataset):
    """LLaVA-1.5 instruction records (image and text-only) from JSON files as labelled, pixel-ready samples."""

    # record field -> (placeholder in the human turns, batch key of its pixels), in the order they are loaded
    MEDIA = {"image": ("<image>", "pixel_values")}
    placeholder_tokens = staticmethod(placeholder_tokens)  # model config -> {placeholder: (id, tokens per item)}

    def __init__(
        self,
        data_files: str | os.PathLike | Sequence[str | os.PathLike],
        tokenizer,
        config,
        image_root: str | os.PathLike | None = None,
        max_length: int = 2048,
        template: Template = VICUNA_V1,
        flip_prob: float = 0.0,
        seed: int = 0,
    ):
        if isinstance(data_files, (str, os.PathLike)):
            data_files = [data_files]
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.tokenizer, self.config, self.template = tokenizer, config, template
        self.image_root = os.fspath(image_root) if image_root is not None else ""
        self.max_length, self.flip_prob, self.seed, self.epoch = max_length, flip_prob, seed, 0
        self.placeholders = self.placeholder_tokens(config)
        self.files = [os.fspath(f) for f in data_files]
        self.records: list[dict] = []
        self.sources: list[int] = []  # index into self.files of each record, for error messages
        for file_index, path in enumerate(self.files):
            records = self._read(path)
            self.records += records
            self.sources += [file_index] * len(records)
        self._lengths: list[int] | None = None

    def _read(self, path: str) -> list[dict]:
        """The records of one JSON file, each checked for structure; errors name the file and the record."""
        try:
            with open(path) as f:
                records = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read instruction data ({err})") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        tags = {kind: tag for kind, (tag, _) in self.MEDIA.items()}
        for index, record in enumerate(records):
            problem = record_error(record, tags)
            if problem:
                rid = record.get("id") if isinstance(record, dict) else None
                raise ValueError(f"{path}: record {index} (id {rid!r}): {problem}")
        return records

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Epoch for the flip RNG (DataLoader workers see it only if they are re-created each epoch)."""
        self.epoch = epoch

    def modality(self, index: int) -> str:
        """The modality of a record: its first media kind in `MEDIA` order, else text."""
        return next((kind for kind in self.MEDIA if kind in self.records[index]), "text")

    def modalities(self) -> list[str]:
        """The modality of every record, without loading media."""
        return [self.modality(i) for i in range(len(self))]

    def lengths(self) -> list[int]:
        """Token count of every record (text plus expanded placeholders), without loading media; cached."""
        if self._lengths is None:
            self._lengths = [len(self._encode(i)[0]) for i in range(len(self))]
        return self._lengths

    def _encode(self, index: int) -> tuple[list[int], list[int]]:
        record = self.records[index]
        return encode_conversation(
            self.tokenizer, record["conversations"], self.placeholders, self.template, sample_id=str(record["id"])
        )

    def image_source(self, image: str) -> str:
        """Where an image is read from."""
        return os.path.join(self.image_root, image)

    def media_source(self, kind: str, media: str) -> str:
        """Where a record's media file of `kind` is read from (subclasses add kinds)."""
        return self.image_source(media)

    def load_media(self, kind: str, source: str) -> torch.Tensor:
        """Processed pixels of one media file of `kind` (subclasses add kinds)."""
        return load_image(source, self.config)

    def _flip(self, index: int) -> bool:
        """Whether sample `index` is mirrored this epoch: a pure function of (seed, epoch, index)."""
        if self.flip_prob == 0.0:
            return False
        return bool(np.random.default_rng((self.seed, self.epoch, index)).random() < self.flip_prob)

    def __getitem__(self, index: int) -> dict | SampleFailure:
        record = self.records[index]
        sample_id = str(record["id"])
        input_ids, labels = self._encode(index)
        if len(input_ids) > self.max_length:  # checked before any media is loaded; never truncated
            return SampleFailure(
                sample_id, self.files[self.sources[index]], f"{len(input_ids)} tokens > max_length {self.max_length}"
            )
        sample = {
            "id": sample_id,
            "modality": self.modality(index),
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        flip = self._flip(index)
        for kind, (_, key) in self.MEDIA.items():
            pixels = []
            for media in _media(record, kind):
                path = self.media_source(kind, media)
                try:
                    pixels.append(self.load_media(kind, path))
                except Exception as err:  # decoders and PIL raise many types on bad files: fail this sample only
                    # Errors that keep their path apart (a video reader's) give just the message: the failure has it.
                    return SampleFailure(sample_id, path, f"{type(err).__name__}: {getattr(err, 'message', err)}")
            if pixels:
                stacked = torch.stack(pixels)
                # The processors flip last, so mirroring the processed pixels equals processing with flip=True.
                sample[key] = stacked.flip(-1) if flip else stacked
        return sample


class TrainCollator:
    """Pads samples into a training batch and sets the failures aside under "failures"."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: give the tokenizer a pad token (LLaVA uses unk)")
        self.pad_token_id, self.padding_side = pad_token_id, padding_side

    def __call__(self, samples: Sequence[dict | SampleFailure]) -> dict:
        failures = [s for s in samples if isinstance(s, SampleFailure)]
        good = [s for s in samples if not isinstance(s, SampleFailure)]
        if not good:  # empty labels keep the Trainer's label count (num_items_in_batch) working
            return {"failures": failures, "labels": torch.empty(0, 0, dtype=torch.long)}
        batch = collate(good, self.pad_token_id, self.padding_side)
        # Labels pad exactly like ids, with IGNORE_INDEX as the pad value.
        batch["labels"] = collate([{"input_ids": s["labels"]} for s in good], IGNORE_INDEX, self.padding_side)[
            "input_ids"
        ]
        batch["failures"] = failures
        return batch


class ModalityLengthGroupedSampler(Sampler[int]):
    """Every index once per epoch, in global batches of a single modality and of similar lengths.

    Per modality: shuffle, cut into megabatches of `megabatch` global batches, sort each by length (longest
    first) and cut it into global batches; a modality's last global batch may be short (it is never filled up
    with another modality). The order of the global batches is then shuffled. Deterministic for (seed, epoch).

    Batch by `rank_batches()` (e.g. `DataLoader(dataset, batch_sampler=sampler.rank_batches(rank, world))`),
    not by cutting the flat index stream: after a short batch the stream no longer falls on batch boundaries.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        modalities: Sequence[str],
        global_batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        megabatch: int = 50,
    ):
        if len(lengths) != len(modalities):
            raise ValueError(f"{len(lengths)} lengths but {len(modalities)} modalities")
        if global_batch_size < 1 or megabatch < 1:
            raise ValueError(f"global_batch_size and megabatch must be >= 1, got {global_batch_size}, {megabatch}")
        self.lengths, self.modalities = list(lengths), list(modalities)
        self.global_batch_size, self.seed, self.epoch, self.megabatch = global_batch_size, seed, epoch, megabatch

    def set_epoch(self, epoch: int) -> None:
        """Reorder for another epoch."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches, in order."""
        rng = np.random.default_rng((self.seed, self.epoch))
        size, mega = self.global_batch_size, self.global_batch_size * self.megabatch
        batches = []
        for modality in sorted(set(self.modalities)):  # sorted: set order varies with string hashing
            indices = rng.permutation([i for i, m in enumerate(self.modalities) if m == modality]).tolist()
            for start in range(0, len(indices), mega):
                group = sorted(indices[start : start + mega], key=self.lengths.__getitem__, reverse=True)
                batches += [group[i : i + size] for i in range(0, len(group), size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def rank_batches(self, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """This rank's share of each global batch, step by step (strided: every rank gets similar lengths).

        A global batch smaller than `world_size` (a modality's short tail) is cycled so that every rank gets a
        sample: a rank with nothing to run would skip the forward, and under ZeRO-3 the others would wait for it.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        spread = [
            b if len(b) >= world_size else [b[i % len(b)] for i in range(world_size)] for b in self.global_batches()
        ]
        return [b[rank::world_size] for b in spread]

    def __iter__(self):
        for batch in self.global_batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.lengths)
