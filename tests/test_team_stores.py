"""The team setup of the README, run on 127.0.0.1 with real server software: PostgreSQL (Debian's packages) and
moto's S3-compatible server as the shared stores; `mlflow server` on PostgreSQL with its artifacts in S3 behind
MLflow's basic-auth app (credentials from the environment); a DVC remote on S3; a Prefect server on PostgreSQL
running a scheduled deployment. Each server starts once for this module and stops even when a test fails.

Without PostgreSQL (not installed, or no non-root user to run it) the tests that need it are skipped with the
reason; nothing else is skipped."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from vt_models.io import mlflow as tracking
from vt_models.io.dvc import data_hash, push, version_path
from vt_models.promotion import CHAMPION

from .conftest import BIN, start_mlflow, stop
from .gate_models import gate_project, run_gate
from .project import make_project, run
from .servers import Postgres, postgres, prefect_server, s3_server, serve_until_scheduled_run, why_no_postgres
from .videos import good_mp4

BUCKET = "vt-team"
NAME = "vt-team-classifier"  # this module's own registered model


def bucket_md5s(endpoint: str, prefix: str) -> dict[str, str]:
    """Every object under ``prefix`` in the team bucket, read back: key -> MD5 of its bytes."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {
        o["Key"]: hashlib.md5(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()).hexdigest()
        for page in pages
        for o in page.get("Contents", [])
    }


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server with the team bucket; the AWS credentials are in the environment, as a team member's."""
    import boto3

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "vt-team")
        env.setenv("AWS_SECRET_ACCESS_KEY", secrets.token_urlsafe(16))
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield endpoint


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    """PostgreSQL, its password in ``PGPASSWORD`` (read by libpq, psycopg2 and asyncpg): skipped, saying why, only
    where it cannot run at all."""
    reason = why_no_postgres()
    if reason:
        print(f"PostgreSQL tests skipped: {reason}")
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PGPASSWORD", secrets.token_urlsafe(16))
        with postgres() as server:
            yield server


@dataclass(frozen=True)
class TeamMlflow:
    url: str
    username: str
    password: str


@pytest.fixture(scope="module")
def team_mlflow(pg: Postgres, s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamMlflow]:
    """`mlflow server --app-name basic-auth` on PostgreSQL (runs and users) with its artifacts in S3. The admin
    comes from the environment (MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD), the database password too (PGPASSWORD):
    no credential on the command line or in the config file."""
    root = tmp_path_factory.mktemp("team-mlflow")
    pg.create_db("mlflow")
    pg.create_db("mlflow_auth")
    config = root / "basic_auth.ini"
    # the auth cache: a request otherwise pays a PBKDF2 check of the password, and logging a model is ~100 requests
    config.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {pg.uri('mlflow_auth')}\nauth_cache_ttl_seconds = 60\n"
    )
    user, password = "vt-admin", secrets.token_urlsafe(18)
    env = dict(
        os.environ,
        MLFLOW_S3_ENDPOINT_URL=s3,
        MLFLOW_AUTH_CONFIG_PATH=str(config),
        MLFLOW_AUTH_ADMIN_USERNAME=user,
        MLFLOW_AUTH_ADMIN_PASSWORD=password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
    )
    proc, url = start_mlflow(root, pg.uri("mlflow"), f"s3://{BUCKET}/mlflow", ["--app-name", "basic-auth"], env)
    yield TeamMlflow(url, user, password)
    stop(proc)


