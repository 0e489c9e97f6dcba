"""Peer: LitServe with batching (max_batch_size 16, batch_timeout 5 ms), on the OIP infer path."""

import os

import litserve as ls
import torch
from bench_model import load_from_env


class Classifier(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = load_from_env()

    def decode_request(self, request: dict) -> torch.Tensor:
        tensor = request["inputs"][0]
        return torch.tensor(tensor["data"], dtype=torch.float32).reshape(tensor["shape"])[0]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)

    def encode_response(self, y: torch.Tensor) -> dict:
        return {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, len(y)], "data": y.tolist()}]}


if __name__ == "__main__":
    api = Classifier(max_batch_size=16, batch_timeout=0.005, api_path="/v2/models/bench/infer")
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(
        port=int(os.environ["BENCH_PORT"]), generate_client_file=False
    )
