"""Identifier types.

Ids are plain strings on the wire and in the database; `NewType` keeps a file
id from being passed where a batch id is expected, at no runtime cost.
"""

from typing import NewType

TenantId = NewType("TenantId", str)
FileId = NewType("FileId", str)
BatchId = NewType("BatchId", str)
UploadId = NewType("UploadId", str)
PartId = NewType("PartId", str)
WorkerId = NewType("WorkerId", str)

#: Whose objects a read may see: one tenant's, or (None) every tenant's, as
#: for an admin key or the runner.
TenantScope = TenantId | None
