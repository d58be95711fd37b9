"""Layer 7, the agent: intent -> profile -> plan -> verify -> proposal -> approve -> code-location reload.
Model output is data: every plan is a validated spec, never code that runs."""
