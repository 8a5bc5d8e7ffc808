"""A real S3-compatible server (moto's server mode) on 127.0.0.1 for the object-storage tests, shared by
tests/test_remote.py and tests/test_attest_remote.py: ``endpoint`` and ``s3`` fixtures (bind them in
the test module), ``upload`` a local folder under a prefix, a user allowed to list but not to read, and
the incident's tiny model."""

import json
import logging
import os

import pytest
import torch
from conftest import bert_config, save

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1, for this module; stopped at the end."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # its request log is not the test's output
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch):
    """An fsspec S3 filesystem on the test server, with dummy credentials in the environment (the only
    place initcheck reads them from), and a fresh bucket name per test."""
    import s3fs

    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    s3.n = getattr(s3, "n", 0) + 1
    bucket = f"bkt{os.getpid()}-{s3.n}"
    fs.mkdir(bucket)
    fs.bucket = bucket
    return fs


def upload(fs, folder, prefix):
    """Every file under ``folder`` as an object under ``prefix`` (``bucket/path``), by its relative name."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def list_only_user(fs) -> dict:
    """A new IAM user on the server allowed ``s3:ListBucket`` only: its access key (``AccessKeyId``,
    ``SecretAccessKey``). Denials are enforced once ``moto.settings.INITIAL_NO_AUTH_ACTION_COUNT`` is 0."""
    import boto3

    iam = boto3.client("iam", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    user = f"lister{fs.bucket}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(UserName=user, PolicyName="list-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "*"}]}))
    return key


def zero_head_model(folder, **save_kw):
    """The incident: a BERT classifier whose head is zero, saved as a training script saves it."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_labels=3))
    with torch.no_grad():
        model.classifier.weight.zero_()
    return save(model, folder, **save_kw)
