"""`lake predict` and `lake eval` on a Dask cluster (``pip install 'pylake[distributed]'``).

    from distributed import Client
    from pylake import distributed as lakedist
    with Client("tcp://scheduler:8786") as client:
        lakedist.predict(client, "grid.lake", images, "out/", model="ViT-L-14-336.pt")
        lakedist.evaluate(client, categories, [1, 2, 4], [0, 1, 2], "report/", model="ViT-L-14-336.pt")

The work is cut into tasks that Dask schedules (docs/distributed.md):

- ``predict``: chunks of images. A task reads its files from their paths (a file system that
  every worker sees), scores them with the backbone its worker process loaded once
  (:func:`worker_model`, a per-process cache keyed by the archive and the ``.lake`` file's
  SHA-256) and writes each image's outputs into the output folder itself, atomically, by the
  steps of :mod:`pylake.predict`. Only paths, scores and rows travel through the scheduler.
- ``evaluate``: per (category, shots, seed) run a fit task (its ``.lake`` file is written into
  the output folder and read by the other tasks), chunks of test images (maps written next to
  the outputs), and a finishing task that feeds the maps, in input order, to the run's
  :class:`pylake.evaluate.RunAccumulator`, the one `lake eval` uses, so the metrics, rows,
  heatmaps and report are those of the single-process command, bit for bit.

Resume: every finished image leaves a record under ``OUT/.lake-parts/`` (written after its
outputs), and every finished eval run its result; a second run of the same command skips
them. A worker killed mid-task loses nothing that was recorded: Dask reruns its tasks
elsewhere and they skip what is done. Leftover temporary files of killed writers are removed
before and after a run, so the folder never holds a partial file once the command returns.
"""

from __future__ import annotations

from ._common import (CHUNKS_PER_WORKER, MAX_CHUNK, MMAP_THRESHOLD, MODELS_PER_WORKER, NEEDS_DASK, PARTS,
                      SCHEDULER_TIMEOUT, WORKER_TIMEOUT, Backbone, WorkerSetup, available, connect, dashboard,
                      file_sha256, n_workers, remove_temporaries, require, temporaries, tune_malloc, worker_clip,
                      worker_model)
from ._eval import evaluate
from ._predict import PredictResult, predict

__all__ = ["CHUNKS_PER_WORKER", "MAX_CHUNK", "MMAP_THRESHOLD", "MODELS_PER_WORKER", "NEEDS_DASK", "PARTS",
           "SCHEDULER_TIMEOUT", "WORKER_TIMEOUT", "Backbone", "PredictResult", "WorkerSetup", "available", "connect",
           "dashboard", "evaluate", "file_sha256", "n_workers", "predict", "remove_temporaries", "require",
           "temporaries", "tune_malloc", "worker_clip", "worker_model"]
