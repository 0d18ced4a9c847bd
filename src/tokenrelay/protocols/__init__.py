"""Wire protocols over the same events; the seed's frames are the default."""

from tokenrelay.protocols.agui import AGUIEncoder, AGUIProtocol
from tokenrelay.protocols.aisdk import AISDKEncoder, AISDKProtocol
from tokenrelay.protocols.base import Encoder, StreamContext, WireProtocol
from tokenrelay.protocols.openai_chat import OpenAIChatEncoder, OpenAIChatProtocol
from tokenrelay.protocols.seed import SeedEncoder, SeedProtocol

__all__ = [
    "AGUIEncoder",
    "AGUIProtocol",
    "AISDKEncoder",
    "AISDKProtocol",
    "Encoder",
    "OpenAIChatEncoder",
    "OpenAIChatProtocol",
    "SeedEncoder",
    "SeedProtocol",
    "StreamContext",
    "WireProtocol",
]
