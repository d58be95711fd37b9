"""Layer 4, what a user (or the agent) writes: pipeline, mixture, intent, agent and trigger models,
one YAML loader with file:line errors, and the project model that reads assets/ and sensors/ once."""