@pytest.fixture
def team_member(team_mlflow: TeamMlflow, monkeypatch: pytest.MonkeyPatch) -> TeamMlflow:
    """This process and its children use the team server with the admin's credentials from the environment."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_mlflow.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team_mlflow.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_mlflow.password)
    mlflow.set_tracking_uri(team_mlflow.url)
    return team_mlflow


def vt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A `vt` command as a user runs it, with debug logging (-v): what it prints is what could leak."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "vt"), "-v", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow  # with the module's PostgreSQL, S3 and MLflow servers: about 80 s on 2 busy cores
def test_mlflow_on_postgres_and_s3_registers_promotes_and_serves_the_champion(
    team_member: TeamMlflow, pg: Postgres, s3: str, tmp_path: Path
) -> None:
    import psycopg2

    project = gate_project(tmp_path, "mini_resnet_tsm")  # 1 MB of weights: the registry is under test
    # one gate decision: the alias moves between versions are the rollback test's (on sqlite); here the stores
    decision = run_gate(project, 0.6, NAME)
    assert decision.promoted, decision.reason
    version = decision.candidate_version
    assert tracking.current_alias(NAME, CHAMPION) == version
    assert [(m.from_version, m.to_version) for m in tracking.alias_history(NAME, CHAMPION)] == [(None, version)]

    # the registry lives in PostgreSQL ...
    with psycopg2.connect(pg.uri("mlflow")) as db, db.cursor() as cur:
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (NAME,))
        aliases = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM runs")
        (runs,) = cur.fetchone()
    assert aliases == {CHAMPION: int(version), "challenger": int(version)}
    assert runs >= 1
    # ... and the models' files in S3, byte for byte the checkpoint that was gated
    stored = {k: md5 for k, md5 in bucket_md5s(s3, "mlflow/").items() if k.endswith("/checkpoint.pt")}
    assert len(stored) == 1, sorted(stored)
    assert set(stored.values()) == {hashlib.md5((project["run_dir"] / "best.pt").read_bytes()).hexdigest()}

    # the champion loads from there, through the server, with `vt predict`; the password is never printed
    res = vt("predict", "--model", f"models:/{NAME}@champion", "--json", str(project["example"]), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads(res.stdout.splitlines()[-1])
    assert record["top_k"][0]["label"] in {"a", "b", "c"}, record
    assert team_member.password not in res.stdout + res.stderr


@pytest.mark.slow  # the servers, when it runs first
def test_basic_auth_refuses_a_client_without_credentials_and_serves_one_with_them(
    team_mlflow: TeamMlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_mlflow.url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    mlflow.set_tracking_uri(team_mlflow.url)
    with pytest.raises(mlflow.exceptions.MlflowException, match="401"):
        tracking.ensure_experiment("vt-team-auth")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team_mlflow.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + team_mlflow.password)
    with pytest.raises(mlflow.exceptions.MlflowException, match="401"):
        tracking.ensure_experiment("vt-team-auth")

    # with the credentials in the environment the same code logs a run
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_mlflow.password)
    with tracking.start_run("vt-team-auth", "with credentials", {"team": "yes"}, system_metrics=False) as active:
        tracking.log_params({"train": {"lr": 0.01}})
        logger = tracking.MlflowLogger(active.info.run_id)
        logger.log_metrics({"loss": 0.5}, step=1)
        logger.flush()
    stored = mlflow.MlflowClient().get_run(active.info.run_id)
    assert stored.data.params == {"train.lr": "0.01"} and stored.data.metrics == {"loss": 0.5}
    assert stored.info.user_id == team_mlflow.username  # the server recorded who logged it

    # a password written into the tracking URI also works, and the product shows the URI without it
    host = team_mlflow.url.removeprefix("http://")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{team_mlflow.username}:{team_mlflow.password}@{host}")
    missing = vt("predict", "--model", "models:/vt-team-no-such-model@champion", str(tmp_path), cwd=tmp_path)
    assert missing.returncode != 0 and "vt-team-no-such-model" in missing.stderr, missing.stderr[-3000:]
    # the server answered the lookup itself (404: no such model), not 401 (a port may contain "401")
    assert '" 404 ' in missing.stderr and '" 401 ' not in missing.stderr, "the URI's credentials were not used"
    assert f"tracking URI http://{team_mlflow.username}:***@{host}" in missing.stderr, missing.stderr[-3000:]
    assert team_mlflow.password not in missing.stdout + missing.stderr


def test_redacted_hides_only_a_password() -> None:
    assert tracking.redacted("http://u:pw@h:5000/x") == "http://u:***@h:5000/x"
    assert tracking.redacted("postgresql://vt:p@ss@127.0.0.1:5432/db") == "postgresql://vt:***@127.0.0.1:5432/db"
    for plain in ("http://h:5000", "http://u@h", "sqlite:////tmp/a@b:c/mlflow.db", "databricks"):
        assert tracking.redacted(plain) == plain


def test_dvc_remote_on_s3_push_drop_cache_pull_same_bytes(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_project(tmp_path / "repo")
    dvc = str(BIN / "dvc")
    run(repo, dvc, "remote", "add", "-d", "team", f"s3://{BUCKET}/dvc")
    run(repo, dvc, "remote", "modify", "team", "endpointurl", s3)  # credentials: the AWS_* environment
    data = repo / "data" / "team"
    for i, cls in enumerate(("left", "right")):
        good_mp4(data / cls / f"scene{i:03d}_c00.mp4", n_frames=10, seed=i)
    (data / "notes.bin").write_bytes(os.urandom(4096))
    before = {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}
    monkeypatch.chdir(repo)

    assert version_path("data/team") == "dvc add data/team"
    recorded = data_hash("data/team")
    assert recorded and recorded.endswith(".dir")
    push()
    on_s3 = bucket_md5s(s3, "dvc/")
    # content-addressed: one object per file plus the folder's listing
    assert len(on_s3) == len(before) + 1, sorted(on_s3)
    assert {hashlib.md5(b).hexdigest() for b in before.values()} <= set(on_s3.values())

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(data)
    run(repo, dvc, "pull", "data/team.dvc")  # the pipeline's stages never ran: only this data
    after = {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}
    assert after == before
    assert data_hash("data/team") == recorded
    assert json.loads(run(repo, dvc, "status", "-c", "--json", "data/team.dvc").stdout or "{}") == {}


@pytest.mark.slow
def test_prefect_server_on_postgres_runs_a_scheduled_deployment(
    pg: Postgres, tiny_project: Path, tmp_path: Path
) -> None:
    import psycopg2

    pg.create_db("prefect")
    env = dict(os.environ, PREFECT_API_DATABASE_CONNECTION_URL=pg.uri("prefect", "postgresql+asyncpg"))
    with prefect_server(tmp_path, env) as client_env:
        log = serve_until_scheduled_run(tiny_project, client_env, tmp_path / "serve.log")
    assert "started a first run of preprocess/vt-preprocess now" in log
    assert json.loads(Path("data/splits/target.json").read_text())["classes"]
    # the server kept its runs in PostgreSQL, not in a sqlite file of its own
    with psycopg2.connect(pg.uri("prefect")) as db, db.cursor() as cur:
        cur.execute("SELECT count(*) FROM flow_run WHERE auto_scheduled AND state_type = 'COMPLETED'")
        (scheduled,) = cur.fetchone()
    assert scheduled >= 1
    assert not list((tmp_path / "prefect-home").rglob("*.db")), "Prefect used sqlite"
