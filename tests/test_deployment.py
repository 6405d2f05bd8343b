"""The deployment files agree with the code: docker-compose.yml, the Dockerfile, the newcomer
scripts and the README name what settings.py reads, and production settings pass Django's
deploy checks. Docker cannot run here, so the compose file is checked by its shape."""

import ast
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "worker", "beat")


def settings_env_vars() -> set[str]:
    """Every environment variable election_monitor/settings.py reads, found in its source."""
    tree = ast.parse((ROOT / "election_monitor" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = ast.unparse(node.func)
            if func in {"os.environ.get", "os.getenv", "env_bool", "env_list"}:
                names.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_words(service: dict) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}}
    env.update(overrides)
    return env


# --- settings ------------------------------------------------------------------------------


def test_settings_env_var_scan_finds_the_switches():
    # Guards the scanner the checks below rely on: if it found nothing they would pass vacuously.
    assert {
        "DEBUG",
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
    } <= settings_env_vars()


def test_production_settings_pass_the_deploy_check_without_warnings():
    env = production_env(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="metrics.example.org")
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_settings_refuse_to_start_without_secret_key_when_debug_is_off():
    result = run_manage("check", env=production_env(DEBUG="0", ALLOWED_HOSTS="metrics.example.org"))
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_readme_documents_every_environment_variable():
    docs = (ROOT / "README.md").read_text()
    if (ROOT / "docs" / "CONFIGURATION.md").exists():
        docs += (ROOT / "docs" / "CONFIGURATION.md").read_text()
    undocumented = sorted(name for name in settings_env_vars() if f"`{name}`" not in docs)
    assert undocumented == [], "settings.py reads these; add them to the README's configuration table"


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_runs_the_production_shape(services):
    assert set(services) >= {"postgres", "redis", *APP_SERVICES}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    for name in APP_SERVICES:
        assert services[name]["build"] == ".", name


def test_compose_web_serves_the_wsgi_app_with_gunicorn(services):
    words = command_words(services["web"])
    assert words[0] == "gunicorn"
    assert "election_monitor.wsgi:application" in words
    assert settings.WSGI_APPLICATION == "election_monitor.wsgi.application"
    assert (ROOT / "election_monitor" / "wsgi.py").exists()


def test_compose_worker_and_beat_run_celery_with_the_database_scheduler(services):
    assert command_words(services["worker"])[:4] == ["celery", "-A", "election_monitor", "worker"]
    beat = command_words(services["beat"])
    assert beat[:4] == ["celery", "-A", "election_monitor", "beat"]
    scheduler = beat[beat.index("--scheduler") + 1]
    assert scheduler == "django_celery_beat.schedulers:DatabaseScheduler" == settings.CELERY_BEAT_SCHEDULER


def test_compose_migrates_once_before_the_app_starts(services):
    assert command_words(services["migrate"])[-3:] == ["manage.py", "migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_publishes_the_web_port_on_localhost_only_by_default(services):
    (mapping,) = services["web"]["ports"]
    match = re.fullmatch(r"\$\{WEB_BIND:-([^}]+)\}:\$\{WEB_PORT:-(\d+)\}:8000", mapping)
    assert match, mapping
    assert match.group(1) == "127.0.0.1"
    # The web service trusts X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER) and, for the
    # throttle, one proxy's X-Forwarded-For: only the host's proxy may reach it.
    assert services["web"]["environment"]["TRUSTED_PROXY_COUNT"] == "${TRUSTED_PROXY_COUNT:-1}"
    for name in ("postgres", "redis", "worker", "beat"):
        assert "ports" not in services[name], name


def test_compose_services_have_healthchecks(services):
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert "ping" in str(services["redis"]["healthcheck"]["test"])


def test_compose_app_env_is_production_and_names_only_what_settings_read(services):
    known = settings_env_vars()
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert set(env) <= known, f"{name} sets variables settings.py never reads: {set(env) - known}"
        assert env["DEBUG"] == "0"
        # The secret comes from the deployer's environment, never a default in the file.
        assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", env["SECRET_KEY"])
        assert env["ALLOWED_HOSTS"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert "@postgres:5432/" in env["DATABASE_URL"]
        cache, broker = env["REDIS_URL"], env["CELERY_BROKER_URL"]
        assert cache.startswith("redis://redis:6379/")
        assert broker.startswith("redis://redis:6379/")
        assert cache != broker, "cache and broker must use separate Redis databases"


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_a_non_root_python_311_image():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "pip install -r /app/requirements.txt" in runs
    assert "manage.py collectstatic --noinput" in runs
    users = [arg for op, arg in instructions if op == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    ops = [op for op, _ in instructions]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "USER must follow the last RUN"


def test_dockerfile_copies_files_that_exist():
    copies = [arg.split()[:-1] for op, arg in dockerfile_instructions() if op == "COPY"]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    cmd = next(arg for op, arg in dockerfile_instructions() if op == "CMD")
    assert "election_monitor.wsgi:application" in cmd


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "db.sqlite3", "staticfiles"} <= ignored


# --- the newcomer's two commands and CI ----------------------------------------------------------


@pytest.mark.parametrize("script", ["scripts/demo", "scripts/test", ".ci/run"])
def test_scripts_are_executable_bash_that_parses(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in path.read_text()
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/demo" in readme
    assert "./scripts/test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci
    assert '-m "not worker"' in ci
