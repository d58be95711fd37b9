"""Layer 2, the LLM judges operators use: model backends (vLLM in-process, any OpenAI-compatible
server, SmolLM2 on CPU), versioned rubrics, answer parsing, the score cache, distillation into a
cheap classifier, and a small OpenAI-compatible server around the CPU backend."""
