"""Peer: BentoML with adaptive batching (max_batch_size 16), on the OIP infer path.

The OIP body's "inputs" list (one tensor of one row per request) is the batched parameter."""

import bentoml
import torch
from bench_model import load_from_env


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        self.model = load_from_env()

    @bentoml.api(route="/v2/models/bench/infer", batchable=True, max_batch_size=16, max_latency_ms=1000)
    def infer(self, inputs: list[dict]) -> list[dict]:
        x = torch.tensor([t["data"][0] if isinstance(t["data"][0], list) else t["data"] for t in inputs])
        with torch.inference_mode():
            y = self.model(x)
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, row.shape[0]], "data": row.tolist()} for row in y
        ]
