"""Signs requests the way the official Azure Storage Python SDK does.

Reads a JSON list of requests on stdin ({method, url, headers, account,
key}) and writes the Authorization header the SDK's SharedKey policy gives
each, as a JSON list. The vectors for tests/azure.rs: computed by the
SDK, not by ordo's own code.
"""
import json
import sys

from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

out = []
for r in json.load(sys.stdin):
    req = HttpRequest(r["method"], r["url"], headers=dict(r["headers"]))
    policy = SharedKeyCredentialPolicy(r["account"], r["key"])
    policy.on_request(PipelineRequest(req, PipelineContext(None)))
    out.append(req.headers["Authorization"])
json.dump(out, sys.stdout)
