"""Batch scoring past one process: cases streamed in chunks to JSONL or Parquet, `--shard i/n` partitions, and a
Ray Data actor pool (`ray_engine`) for many processes or machines. `adaptrec score` and `api.write_predictions`
call these."""

from .formats import FIELDS, PredictionWriter, check_format, meta_path, read_predictions
from .shard import WHOLE, Shard, batch_cases
from .stream import CHUNK_SIZE, adapter_scorer, prediction_rows, stream_predictions

ENGINES = ("local", "ray")

__all__ = ["CHUNK_SIZE", "ENGINES", "FIELDS", "WHOLE", "PredictionWriter", "Shard", "adapter_scorer", "batch_cases",
           "check_format", "meta_path", "prediction_rows", "read_predictions", "stream_predictions"]
