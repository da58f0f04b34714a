"""A small OData-shaped service for tests/odata.rs (Python's standard
library only).

    backend.py PORT

It serves one entity set, Movies, under /odata/, and names itself by
absolute URIs as OData services do: the root is http://127.0.0.1:PORT/odata.

- GET /odata/Movies, /odata/Movies(N): JSON (OData v4: @odata.context,
  @odata.id, and Director@odata.navigationLink), or Atom XML with
  $format=atom (<id>, <link href>, xml:base).
- POST /odata/Movies: JSON with Title and Director@odata.bind, an absolute
  URI that must be under this service's own root (else 400, as a real
  service refuses a foreign entity); 201 with Location, OData-EntityId and
  the entity.
- GET /_state: what is stored, without any URI (the same on every
  replica).
"""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
ROOT = f"http://127.0.0.1:{PORT}/odata"
movies = {}


def entity(n):
    m = movies[n]
    return {
        "@odata.context": f"{ROOT}/$metadata#Movies/$entity",
        "@odata.id": f"{ROOT}/Movies({n})",
        "ID": n,
        "Title": m["Title"],
        "Director@odata.navigationLink": f"{ROOT}/People({m['Director']})",
    }


def atom(ns):
    entries = "".join(
        f'<entry><id>{ROOT}/Movies({n})</id><title>{movies[n]["Title"]}</title>'
        f'<link rel="edit" href="{ROOT}/Movies({n})"/></entry>'
        for n in ns
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xml:base="{ROOT}/" '
        f'xmlns="http://www.w3.org/2005/Atom"><id>{ROOT}/Movies</id>{entries}</feed>'
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, kind="application/json", headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/_state":
            return self.send(200, json.dumps(movies, sort_keys=True))
        if path == "/odata/Movies":
            if "$format=atom" in query:
                return self.send(200, atom(sorted(movies)), "application/atom+xml")
            body = {
                "@odata.context": f"{ROOT}/$metadata#Movies",
                "value": [entity(n) for n in sorted(movies)],
            }
            return self.send(200, json.dumps(body))
        m = re.fullmatch(r"/odata/Movies\((\d+)\)", path)
        if m and int(m.group(1)) in movies:
            return self.send(200, json.dumps(entity(int(m.group(1)))))
        # Anything else under the root answers, so that probes see a service.
        return self.send(404, json.dumps({"error": {"message": "no such resource"}}))

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/odata/Movies":
            return self.send(404, "{}")
        bind = body.get("Director@odata.bind", "")
        m = re.fullmatch(re.escape(ROOT) + r"/People\((\d+)\)", bind)
        if not m:
            message = f"Director@odata.bind {bind!r} is not an entity of this service"
            return self.send(400, json.dumps({"error": {"message": message}}))
        n = len(movies) + 1
        movies[n] = {"Title": body.get("Title", ""), "Director": int(m.group(1))}
        where = f"{ROOT}/Movies({n})"
        return self.send(
            201,
            json.dumps(entity(n)),
            headers=[("Location", where), ("OData-EntityId", where)],
        )


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
