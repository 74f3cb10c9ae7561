"""Segments, slot maps and pooling checked against hand-computed values."""

import pytest
import torch

from image_llavolta.compression.pooling import average_pool, compressed_targets, padding_side, plan_compression
from image_llavolta.compression.segments import find_segments, layout_from_segment_index

IMG, V = 90, 91


def test_back_to_back_segments_are_split_by_length():
    ids = torch.tensor([[5, IMG, IMG, IMG, IMG, IMG, IMG, 6, V, V, V, 7]])
    layout = find_segments(ids, {IMG: 3, V: 3})
    assert layout.offset.tolist() == [[0, 0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 0]]
    assert layout.is_visual.tolist() == [[False] + [True] * 6 + [False] + [True] * 3 + [False]]


def test_segment_index_layout_keeps_separators_and_variable_lengths():
    # row 0: a 3-token frame, a kept newline (-1), a 2-token frame; row 1: one 4-token tile, text around it
    index = torch.tensor([[-1, 0, 0, 0, -1, 1, 1, -1], [-1, -1, 5, 5, 5, 5, -1, -1]])
    layout = layout_from_segment_index(index)
    assert layout.is_visual.tolist() == [
        [False, True, True, True, False, True, True, False],
        [False, False, True, True, True, True, False, False],
    ]
    assert layout.offset.tolist() == [[0, 0, 1, 2, 0, 0, 1, 0], [0, 0, 0, 1, 2, 3, 0, 0]]
    plan = plan_compression(layout, None, torch.arange(8)[None], stride=2)
    # row 0: text, [1,2], [3], newline, [5,6], text = 6 slots; row 1: 2 text, [2,3], [4,5], 2 text = 6 slots
    assert plan.counts.tolist() == [[1, 2, 1, 1, 2, 1], [1, 1, 2, 2, 1, 1]]
    assert plan.position_ids.tolist() == [[0, 1, 3, 4, 5, 7], [0, 1, 2, 4, 6, 7]]


def test_adjacent_segments_with_their_own_ids_are_separate():
    layout = layout_from_segment_index(torch.tensor([[0, 0, 0, 1, 1, 1]]))
    assert layout.offset.tolist() == [[0, 1, 2, 0, 1, 2]]


def test_split_segment_index_is_refused():
    with pytest.raises(ValueError, match="sample 0: a visual segment is split"):
        layout_from_segment_index(torch.tensor([[0, 0, -1, 0]]))


def test_run_not_splitting_into_segments_names_sample_and_position():
    ids = torch.tensor([[5, 6, 7, 8], [5, IMG, IMG, 6]])
    with pytest.raises(ValueError, match=r"sample 1: a run of 2 visual tokens \(id 90\) ending at position 2"):
        find_segments(ids, {IMG: 3})


def test_partial_last_window_is_averaged_not_dropped():
    # text, a 5-token segment pooled with S=2 → windows [1,2], [3,4], [5], then text
    ids = torch.tensor([[7, IMG, IMG, IMG, IMG, IMG, 8]])
    hidden = torch.arange(7.0).repeat_interleave(2).view(1, 7, 2)  # token i has features (i, i)
    positions = torch.arange(7)[None]
    plan = plan_compression(find_segments(ids, {IMG: 5}), None, positions, stride=2)
    pooled = average_pool(hidden, plan)
    assert pooled[0, :, 0].tolist() == [0.0, 1.5, 3.5, 5.0, 6.0]
    assert plan.position_ids.tolist() == [[0, 1, 3, 5, 6]]  # floor of the window's mean position
    assert plan.visual_in.tolist() == [5] and plan.visual_out.tolist() == [3]


def test_windows_never_cross_segments_or_touch_text():
    # two back-to-back 3-token frames, S=2: [1,2] [3] | [4,5] [6]
    ids = torch.tensor([[7, V, V, V, V, V, V, 8]])
    plan = plan_compression(find_segments(ids, {V: 3}), None, torch.arange(8)[None], stride=2)
    assert plan.slot.tolist() == [[0, 1, 1, 2, 3, 3, 4, 5]]
    assert plan.counts.tolist() == [[1, 2, 1, 2, 1, 1]]


