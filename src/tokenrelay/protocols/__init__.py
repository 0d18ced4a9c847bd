"""Wire protocols over the same events; the seed's frames are the default."""

from tokenrelay.protocols.base import Encoder, StreamContext, WireProtocol
from tokenrelay.protocols.seed import SeedEncoder, SeedProtocol

__all__ = ["Encoder", "SeedEncoder", "SeedProtocol", "StreamContext", "WireProtocol"]
