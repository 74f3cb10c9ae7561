"""Efficiency of compression settings, side by side in one run: FLOPs, time to first token, decode rate, memory.

- `flops`: the analytic FLOP count of a prefill, part by part, and the paper's Table 5 TFLOPs column on the 7B shape;
- `measure`: time to first token, decode tokens/s, peak memory, the DeepSpeed profiler's count, interleaved
  timing rounds (also behind `scripts/bench_prefill.py`);
- `report`: the report, its Table 5 check and table, and the command line (`python -m image_llavolta.efficiency`).

The package imports none of them itself, so that `flops` stays importable from anywhere below the report.
"""
