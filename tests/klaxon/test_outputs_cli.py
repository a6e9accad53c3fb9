"""`klaxon outputs`: the outputs file is checked at start, and credentials are never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

SECRET = "hec-token-9f8e7d6c"
#: This environment without Kafka or Klaxon settings (the test gives what it needs).
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KLAXON_"))}


def klaxon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klaxon", *args],
        capture_output=True,
        text=True,
        env={**BASE_ENV, **(env or {})},
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outputs.yml"
    path.write_text(text)
    return path


def test_check_describes_each_output_without_its_token(tmp_path: Path) -> None:
    """--check prints name, type, format, filters; a token is 'set', never shown."""
    cfg = write(
        tmp_path,
        """
outputs:
  - name: splunk
    type: splunk_hec
    url: https://splunk.example:8088/services/collector/event
    token_env: HEC_TOKEN
    min_severity: medium
  - name: sidekick
    type: webhook
    url: http://falcosidekick:2801/
    shape: falco
    namespaces: [prod-*]
""",
    )
    done = klaxon("outputs", "--config", str(cfg), "--check", env={"HEC_TOKEN": SECRET})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "splunk: splunk_hec, format splunk_hec, severity >= medium; batches of 100, token set",
        "sidekick: webhook, format native (falco shape), severity >= informational; "
        "namespaces prod-*; batches of 100, token none",
    ]
    assert SECRET not in done.stdout + done.stderr


def test_a_misspelled_key_or_a_missing_credential_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 naming the file and the key, or the variable that is not set."""
    cfg = write(
        tmp_path, "outputs:\n  - {name: a, type: webhook, url: 'http://x', min_severty: high}\n"
    )
    done = klaxon("outputs", "--config", str(cfg), "--check")
    assert done.returncode == 2
    assert f"{cfg}: outputs.0.min_severty: Extra inputs are not permitted" in done.stderr
    cfg = write(tmp_path, "outputs:\n  - {name: a, type: slack, url_env: SLACK_URL}\n")
    done = klaxon("outputs", "--config", str(cfg), "--check")
    assert done.returncode == 2
    assert "output a: url: environment variable SLACK_URL is not set" in done.stderr
    cfg = write(tmp_path, "outputs:\n  - {name: a, type: pager, url: 'http://x'}\n")
    done = klaxon("outputs", "--config", str(cfg), "--check")
    assert done.returncode == 2 and "unknown type 'pager'" in done.stderr


def test_offline_replay_prints_alerts_in_a_format(tmp_path: Path) -> None:
    """``klaxon replay --offline --format ecs``: one valid ECS alert document per line; an
    unknown format is a usage error listing the formats."""
    from replay.sample import SAMPLE_PATH
    from tests.pipeline.sinks.test_formats import check_ecs

    done = klaxon("replay", "--offline", str(SAMPLE_PATH), "--format", "ecs")
    assert done.returncode == 0, done.stderr
    docs = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) >= 15  # the sample's alerts after grouping (19 at the defaults)
    for doc in docs:
        check_ecs(doc)
    done = klaxon("replay", "--offline", str(SAMPLE_PATH), "--format", "cef")
    assert done.returncode == 2
    assert "unknown format 'cef' (one of native, ocsf, ecs, splunk_hec)" in done.stderr


def test_the_readme_example_outputs_file_is_valid(tmp_path: Path) -> None:
    """The README's outputs.yml loads, builds every output kind, and `--check` accepts it."""
    import re

    from pipeline.outputs import OUTPUTS
    from pipeline.outputs.config import load_outputs

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    body = re.search(r"^```yaml file=outputs.yml\n(.*?)^```", readme, re.M | re.S)
    assert body is not None
    cfg = write(tmp_path, body.group(1))
    (tmp_path / "es-key").write_text("es-api-key")
    text = cfg.read_text().replace("/run/secrets/es-api-key", str(tmp_path / "es-key"))
    cfg.write_text(text)
    file = load_outputs(cfg)
    assert {o.type for o in file.outputs} == set(OUTPUTS)
    env = {"KLAXON_SPLUNK_HEC_TOKEN": SECRET, "KLAXON_SLACK_WEBHOOK_URL": "https://hooks.example/x"}
    done = klaxon("outputs", "--config", str(cfg), "--check", env=env)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 4 and SECRET not in done.stdout
