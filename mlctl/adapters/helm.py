"""The only module that imports the Helm engine (helm-python-sdk)."""

from __future__ import annotations

from mlctl.errors import EnvironmentProblem


def engine_version() -> str:
    """The Helm SDK version inside helm-python-sdk, e.g. ``v4.2.3 (helm-python-sdk 0.2.2)``."""
    try:
        import helm_python
    except ImportError:
        raise EnvironmentProblem(
            "the Helm engine (helm-python-sdk) is not installed",
            hint="pip install helm-python-sdk (Linux x86_64 wheels only)",
        ) from None
    except OSError as exc:  # the shared library failed to load
        raise EnvironmentProblem(f"the Helm engine failed to load: {exc}") from None
    return f"{helm_python.helm_sdk_version()} (helm-python-sdk {helm_python.__version__})"
