"""Type names shared by the custom components' executors."""

from typing import Any, Dict, List

from tfx import types

# What BaseExecutor.Do receives: input/output channel name -> artifacts, and the execution properties.
ArtifactDict = Dict[str, List[types.Artifact]]
ExecProperties = Dict[str, Any]
