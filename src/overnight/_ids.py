"""New identifiers, in the shapes the SDKs expect (`file-…`, `batch_…`)."""

import random
import re
import secrets
import uuid

from overnight.types import BatchId, FileId, PartId, UploadId, WorkerId


def new_file_id() -> FileId:
    # `file-<uuid>` satisfies both OpenAI (`file-…`) and Together (`file-<uuid>`).
    return FileId(f"file-{uuid.uuid4()}")


_RESULTS = uuid.UUID("6f766e69-6768-7400-0000-726573756c74")


def result_file_id(batch_id: str, kind: str) -> FileId:
    """The id of a batch's output or error file: derived from the batch, so
    a finalisation that is re-run after a crash overwrites, never leaks."""
    return FileId(f"file-{uuid.uuid5(_RESULTS, f'{batch_id}/{kind}')}")


def new_batch_id() -> BatchId:
    return BatchId(f"batch_{uuid.uuid4().hex}")


_BATCH_HEX = re.compile(r"batch_([0-9a-f]{32})")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def batch_uuid(batch_id: str) -> str:
    """A batch id in the UUID form Together's spec gives batch ids: the same
    128 bits, hyphenated (`batch_<32 hex>` <-> `8-4-4-4-12`). An id of any
    other shape has no UUID form and is shown as it is."""
    match = _BATCH_HEX.fullmatch(batch_id)
    return str(uuid.UUID(hex=match.group(1))) if match else batch_id


_MESSAGE_BATCH = re.compile(r"msgbatch_([0-9a-f]{32})")


def message_batch_id(batch_id: str) -> str:
    """A batch id in Anthropic's form, `msgbatch_<32 hex>`: the same 128
    bits. An id of any other shape is shown as it is."""
    match = _BATCH_HEX.fullmatch(batch_id)
    return f"msgbatch_{match.group(1)}" if match else batch_id


def batch_id_from(text: str) -> str:
    """The stored id for a batch id in any form; `batch_uuid` and
    `message_batch_id` undone."""
    if _UUID.fullmatch(text):
        return f"batch_{uuid.UUID(text).hex}"
    if match := _MESSAGE_BATCH.fullmatch(text):
        return f"batch_{match.group(1)}"
    return text


def new_upload_id() -> UploadId:
    return UploadId(f"upload_{uuid.uuid4().hex}")


def new_part_id() -> PartId:
    return PartId(f"part_{uuid.uuid4().hex}")


def new_worker_id() -> WorkerId:
    return WorkerId(f"worker_{secrets.token_hex(6)}")


#: Result-line ids need to be unique, not secret: a fast PRNG seeded from the
#: OS (SystemRandom costs a system call per id, on the hottest path).
_fast = random.Random(secrets.randbits(128))


def new_request_id() -> str:
    """An id for one result line; random, so a re-run line never collides."""
    return f"batch_req_{_fast.getrandbits(96):024x}"


def new_event_id() -> str:
    """A webhook event's id, also the `webhook-id` of each of its attempts."""
    return f"evt_{uuid.uuid4().hex}"


def new_webhook_id() -> str:
    return f"we_{secrets.token_hex(12)}"
