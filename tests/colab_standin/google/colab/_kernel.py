"""Colab's kernel class: an IPythonKernel with Colab's completions (left out here)."""
from ipykernel import ipkernel


class Kernel(ipkernel.IPythonKernel):
    pass
