"""Drives Azure Blob storage with the official Python SDK, for tests/azure.rs.

    client.py CONNECTION_STRING steps   run the steps below, print JSON
    client.py CONNECTION_STRING dump    every container's blobs and contents

steps: create container "films"; upload a.txt and b.txt; list; download
a.txt; overwrite a.txt; copy a.txt to c.txt (within the account); delete
b.txt; list again. Each result goes into the JSON printed at the end.
    client.py CONNECTION_STRING create NAME     create a container
    client.py CONNECTION_STRING put NAME TEXT   upload one more blob
"""
import json
import sys
import time

from azure.storage.blob import BlobServiceClient

conn, what = sys.argv[1], sys.argv[2]
service = BlobServiceClient.from_connection_string(conn, retry_total=0)


def names(container):
    return sorted(b.name for b in container.list_blobs())


if what == "steps":
    out = {}
    films = service.create_container("films")
    films.upload_blob("a.txt", b"alpha")
    films.upload_blob("b.txt", b"beta")
    out["listed"] = names(films)
    out["downloaded"] = films.download_blob("a.txt").readall().decode()
    films.upload_blob("a.txt", b"alpha again", overwrite=True)
    copy = films.get_blob_client("c.txt")
    props = copy.start_copy_from_url(films.get_blob_client("a.txt").url)
    for _ in range(50):
        if copy.get_blob_properties().copy.status == "success":
            break
        time.sleep(0.1)
    out["copy_status"] = copy.get_blob_properties().copy.status
    films.delete_blob("b.txt")
    out["listed_after"] = names(films)
    out["c"] = films.download_blob("c.txt").readall().decode()
    out["containers"] = sorted(c.name for c in service.list_containers())
    print(json.dumps(out))
elif what == "create":
    service.create_container(sys.argv[3])
    print(json.dumps(sys.argv[3]))
elif what == "put":
    films = service.get_container_client("films")
    films.upload_blob(sys.argv[3], sys.argv[4].encode(), overwrite=True)
    print(json.dumps(names(films)))
elif what == "dump":
    dump = {}
    for c in service.list_containers():
        client = service.get_container_client(c.name)
        dump[c.name] = {
            b: client.download_blob(b).readall().decode() for b in names(client)
        }
    print(json.dumps(dump, sort_keys=True))
else:
    sys.exit("unknown command " + what)
