"""LLaVolta's entry points: the `llavolta` command line and the quickstart, on top of the three packages.

Nothing imports this package: it may use all of `image_llavolta`, `video_llavolta` and `data_prep`.
"""
