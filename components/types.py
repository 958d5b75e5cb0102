"""Type names and the reading of optional execution properties, shared by the custom components' executors."""

from typing import Any, Dict, List

from tfx import types

# What BaseExecutor.Do receives: input/output channel name -> artifacts, and the execution properties.
ArtifactDict = Dict[str, List[types.Artifact]]
ExecProperties = Dict[str, Any]


def optional_property(exec_properties: ExecProperties, key: str, default: Any) -> Any:
    """An optional parameter of a ComponentSpec: `default` only where it is absent or None (a pipeline compiled
    before the parameter existed), never in place of a real 0, 0.0 or empty value."""
    value = exec_properties.get(key)
    return default if value is None else value
