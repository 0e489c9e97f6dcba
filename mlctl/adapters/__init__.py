"""The only modules that import the SDKs: docker, kubernetes, helm_python, git and torch.

Each implements a narrow interface of ``mlctl.ports`` (or a few functions) and loads its SDK lazily.
"""
