"""AI backends. Each module translates one vendor's stream into tokenrelay events; heavy SDKs load lazily."""

from tokenrelay.backends.base import Backend, BackendError, GenerateOptions, Message
from tokenrelay.backends.scripted import Pause, ScriptedBackend
from tokenrelay.backends.synthetic import SyntheticBackend

__all__ = [
    "Backend",
    "BackendError",
    "GenerateOptions",
    "Message",
    "Pause",
    "ScriptedBackend",
    "SyntheticBackend",
]
