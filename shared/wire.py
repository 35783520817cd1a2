"""The mesh protocol's wire form, one concept a module; this module gathers them, so
`from shared.wire import Member, decode` reads as it always has (each module's __all__):

- shared/addresses.py: host:port addresses, ports and host names;
- shared/fields.py: reading a decoded object's fields, and ProtocolError;
- shared/records.py: member records, labels, meta and instances, and a record's size;
- shared/compact.py: a record's compact form (an array, version 4);
- shared/messages.py: the protocol's versions, its message types, encode and decode;
- shared/jsonbody.py: a JSON body read as one object (a frame's, an HTTP request's).
"""

from __future__ import annotations

from shared.addresses import *  # noqa: F403
from shared.compact import *  # noqa: F403
from shared.fields import *  # noqa: F403
from shared.jsonbody import *  # noqa: F403
from shared.messages import *  # noqa: F403
from shared.records import *  # noqa: F403
