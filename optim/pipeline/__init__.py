"""The end-to-end compression pipeline (``python -m optim``).

Modules, in the order a run uses them: ``config`` (the TOML schema and its validation),
``stages`` (one function per stage type), ``store`` (packed model files), ``codecs`` (their
bit-level encodings), ``report`` (measurements and the table) and ``run`` (``run_pipeline``:
stage order, resume, the manifest of written files). ``default_pipeline.toml`` is the run
``python -m optim`` does with no arguments; ``auto_pipeline.toml`` the accuracy-targeted one.
"""
from .run import (FORMAT, MANIFEST, MEASUREMENT_OPTIONS, Manifest, PipelineError, load_data,
                  run_pipeline, stage_dirname, summarize)

__all__ = ["PipelineError", "Manifest", "run_pipeline", "load_data", "stage_dirname",
           "summarize", "MEASUREMENT_OPTIONS", "FORMAT", "MANIFEST"]
