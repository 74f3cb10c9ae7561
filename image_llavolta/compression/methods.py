"""The compressor variants: which of a segment's ceil(n/S) slots each visual token goes to, or none.

Every method reduces each segment (one image, one video frame) on its own to exactly ceil(n/S) tokens, the
count average pooling gives, so the variants compare at equal cost. A slot's value is the mean of the tokens
sent to it: S neighbours for `avgpool`, one token for the selections (`random`, `fastv`), a cluster for
`kmeans`. This module only decides the assignment; `pooling` builds the sequence from it.
"""

from __future__ import annotations

import torch

from .segments import VisualLayout
from .spec import CompressionSpec

KMEANS_ITERATIONS = 10  # Lloyd steps; clusters of a few hundred tokens settle well before this


def slot_assignment(
    spec: CompressionSpec, layout: VisualLayout, hidden: torch.Tensor, scores: torch.Tensor | None = None
) -> torch.Tensor | None:
    """(B, L) slot of each visual token inside its segment (−1 = dropped), or None for average pooling.

    `hidden` (B, L, D) are the states entering the compressor; `scores` (B, L) the attention each token gets
    from the last prompt token (required by `fastv`).
    """
    if spec.method == "avgpool":
        return None
    segments = _Segments(layout, spec.stride)
    if spec.method == "random":
        return segments.select(segments.noise(spec.seed).to(hidden.device))
    if spec.method == "fastv":
        if scores is None:
            raise ValueError("method 'fastv' needs the last prompt token's attention scores")
        return segments.select(scores)
    if spec.method == "kmeans":
        return segments.cluster(hidden)
    raise ValueError(f"unknown compression method {spec.method!r}")


