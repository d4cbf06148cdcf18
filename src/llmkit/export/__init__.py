"""Export to other runtimes: GGUF for llama.cpp and ollama (with a Modelfile)."""
