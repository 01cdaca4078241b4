"""`secretbridge check` refuses what Init refuses, and what daprd itself would refuse or skip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from secretbridge.tools.check import check_paths

from tests.support import Bridge

ROOT = Path(__file__).resolve().parent.parent


def component(name: str, metadata: dict[str, object], kind: str = "Component",
              kind_type: str = "secretstores.secretbridge") -> str:
    """A Component document; a value that is a dict is written as it is (e.g. a secretKeyRef)."""
    items = []
    for key, value in metadata.items():
        if isinstance(value, dict):
            items.append(f"    - name: {key}\n      " + "\n      ".join(
                f"{k}: {json.dumps(v)}" for k, v in value.items()))
        else:
            items.append(f"    - name: {key}\n      value: {json.dumps(value)}")
    return textwrap.dedent(f"""\
        apiVersion: dapr.io/v1alpha1
        kind: {kind}
        metadata:
          name: {name}
        spec:
          type: {kind_type}
          version: v1
          metadata:
        """) + "\n".join(items) + "\n"


def run_check(*paths: Path, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secretbridge", "check", *flags, *map(str, paths)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )


# Components Init refuses for a rule across properties (no single property's kind is wrong).
REFUSED = {
    "no-vault": ({"backend": "keyvault"}, "vaultName"),
    "two-vaults": ({"backend": "keyvault", "vaultName": "kv-a", "vaultUri": "https://127.0.0.1:1"}, "vaultName"),
    "bad-prefix": ({"backend": "keyvault", "vaultName": "kv-prod", "keyPrefix": "bad prefix!"}, "keyPrefix"),
    "challenge-on-azure": (
        {"backend": "keyvault", "vaultName": "kv-prod", "disableChallengeResourceVerification": "true"},
        "disableChallengeResourceVerification",
    ),
    "cloud-mismatch": (
        {"backend": "keyvault", "vaultName": "kv.vault.azure.cn", "azureEnvironment": "AzurePublicCloud"},
        "vaultName",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_check_refuses_each_component_init_refuses(name: str, tmp_path: Path, bridge: Bridge) -> None:
    metadata, prop = REFUSED[name]
    with pytest.raises(grpc.RpcError) as refused:
        bridge.init({k: str(v) for k, v in metadata.items()}, instance=name)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (tmp_path / "c.yaml").write_text(component(name, metadata))
    [finding] = check_paths([tmp_path])
    assert [p.prop for p in finding.errors] == [prop], finding.errors
    assert finding.errors[0].text in refused.value.details()


def test_every_problem_of_a_component_is_reported_on_its_own_line(tmp_path: Path) -> None:
    (tmp_path / "vault.yaml").write_text(component("vault", {
        "backend": "keyvault",
        "keyPrefix": "bad prefix!",
        "cacheTTL": "soon",
        "maxRetries": "many",
        "negativeCacheTTL": "-",
        "staleWait": "a moment",
    }))
    run = run_check(tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stdout.splitlines() if "error:" in line]
    where = f"{tmp_path / 'vault.yaml'}: vault"
    for prop in ("vaultName", "keyPrefix", "cacheTTL", "maxRetries", "negativeCacheTTL", "staleWait"):
        assert any(f"{where} [{prop}]: " in line for line in errors), (prop, run.stdout)
    assert len(errors) == 6
    assert run.stdout.splitlines()[0] == f"FAIL  {where}"


def test_folders_are_recursed(tmp_path: Path) -> None:
    deep = tmp_path / "prod" / "eu"
    deep.mkdir(parents=True)
    (deep / "vault.yml").write_text(component("deep", {"backend": "keyvault", "vaultName": "kv-prod"}))
    (tmp_path / "top.yaml").write_text(component("top", {"backend": "env"}))
    (tmp_path / "notes.txt").write_text("kind: Component")
    assert sorted(f.component for f in check_paths([tmp_path])) == ["deep", "top"]


def test_two_components_with_one_name_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(component("secrets", {"backend": "env"}))
    (tmp_path / "b.yaml").write_text(component("secrets", {"backend": "env", "prefix": "APP_"}))
    (tmp_path / "c.yaml").write_text(component("other", {"backend": "env"}))
    run = run_check(tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml")
    assert run.returncode == 1
    assert f"{tmp_path / 'b.yaml'}: secrets [metadata.name]: another Component is named 'secrets'" in run.stdout
    assert str(tmp_path / "a.yaml") in run.stdout.split("[metadata.name]")[1]
    assert f"ok    {tmp_path / 'a.yaml'}: secrets" in run.stdout
    assert f"ok    {tmp_path / 'c.yaml'}: other" in run.stdout


def test_a_name_shared_with_a_component_of_another_type_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(component("shared", {"redisHost": "x"}, kind_type="state.redis"))
    (tmp_path / "b.yaml").write_text(component("shared", {"backend": "env"}))
    [finding] = check_paths([tmp_path])
    assert [p.prop for p in finding.errors] == ["metadata.name"]


@pytest.mark.parametrize(
    ("kind", "kind_type", "prop", "hint"),
    [
        ("Compnent", "secretstores.secretbridge", "kind", "did you mean 'Component'?"),
        ("component", "secretstores.secretbridge", "kind", "did you mean 'Component'?"),
        ("Component", "secretstore.secretbridge", "spec.type", "did you mean 'secretstores.secretbridge'?"),
        ("Component", "secretstores.secretbrige", "spec.type", "did you mean 'secretstores.secretbridge'?"),
    ],
)
def test_a_misspelled_kind_or_type_is_an_error_with_a_suggestion(
    kind: str, kind_type: str, prop: str, hint: str, tmp_path: Path
) -> None:
    (tmp_path / "c.yaml").write_text(component("vault", {"backend": "env"}, kind=kind, kind_type=kind_type))
    run = run_check(tmp_path)
    assert run.returncode == 1, run.stdout
    assert f"vault [{prop}]: " in run.stdout and hint in run.stdout


def test_other_kinds_and_types_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        component("kv", {"vaultName": "x"}, kind_type="secretstores.azure.keyvault")
        + "---\n" + component("cfg", {}, kind="Configuration", kind_type="x")
        + "---\n" + component("mine", {"backend": "env"})
    )
    assert [(f.component, f.errors) for f in check_paths([tmp_path])] == [("mine", [])]


def test_secret_key_ref_properties_count_as_given_and_are_not_parsed(tmp_path: Path) -> None:
    ref = {"secretKeyRef": {"name": "kv-settings", "key": "value"}}
    (tmp_path / "c.yaml").write_text(
        # The vault's name, a duration and a required path all come from another store.
        component("vault", {"backend": "keyvault", "vaultName": ref, "cacheTTL": ref, "keyPrefix": ref})
        + "---\n" + component("files", {"backend": "file", "secretsFile": ref, "multiValued": ref})
        + "---\n" + component("uri", {"backend": "keyvault", "vaultUri": ref,
                                      "disableChallengeResourceVerification": "true"})
    )
    findings = check_paths([tmp_path])
    assert [(f.component, f.errors, f.warnings) for f in findings] == [
        ("vault", [], []), ("files", [], []), ("uri", [], []),
    ]
    # Rules over the values that are known still apply.
    (tmp_path / "c.yaml").write_text(component("both", {"backend": "keyvault", "vaultName": ref, "vaultUri": ref}))
    [finding] = check_paths([tmp_path])
    assert [p.prop for p in finding.errors] == ["vaultName"] and "both are" in finding.errors[0].text


def test_backend_given_as_a_secret_key_ref_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(component("x", {"backend": {"secretKeyRef": {"name": "b"}}}))
    [finding] = check_paths([tmp_path])
    assert [p.prop for p in finding.errors] == ["backend"]


def test_a_warning_from_a_backend_rule_does_not_fail(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(component("aca", {
        "backend": "containerapps", "resolveKeyVaultReferences": "false", "keyVaultReferenceHosts": "127.0.0.1:8443",
    }))
    # The deprecated property may only repeat what the operator allowed.
    run = run_check(tmp_path, flags=("--allow-vault-host", "127.0.0.1:8443"))
    assert run.returncode == 0, run.stdout
    assert "warning:" in run.stdout and "'keyVaultReferenceHosts' has no effect" in run.stdout


def test_check_loads_no_server_or_http_code(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(component("vault", {"backend": "keyvault", "vaultName": "kv-prod"})
                                     + "---\n" + component("aca", {"backend": "containerapps"}))
    probe = (
        "import sys\nfrom secretbridge.cli import main\ncode = main(['check', sys.argv[1]])\n"
        "loaded = [m for m in ('grpc', 'aiohttp', 'prometheus_client', 'secretbridge.runtime') if m in sys.modules]\n"
        "print(code, loaded)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout + run.stderr


def test_a_misspelled_type_and_a_duplicate_name_are_both_reported(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        component("vault", {"backend": "env"}) + "---\n"
        + component("vault", {"backend": "env"}, kind_type="secretstore.secretbridge")
    )
    findings = check_paths([tmp_path])
    assert [[p.prop for p in f.errors] for f in findings] == [[], ["metadata.name", "spec.type"]]


def test_a_stale_wait_as_long_as_the_request_timeout_is_warned_about(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(component("kv", {
        "backend": "keyvault", "vaultName": "kv-prod", "staleWait": "5s", "requestTimeout": "5s",
    }))
    run = run_check(tmp_path)
    assert run.returncode == 0, run.stdout
    assert "[staleWait]" in run.stdout and "at least 'requestTimeout'" in run.stdout
