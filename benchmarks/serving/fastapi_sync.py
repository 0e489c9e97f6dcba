"""Peer: a plain FastAPI app, sync handler (FastAPI runs it in its thread pool), no batching."""

import torch
from bench_model import load_from_env
from fastapi import Body, FastAPI

model = load_from_env()
app = FastAPI()


@app.get("/v2/health/ready")
def ready() -> dict:
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
def infer(name: str, payload: dict = Body(...)) -> dict:
    tensor = payload["inputs"][0]
    x = torch.tensor(tensor["data"], dtype=torch.float32).reshape(tensor["shape"])
    with torch.inference_mode():
        y = model(x)
    return {
        "model_name": name,
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": list(y.shape), "data": y.reshape(-1).tolist()}
        ],
    }
