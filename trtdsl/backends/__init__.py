"""Backends that run a recorded network: ``numpy`` (reference), ``cupy`` (GPU + NCCL) and
``tensorrt`` (TensorRT 11 engines); ``nccl`` is the NCCL binding the GPU backends share and
``interpreter`` the layer-by-layer loop of the numpy and cupy backends.

``Network.run(feeds, backend=name)`` finds them by name (:data:`trtdsl.network.BACKEND_MODULES`).
"""
