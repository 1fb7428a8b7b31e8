"""A real S3 API on loopback for the object-storage tests: moto in server mode, started once per session.

``lake_root`` is the parametrised root of a test's lake: ``local`` (a temp folder) and ``s3`` (a fresh
prefix in the moto bucket), so one test body runs on both. The AWS settings are the standard variables
(``AWS_ENDPOINT_URL`` included), read by botocore in this process and in subprocesses (dagster CLI runs).
"""

import os
import uuid

import pytest

BUCKET = "cg-lake-tests"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-do-not-log"}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 on a free loopback port, with the AWS variables pointing at it for the session; yields the
    endpoint URL. The variables are restored after the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {
        **DUMMY_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield settings["AWS_ENDPOINT_URL"]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3_root(s3_server) -> str:
    """A fresh ``s3://`` lake root (an empty prefix of the moto bucket)."""
    return f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
def lake_root(request, tmp_path) -> str:
    """The root of the test's lake: a local folder, then an ``s3://`` prefix on moto."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_root")
