"""A real S3 API on loopback for the object-storage tests: moto in server mode, started once per session.

``lake_root`` is the parametrised root of a test's lake: ``local`` (a temp folder) and ``s3`` (a fresh
prefix in the moto bucket), so one test body runs on both; the ``s3`` cases are marked ``slow`` (the fast tier
runs the local ones). The fixtures are registered in conftest.py for every test module, and only there: a test
module importing them gets a second session server (its own objects) and points the AWS variables at it. The
AWS settings are the standard variables (``AWS_ENDPOINT_URL`` included), read by botocore in this process and in
subprocesses (dagster CLI runs).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import botocore.exceptions
import pytest

BUCKET = "cg-lake-tests"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-do-not-log"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server (``moto_server``) in a process of its own on a free loopback port, with the AWS
    variables pointing at it for the session; yields the endpoint URL. A process of its own, as a real store
    is, not moto's ``ThreadedMotoServer`` in the test process, whose request handling shares the test's GIL
    (measured: about 10% less wall time for an S3 case, on a busy machine). The variables are restored and the
    server stopped after the session; its output goes to a file in the session's temp folder."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto_server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = {
        **DUMMY_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        import boto3

        client = boto3.client("s3")
        deadline = time.monotonic() + 30
        while True:  # the server answers once it has imported moto: a second or two
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except botocore.exceptions.EndpointConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log.name}") from None
                time.sleep(0.1)
        yield settings["AWS_ENDPOINT_URL"]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_root(s3_server) -> str:
    """A fresh ``s3://`` lake root (an empty prefix of the moto bucket)."""
    return f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def lake_root(request, tmp_path) -> str:
    """The root of the test's lake: a local folder, then an ``s3://`` prefix on moto (a ``slow`` case)."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_root")


def write_like_a_tool(lake, path, table, **options) -> None:
    """Write ``table`` to the lake file ``path`` as another tool would (pyarrow through the store's filesystem,
    ``options`` as ``pq.write_table``'s): not through the ``Lake``, so without its preconditions (lib/storage.py,
    "Fencing")."""
    import pyarrow.parquet as pq

    where, filesystem = lake.storage.arrow(path)
    pq.write_table(table, where, filesystem=filesystem, **options)


def copy_lake(lake, root):
    """A copy of every file of ``lake`` at ``root`` (same store); returns its ``Lake``."""
    from cg_dagster.lib.lake import Lake

    if lake.storage.remote:
        lake.storage.fs.copy(lake.root.path, root.split("://", 1)[1], recursive=True)
    else:
        shutil.copytree(lake.root, root)
    return Lake(root)


def delete_tree(lake, folder) -> None:
    """Delete every file of ``lake`` under ``folder`` (its root: all), as a person would: not through the ``Lake``."""
    if lake.storage.remote:
        lake.storage.fs.rm(folder.path, recursive=True)
    else:
        shutil.rmtree(folder)
