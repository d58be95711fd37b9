"""Dagster resources that carry operators' runtime settings (a judge's endpoint, its concurrency):
bound in the code location, settable per deployment with `dg.EnvVar`, never part of a code version,
so one pipeline YAML runs against a laptop server or a GPU cluster."""

from __future__ import annotations

import copy
import os
from typing import Any

import dagster as dg

from dagster_llmdata.judges.backend import JudgeRuntime
from dagster_llmdata.config import RuntimeSettings


class RuntimeResource(dg.ConfigurableResource):
    """Base of the resources that hand an operator its runtime settings."""

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}


def runtime_resource(name: str, settings_model: type[RuntimeSettings], env_prefix: str) -> type[RuntimeResource]:
    """A resource class with the fields of an operator's runtime settings model (same types,
    defaults, bounds and descriptions), so the two never drift apart."""
    fields = settings_model.model_fields
    namespace: dict[str, Any] = {
        "__annotations__": {field: info.annotation for field, info in fields.items()},
        "__doc__": f"{settings_model.__doc__}\n\nEach field can also come from ${env_prefix}<FIELD> (see `from_env`).",
        "__module__": __name__,
        **{field: copy.copy(info) for field, info in fields.items()},
    }
    resource_cls = type(name, (RuntimeResource,), namespace)

    def from_env(cls) -> RuntimeResource:
        """Defaults, with every field whose ${env_prefix}<FIELD> variable is set bound to it: text
        fields as `dg.EnvVar` (resolved when a run starts, shown as such in the UI), numbers read
        now (Dagster's deferred integers would meet the fields' bounds as 0)."""
        bound: dict[str, Any] = {}
        for f, info in fields.items():
            var = f"{env_prefix}{f.upper()}"
            if var not in os.environ:
                continue
            if info.annotation in (str, str | None):
                bound[f] = dg.EnvVar(var)
            else:
                bound[f] = os.environ[var]  # validated (and converted) by the field's type
        return cls(**bound)

    resource_cls.from_env = classmethod(from_env)
    return resource_cls


JudgeResource = runtime_resource("JudgeResource", JudgeRuntime, JudgeRuntime.env_prefix)

# runtime key (Operator.runtime_key) -> the resource the code location binds under that key
RUNTIME_RESOURCES: dict[str, type[RuntimeResource]] = {"judge": JudgeResource}


def default_resources() -> dict[str, RuntimeResource]:
    return {key: cls.from_env() for key, cls in RUNTIME_RESOURCES.items()}