def fastv_query_index(
    batch: int,
    length: int,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """(B,) the last prompt token of each row, whose attention ranks the visual tokens for `fastv`.

    With `labels` (training) it is the token before the first supervised one, so the answer never chooses
    which visual tokens it sees; otherwise (and for rows without labels) the last real token, which is the
    last prompt token when generating.
    """
    device = attention_mask.device if attention_mask is not None else None
    query = torch.full((batch,), length - 1, device=device)
    if attention_mask is not None:
        query = query - attention_mask.flip(1).argmax(1)  # right padding: the last real token
    if labels is not None:
        supervised = labels != ignore_index
        supervised[:, 0] = False  # position 0 is never a target
        first = supervised.long().argmax(1)
        query = torch.where(supervised.any(1), first - 1, query.to(labels.device))
    return query


class _Segments:
    """The visual tokens of a batch in order, grouped by segment (segments never span two images or frames)."""

    def __init__(self, layout: VisualLayout, stride: int):
        self.shape = layout.is_visual.shape
        self.index = layout.is_visual.flatten().nonzero().squeeze(1)  # flat positions of visual tokens, in order
        offset = layout.offset.flatten()[self.index]
        self.segment = (offset == 0).long().cumsum(0) - 1  # segment of each visual token
        self.length = torch.bincount(self.segment)  # tokens per segment
        self.start = self.length.cumsum(0) - self.length  # first visual token of each segment
        self.keep = torch.div(self.length + stride - 1, stride, rounding_mode="floor")  # ceil(n / S) slots
        self.stride = stride
        self.offset = offset
        row = self.index // self.shape[1]
        first = torch.full((self.shape[0],), len(self.index), device=row.device).scatter_reduce(
            0, row, self.segment, reduce="amin"
        )
        self.ordinal = self.segment - first[row]  # which segment of its sample (0 = the sample's first)

    def _scatter(self, local: torch.Tensor) -> torch.Tensor:
        out = torch.full((self.shape[0] * self.shape[1],), -1, dtype=torch.long, device=local.device)
        out[self.index] = local
        return out.view(self.shape)

    def noise(self, seed: int) -> torch.Tensor:
        """(B·L,) uniform noise that depends only on (seed, segment ordinal in its sample, segment length, offset).

        So a sample drops the same tokens whatever it is batched or padded with, and whatever text follows it.
        """
        noise = torch.zeros(self.shape[0] * self.shape[1])
        pairs = torch.stack([self.ordinal, self.length[self.segment]], 1).cpu()
        for ordinal, n in pairs.unique(dim=0).tolist():
            generator = torch.Generator().manual_seed(hash((seed, ordinal, n)) & (2**63 - 1))
            table = torch.rand(n, generator=generator)
            these = ((pairs[:, 0] == ordinal) & (pairs[:, 1] == n)).nonzero().squeeze(1)
            noise[self.index.cpu()[these]] = table[self.offset.cpu()[these]]
        return noise.view(self.shape)

    def select(self, scores: torch.Tensor) -> torch.Tensor:
        """Keep the ceil(n/S) highest-scoring tokens of each segment, in their original order (ties: earlier)."""
        score = scores.flatten()[self.index].float()
        order = torch.argsort(-score, stable=True)
        order = order[torch.argsort(self.segment[order], stable=True)]  # by segment, best first inside each
        rank = torch.arange(len(order), device=order.device) - self.start[self.segment[order]]
        kept = torch.zeros_like(self.segment, dtype=torch.bool)
        kept[order] = rank < self.keep[self.segment[order]]
        before = kept.long().cumsum(0) - kept.long()  # kept tokens before each token, over the whole batch
        local = before - before[self.start[self.segment]]
        return self._scatter(torch.where(kept, local, -1))

    @torch.no_grad()
    def cluster(self, hidden: torch.Tensor) -> torch.Tensor:
        """k-means with ceil(n/S) clusters per segment, started from the average-pooling windows (deterministic)."""
        states = hidden.flatten(0, 1)[self.index].float()
        local = torch.empty_like(self.segment)
        for n in self.length.unique().tolist():  # segments of one length cluster together
            segments = (self.length == n).nonzero().squeeze(1)
            tokens = self.start[segments][:, None] + torch.arange(n, device=states.device)  # (G, n)
            assign = _kmeans(states[tokens], int(self.keep[segments[0]]), self.stride)
            local[tokens.flatten()] = assign.flatten()
        return self._scatter(local)


def _kmeans(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """(G, n) cluster of each of n points in G independent problems; every cluster ends non-empty."""
    groups, n, _ = x.shape
    assign = (torch.arange(n, device=x.device) // stride).expand(groups, n)  # the avgpool windows
    centroids = _means(x, assign, k)[0]
    for _ in range(KMEANS_ITERATIONS):
        new = torch.cdist(x, centroids).argmin(-1)
        if torch.equal(new, assign):
            break
        assign = new
        means, counts = _means(x, assign, k)
        centroids = torch.where(counts[..., None] > 0, means, centroids)
    return _fill_empty(x, assign, centroids, k)


def _means(x: torch.Tensor, assign: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster means (G, k, D) and member counts (G, k)."""
    groups, _, dim = x.shape
    sums = torch.zeros(groups, k, dim, dtype=x.dtype, device=x.device).scatter_add_(
        1, assign[..., None].expand(-1, -1, dim), x
    )
    counts = torch.zeros(groups, k, dtype=x.dtype, device=x.device).scatter_add_(1, assign, torch.ones_like(x[..., 0]))
    return sums / counts.clamp(min=1)[..., None], counts


def _fill_empty(x: torch.Tensor, assign: torch.Tensor, centroids: torch.Tensor, k: int) -> torch.Tensor:
    """Give each empty cluster the point farthest from its centroid among clusters with two or more members."""
    assign = assign.clone()
    has_empty = (
        torch.zeros(assign.shape[0], k, dtype=torch.long, device=assign.device)
        .scatter_add_(1, assign, torch.ones_like(assign))
        .eq(0)
        .any(1)
    )
    for g in has_empty.nonzero().squeeze(1).tolist():  # rare: Lloyd steps seldom empty a cluster
        while True:
            counts = torch.bincount(assign[g], minlength=k)
            empty = (counts == 0).nonzero()
            if not len(empty):
                break
            distance = (x[g] - centroids[g, assign[g]]).norm(dim=-1)
            distance[counts[assign[g]] < 2] = -1  # never empty another cluster
            assign[g, distance.argmax()] = empty[0, 0]
    return assign