def test_repadding_on_the_batch_padding_side():
    # sample 0 has an image (6 → 2 slots with S=3), sample 1 is text only; equal input length
    ids = torch.tensor([[0, 5, IMG, IMG, IMG, IMG, IMG, IMG], [0, 0, 0, 5, 6, 7, 8, 9]])
    mask = (ids != 0).long()
    layout = find_segments(ids, {IMG: 6})
    left = plan_compression(layout, mask, (mask.cumsum(1) - 1).clamp(min=0), stride=3)
    # sample 0 keeps 1 text + 2 pooled = 3 slots, sample 1 keeps 5: length 5, sample 0 re-padded on the left
    assert left.length == 5
    assert left.attention_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    right_ids = torch.tensor([[5, IMG, IMG, IMG, IMG, IMG, IMG, 0], [5, 6, 7, 8, 9, 0, 0, 0]])
    right_mask = (right_ids != 0).long()
    right = plan_compression(find_segments(right_ids, {IMG: 6}), right_mask, torch.arange(8)[None], stride=3)
    assert right.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_padding_side_detection():
    assert padding_side(torch.tensor([[0, 1, 1], [1, 1, 1]])) == "left"
    assert padding_side(torch.tensor([[1, 1, 0], [1, 1, 1]])) == "right"
    assert padding_side(torch.ones(2, 3)) is None
    with pytest.raises(ValueError, match="padding in the middle"):
        padding_side(torch.tensor([[1, 0, 1]]))


def test_targets_are_text_only_and_aligned():
    # tokens: t0 t1 [IMG IMG IMG IMG] t2 t3 ; labels mark t2, t3 as targets
    ids = torch.tensor([[10, 11, IMG, IMG, IMG, IMG, 12, 13]])
    labels = torch.tensor([[-100, -100, -100, -100, -100, -100, 12, 13]])
    layout = find_segments(ids, {IMG: 4})
    plan = plan_compression(layout, None, torch.arange(8)[None], stride=2)
    # compressed: t0 t1 w(IMG,IMG) w(IMG,IMG) t2 t3 → the last window predicts t2, t2 predicts t3, t3 nothing
    assert compressed_targets(labels, layout.is_visual, plan).tolist() == [[-100, -100, -100, 12, 13, -100]]


def test_masked_visual_token_is_an_error():
    ids = torch.tensor([[IMG, IMG, IMG, IMG, 5, 6, 7]])
    with pytest.raises(ValueError, match="sample 0: attention_mask masks the visual placeholder token at position 0"):
        plan_compression(find_segments(ids, {IMG: 4}), torch.tensor([[0, 0, 1, 1, 1, 1, 1]]), torch.arange(7)[None], 2)


def test_text_tail_counts_trailing_text_slots():
    ids = torch.tensor([[5, IMG, IMG, 6, 7], [5, 6, IMG, IMG, 0]])
    plan = plan_compression(find_segments(ids, {IMG: 2}), (ids != 0).long(), torch.arange(5)[None], 2)
    assert plan.text_tail.tolist() == [2, 0]  # right padding: sample 1 ends in a pad slot after its image


def test_multi_axis_positions_take_the_floor_of_the_window_mean_per_axis():
    # One 2x3 grid of 6 visual tokens (M-RoPE style): t constant, h row, w column; text before and after.
    index = torch.tensor([[-1, 0, 0, 0, 0, 0, 0, -1]])
    t = [0, 1, 1, 1, 1, 1, 1, 4]
    h = [0, 1, 1, 1, 2, 2, 2, 4]
    w = [0, 1, 2, 3, 1, 2, 3, 4]
    positions = torch.tensor([t, h, w])[:, None]  # (3, 1, 8)
    plan = plan_compression(layout_from_segment_index(index), None, positions, stride=4)
    # windows [1..4] and [5, 6]: h (1+1+1+2)//4 = 1, (2+2)//2 = 2; w (1+2+3+1)//4 = 1, (2+3)//2 = 2
    assert plan.position_ids.tolist() == [[[0, 1, 1, 4]], [[0, 1, 2, 4]], [[0, 1, 2, 4]]]
    one_axis = plan_compression(layout_from_segment_index(index), None, positions[2], stride=4)
    assert one_axis.position_ids.tolist() == plan.position_ids[2].tolist() and torch.equal(one_axis.slot, plan.slot)
