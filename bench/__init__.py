"""`python -m bench`: our ONNX runtime against the PyTorch reference, side by side, in one run.

    python -m bench [--size small|1b] [--repeat N] [--new-tokens 16,64]

Modules, one job each:

| module        | job                                                                   |
|---------------|-----------------------------------------------------------------------|
| `artifacts`   | build or reuse the checkpoint and the exported bundle of a size        |
| `ours`        | time one cold (or warm) `VLM.answer()` of our runtime                  |
| `reference`   | the PyTorch reference (eager LLaVA, two full generations for AdaptVis), timed |
| `memory`      | peak resident memory of a process that only loads our runtime          |
| `roofline`    | memory bandwidth of this machine and the decoder's weight bytes        |
| `machine`     | CPU, cores, memory, package versions                                   |
| `quiet`       | CPU time other processes used meanwhile (this machine is shared)       |
| `stats`       | medians, min-max, ratios                                               |
| `report`      | the rich tables and the JSON result file                               |
| `__main__`    | the command line and the interleaved schedule                          |
| `answer_speed`| whole answers of several bundles on drawn scenes, interleaved (`python -m bench.answer_speed`) |

`bench/README.md` explains how to read the results.
"""
