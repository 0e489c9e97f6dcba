"""mlctl-serve: the serving runtime of mlctl services.

    from mlctl_serve import TensorSpec, create_predict_app, create_generate_app, InvalidInput

torch loads only when a server starts (and in the model thread), not at import.
"""

from __future__ import annotations

__version__ = "0.1.0"

from mlctl_serve.generate import TextGenerator, create_generate_app
from mlctl_serve.predict import create_predict_app
from mlctl_serve.protocol import InvalidInput, TensorSpec
from mlctl_serve.settings import Settings, SettingsError

__all__ = [
    "InvalidInput",
    "Settings",
    "SettingsError",
    "TensorSpec",
    "TextGenerator",
    "__version__",
    "create_generate_app",
    "create_predict_app",
]
