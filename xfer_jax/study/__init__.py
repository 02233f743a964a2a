"""The transfer study end to end: `xfer demo` (the pipeline once, on a CPU) and `xfer study` (the paper's arms
as a grid of resumable runs, gathered into one report). Both only wire the project's own stages."""
