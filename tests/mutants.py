"""Plant known bugs one at a time and report which the suite catches: `make mutants`.

Each `Mutant` names a file, an exact snippet of it and what replaces it, and the tests that must catch
it. The tree is copied once to a temporary folder; for each mutant the snippet is replaced in the copy,
the tests run there (`PYTHONPATH` points at the copy, so child processes load the planted code too),
and the file is put back. The real tree is never written.

A mutant is `caught` when its tests fail, `MISSED` when they pass, and `STALE` when its snippet is no
longer in the file exactly once (the code moved on: update the snippet). Missed and stale mutants
make the script exit 1. Not part of `make test`: it runs the named tests once per mutant.

    python -m tests.mutants                 # every mutant
    python -m tests.mutants volume-sibling  # only these
    python -m tests.mutants --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "service/secretbridge"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: in `path` (under the package), `original` (exactly once) becomes `replacement`."""

    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    why: str


MUTANTS: tuple[Mutant, ...] = (
    # -- the eight the suite once missed ----------------------------------------------------------
    Mutant(
        "volume-sibling", "backends/volume.py",
        "return path.startswith(root + os.sep)",
        "return path.startswith(root)",
        ("tests/test_containerapps.py::test_a_symlink_into_a_sibling_folder_sharing_the_volumes_name_prefix_is_refused",),
        "a symlink into /x/secrets-other counts as inside the volume /x/secrets",
    ),
    Mutant(
        "bulk-past-max-stale", "runtime/cache.py",
        "if now >= entry.expires_at and (not stale or now - entry.expires_at > self.max_stale):",
        "if now >= entry.expires_at and not stale:",
        ("tests/test_cache.py::test_bulk_reads_past_max_stale_fail_instead_of_serving_the_old_listing",),
        "BulkGet is answered from the cached listing after maxStale",
    ),
    Mutant(
        "limited-listing-answers-unlimited", "runtime/cache.py",
        "if cached_limit is not None and cached_limit != limit:",
        "if cached_limit is not None and limit is not None and cached_limit < limit:",
        ("tests/test_cache.py::test_a_limited_bulk_read_does_not_answer_a_later_unlimited_one",),
        "a cached limited listing answers a later unlimited BulkGet",
    ),
    Mutant(
        "deadline-as-unavailable", "runtime/server.py",
        "errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,",
        "errors.DeadlineExceeded: grpc.StatusCode.UNAVAILABLE,",
        ("tests/test_error_codes.py",),
        "DEADLINE_EXCEEDED is reported as UNAVAILABLE",
    ),
    Mutant(
        "loop-timeout-internal", "runtime/server.py",
        "        except TimeoutError:\n            code = grpc.StatusCode.DEADLINE_EXCEEDED",
        "        except TimeoutError:\n            code = grpc.StatusCode.INTERNAL",
        ("tests/test_error_codes.py::test_a_call_the_loop_gives_up_on_is_deadline_exceeded",),
        "a call the I/O loop gives up on is INTERNAL",
    ),
    Mutant(
        "client-secret-not-redacted", "azure/redaction.py",
        "        secrets += [metadata.get(name) for name in _SECRET_PROPERTIES]\n",
        "        pass\n",
        ("tests/test_keyvault.py::test_a_configured_client_secret_echoed_by_the_token_endpoint_is_scrubbed",),
        "a Component's client secret is not scrubbed from causes",
    ),
    Mutant(
        "bug-text-in-message", "runtime/server.py",
        'f"unexpected {type(err).__name__}; this is a bug in secretbridge"',
        'f"unexpected {type(err).__name__}: {err}; this is a bug in secretbridge"',
        ("tests/test_error_codes.py::test_a_bugs_error_text_reaches_neither_the_message_nor_the_log",),
        "an unexpected error's text (which may hold a value) is put in the message",
    ),
    Mutant(
        "component-client-id-for-workload-identity", "azure/identity.py",
        '            client_id=env["AZURE_CLIENT_ID"],\n            token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],',
        '            client_id=metadata.get("azureClientId") or env["AZURE_CLIENT_ID"],\n'
        '            token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],',
        ("tests/test_keyvault.py::test_workload_identity_takes_the_webhooks_client_id_as_the_builtin_store_does",),
        "the Component's azureClientId overrides the webhook's AZURE_CLIENT_ID for workload identity "
        "(Dapr's built-in store takes it from the environment)",
    ),
    # -- more places users depend on ----------------------------------------------------------------
    Mutant(
        "forbidden-as-unavailable", "azure/vault.py",
        "                return PermissionDenied(\n"
        "                    f\"{identity} may not {doing} in {label} (403 {reason}): grant it \"",
        "                return Unavailable(\n"
        "                    f\"{identity} may not {doing} in {label} (403 {reason}): grant it \"",
        ("tests/test_keyvault.py::test_forbidden_names_identity_and_role",),
        "a missing role assignment (403) is reported as the vault being unreachable",
    ),
    Mutant(
        "not-found-code", "runtime/server.py",
        "errors.NotFound: grpc.StatusCode.NOT_FOUND,",
        "errors.NotFound: grpc.StatusCode.INVALID_ARGUMENT,",
        ("tests/test_error_codes.py",),
        "a missing secret is INVALID_ARGUMENT",
    ),
    Mutant(
        "denied-list-ignored", "runtime/instances.py",
        "        if name in self.denied:\n",
        "        if name in self.denied and name in self.allowed:\n",
        ("tests/test_local_stores.py::test_allowed_and_denied_secrets_filter_get_and_bulk",),
        "deniedSecrets does not refuse a Get",
    ),
    Mutant(
        "allowed-list-ignored", "runtime/instances.py",
        "if self.allowed and name not in self.allowed:",
        "if not self.allowed and name not in self.allowed:",
        ("tests/test_local_stores.py::test_allowed_and_denied_secrets_filter_get_and_bulk",),
        "allowedSecrets does not refuse other names",
    ),
    Mutant(
        "bulk-not-filtered", "runtime/instances.py",
        "kept = {name: data for name, data in every.items() if self._permitted(name)}",
        "kept = dict(every)",
        ("tests/test_local_stores.py::test_allowed_and_denied_secrets_filter_get_and_bulk",),
        "BulkGet serves names the allow/deny lists rule out",
    ),
    Mutant(
        "nul-in-name", "core/names.py",
        '    if "\\x00" in name:\n',
        '    if "\\x00" in name and len(name) > MAX_NAME_LENGTH:\n',
        ("tests/test_names_and_metadata.py",),
        "a name holding NUL reaches the stores",
    ),
    Mutant(
        "maxresults-zero", "core/names.py",
        "    return BulkOptions(limit=limit if limit > 0 else None, view=view)\n",
        "    return BulkOptions(limit=limit if limit >= 0 else None, view=view)\n",
        ("tests/test_local_stores.py::test_maxresults_is_exact_and_validated",),
        "maxresults 0 answers nothing instead of everything (Dapr's stores: 0 or less is no limit)",
    ),
    Mutant(
        "maxresults-off-by-one", "backends/file.py",
        "names = list(secrets)[:limit] if limit is not None else list(secrets)",
        "names = list(secrets)[: limit + 1] if limit is not None else list(secrets)",
        ("tests/test_local_stores.py::test_maxresults_is_exact_and_validated",),
        "BulkGet returns one more than maxresults",
    ),
    Mutant(
        "multi-valued-members-as-python", "backends/contract.py",
        "str(key): member if isinstance(member, str) else json.dumps(member, separators=(\",\", \":\"))",
        "str(key): str(member)",
        ("tests/test_keyvault.py::test_multi_valued",
         "tests/test_containerapps.py::test_multi_valued_files_holding_json_objects"),
        "a multi-valued secret's non-string members are served as Python text",
    ),
    Mutant(
        "ttl-ignored", "runtime/cache.py",
        "        ttl = self.ttl * (1 - TTL_JITTER * self.random())\n",
        "        ttl = 10 * self.ttl * (1 - TTL_JITTER * self.random())\n",
        ("tests/test_cache.py::test_a_value_is_read_once_per_ttl_and_rotation_is_seen_after_it",
         "tests/test_keyvault_cache.py::test_rotation_is_seen_within_the_ttl"),
        "a rotated value is not seen once cacheTTL has passed",
    ),
    Mutant(
        "negative-cache-off", "runtime/cache.py",
        "if self.negative_ttl > 0 and self.ttl > 0:",
        "if self.negative_ttl < 0:",
        ("tests/test_cache.py::test_not_found_is_remembered_for_the_negative_ttl",
         "tests/test_keyvault_cache.py::test_a_missing_secret_asked_for_in_a_loop_costs_one_vault_call"),
        "a missing name asked for in a loop reaches the backend every time",
    ),
    Mutant(
        "warm-restart-forgotten", "runtime/instances.py",
        "if instance.warm_caches() and self.state is not None:",
        "if False:",
        ("tests/test_process.py::test_a_warm_restart_serves_what_was_held_through_an_outage_that_follows",),
        "after a restart the names held before are not read again: an outage that follows fails their reads",
    ),
    Mutant(
        "features-always-multi", "runtime/instances.py",
        "return [MULTIPLE_KEY_VALUES_PER_SECRET] if self.multi_valued else []",
        "return [MULTIPLE_KEY_VALUES_PER_SECRET]",
        ("tests/test_protocol.py::test_features_is_empty_for_single_valued_instances",),
        "Features advertises MULTIPLE_KEY_VALUES_PER_SECRET for single-valued instances",
    ),
    Mutant(
        "identity-header-not-redacted", "azure/redaction.py",
        'secrets = [env.get("IDENTITY_HEADER"), ',
        "secrets = [",
        ("tests/test_keyvault.py::test_nothing_secret_reaches_messages_or_logs",
         "tests/test_keyvault_bridge.py::test_no_secret_token_or_header_in_errors_or_logs"),
        "the managed identity's IDENTITY_HEADER, quoted by the endpoint, reaches a message",
    ),
    Mutant(
        "env-serves-dapr-variables", "backends/env.py",
        'return upper.startswith("DAPR_") or upper in FORBIDDEN',
        "return upper in FORBIDDEN",
        ("tests/test_local_stores.py::test_env_backend_never_serves_dapr_or_identity_variables",),
        "the env backend serves DAPR_* variables",
    ),
    Mutant(
        "check-misses-duplicates", "tools/check.py",
        "    if key in first_seen:\n",
        "    if key in first_seen and not first_seen:\n",
        ("tests/test_check.py::test_two_components_with_one_name_across_files_are_refused",),
        "secretbridge check passes two Components with one name",
    ),
    Mutant(
        "key-prefix-unchecked", "backends/keyvault.py",
        'if metadata.known("keyPrefix") and not _PREFIX.match(prefix):',
        'if metadata.known("keyPrefix") and not _PREFIX.match(prefix.replace(" ", "-").replace("!", "")):',
        ("tests/test_check.py::test_check_refuses_each_component_init_refuses",),
        "a keyPrefix Key Vault cannot hold passes Init and check",
    ),
    Mutant(
        "check-parses-secret-key-refs", "core/metadata.py",
        "        if chosen[0].lower() in later:\n            referenced.add(name)\n            continue\n",
        "",
        ("tests/test_check.py::test_secret_key_ref_properties_count_as_given_and_are_not_parsed",),
        "secretbridge check judges a secretKeyRef property's placeholder",
    ),
    Mutant(
        "miss-holds-a-running-slot", "runtime/server.py",
        "with self.admission.enter(instance.name), waiting():",
        "with self.admission.enter(instance.name):",
        ("tests/test_reach_and_bounds.py::test_a_slow_instance_cannot_starve_the_others",),
        "a Get waiting on a slow vault keeps one of the few running slots, so four misses stall every hit",
    ),
    Mutant(
        "pool-loses-a-returning-worker", "runtime/workers.py",
        "                # Back at once, even past `running`: its answer is in and should go out now.\n"
        "                self._busy += 1\n",
        "                pass\n",
        ("tests/test_workers.py::test_the_limit_still_holds_after_calls_have_waited",),
        "a call back from waiting is not counted, so every wait lets one more call run at once for good",
    ),
    Mutant(
        "vault-reads-follow-redirects", "azure/vault.py",
        "            retries(),\n"
        "            BudgetPolicy(self.budget),\n",
        "            __import__('azure.core.pipeline.policies', fromlist=['_']).AsyncRedirectPolicy(),\n"
        "            retries(),\n"
        "            BudgetPolicy(self.budget),\n",
        ("tests/test_keyvault.py::test_a_redirect_is_refused_and_the_token_goes_nowhere",),
        "a vault read follows a redirect to another server (the SDK's full pipeline would)",
    ),
    # -- certificates and keys ----------------------------------------------------------------------
    Mutant(
        "cache-key-without-view", "runtime/cache.py",
        "(then call `get`).\"\"\"\n        key = (name, version, view)",
        "(then call `get`).\"\"\"\n        key = (name, version, DEFAULT_VIEW)",
        ("tests/test_certificates.py::test_keyvault_serves_a_certificate_in_each_shape",),
        "a cached raw value answers a Get that asked for the PEM (or the public key) of the same secret",
    ),
    Mutant(
        "chain-before-leaf", "core/certificates.py",
        "return self.key + self.leaf + \"\".join(self.chain)",
        "return self.key + \"\".join(self.chain) + self.leaf",
        ("tests/test_certificates.py::test_pkcs12_and_pem_give_the_same_pem_and_tls_keys",
         "tests/test_e2e_keyvault.py::test_an_app_takes_its_tls_identity_from_a_key_vault_certificate_through_daprd"),
        "the PEM puts the chain before the leaf: TLS libraries take the first certificate as the leaf",
    ),
    Mutant(
        "instance-format-ignores-certificate-check", "backends/contract.py",
        "        if not is_certificate and not strict:\n            return None",
        "        if not is_certificate and not strict and not value:\n            return None",
        ("tests/test_certificates.py::test_certificate_format_pem_applies_to_certificates_only_and_in_bulk",),
        "certificateFormat: pem tries to convert every secret, and a plain one fails instead of being served",
    ),
    # -- the first minute under the lean daprd -------------------------------------------------------
    Mutant(
        "dev-forgets-the-lean-resolver", "dev.py",
        '        spec["nameResolution"] = resolution\n',
        "        pass\n",
        ("tests/test_e2e_dev.py",),
        "`make run` hands the lean daprd no name resolver, so it logs `couldn't find name resolver mdns/v1`",
    ),
    # -- reads through an outage (issue 21) ---------------------------------------------------------
    Mutant(
        "stale-read-waits-for-the-refresh", "runtime/cache.py",
        "await asyncio.wait((task, failure), timeout=bound, return_when=asyncio.FIRST_COMPLETED)",
        "await asyncio.wait((task,), timeout=None)",
        ("tests/test_outage.py::test_a_hung_vault_does_not_hold_a_read_past_stale_wait",),
        "a read past its TTL with a value held waits for the whole refresh (on a hung vault: forever)",
    ),
    Mutant(
        "failure-known-only-at-the-end", "azure/health.py",
        "        if failing_status(status):\n            self.vault.failed(",
        "        if False:\n            self.vault.failed(",
        ("tests/test_outage.py::test_the_first_failed_attempt_answers_the_waiting_read",),
        "a 503 or 429 answer does not mark the vault failing: readers wait out the call's retries",
    ),
    Mutant(
        "disabled-served-stale", "runtime/cache.py",
        "                self._entries.pop(key, None)\n"
        "                if self.negative_ttl > 0 and self.ttl > 0:\n"
        "                    self._put(key, _Entry(None, self.clock() + self.negative_ttl, math.inf, "
        "refusal=_copy_of(err)))\n",
        "",
        ("tests/test_outage.py::test_a_disabled_secret_is_not_served_stale_once_the_vault_says_so",),
        "a secret the vault says is disabled is served stale again once the vault fails",
    ),
    Mutant(
        "identity-refusal-drops-held-values", "core/errors.py",
        "    if isinstance(err, IdentityRefused):\n        return False\n",
        "",
        ("tests/test_outage.py::test_a_held_value_is_served_while_the_vault_refuses_a_valid_token",),
        "a vault's 401 to a valid token (an identity incident) drops held values: reads fail instead of served stale",
    ),
    Mutant(
        "waiters-take-shares", "runtime/server.py",
        "        if instance.cached is not None:\n            # The cache admits",
        "        if False:\n            # The cache admits",
        ("tests/test_outage.py::test_sixty_four_readers_of_expired_keys_during_an_outage_all_get_values",),
        "every caller waiting on the backend takes a share: readers of held values get RESOURCE_EXHAUSTED",
    ),
    Mutant(
        "probe-gate-always-open", "core/probes.py",
        "            if self._out or self.clock() < self._next:\n",
        "            if False:\n",
        ("tests/test_outage.py::test_a_failing_vault_is_asked_by_one_probe_at_a_time_not_once_per_expired_key",),
        "every expired key's read starts its own refresh of a failing vault: a storm of requests during an outage",
    ),
    Mutant(
        "joiner-waits-a-fresh-stale-wait", "runtime/cache.py",
        "        bound = self.stale_wait - (now - entry.refresh_started)\n",
        "        bound = self.stale_wait\n",
        ("tests/test_cache.py::test_a_reader_joining_a_refresh_out_longer_than_stale_wait_gets_the_held_value_at_once",),
        "a reader joining a refresh already out longer than staleWait waits staleWait again",
    ),
    Mutant(
        "decisions-not-remembered", "runtime/cache.py",
        "                if self.negative_ttl > 0 and self.ttl > 0:\n",
        "                if isinstance(err, NotFound) and self.negative_ttl > 0 and self.ttl > 0:\n",
        ("tests/test_outage.py::test_a_disabled_secret_is_not_served_stale_once_the_vault_says_so",),
        "every read of a disabled secret goes to the vault",
    ),
    Mutant(
        "reply-reused-for-a-new-value", "runtime/server.py",
        "if current is held.data:",
        "if current is not None:",
        ("tests/test_local_stores.py::test_the_file_is_read_again_when_it_changes",),
        "a Get is answered with the bytes built for the value read before the file changed",
    ),
    Mutant(
        "duration-on-a-bound-counted-above", "runtime/metrics.py",
        "bisect.bisect_left(self.bounds, seconds)",
        "bisect.bisect_right(self.bounds, seconds)",
        ("tests/test_metrics.py::test_the_exposition_is_prometheus_clients_own_for_the_same_calls",),
        "a call that took exactly a bucket's bound is counted in the next bucket, unlike prometheus_client",
    ),
)


def copy_tree(into: Path) -> Path:
    """The working tree (without the virtual environment, git data and caches) under `into`."""
    target = into / "tree"
    shutil.copytree(
        ROOT, target, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache",
                                      ".mypy_cache", "*.egg-info", "build"),
    )
    return target


def run_mutant(mutant: Mutant, tree: Path, timeout: float) -> tuple[str, float]:
    """("caught" | "MISSED" | "STALE" | "ERROR", seconds) for one mutant, planted in `tree` and removed."""
    path = tree / PACKAGE / mutant.path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return "STALE", 0.0
    if text.count(mutant.original) != 1:
        return "STALE", 0.0
    env = dict(os.environ, PYTHONPATH=str(tree / "service"), PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    path.write_text(text.replace(mutant.original, mutant.replacement), encoding="utf-8")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             *mutant.tests],
            cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        return "caught", time.monotonic() - started  # a hang is a failure users would notice
    finally:
        path.write_text(text, encoding="utf-8")
    elapsed = time.monotonic() - started
    if done.returncode == 0:
        return "MISSED", elapsed
    if done.returncode in (1,):
        return "caught", elapsed
    # 2-5: interrupted, internal error, usage error, no tests collected: the list needs fixing.
    sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
    return "ERROR", elapsed


def check_baseline(tree: Path, mutants: list[Mutant], timeout: float) -> bool:
    """The named tests pass on the unmutated copy (else a 'caught' would mean nothing)."""
    tests = sorted({t for m in mutants for t in m.tests})
    env = dict(os.environ, PYTHONPATH=str(tree / "service"), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tree, env=env, capture_output=True, text=True, timeout=timeout * 4, check=False,
    )
    if done.returncode != 0:
        sys.stderr.write("the mutants' tests fail without any mutant:\n" + done.stdout[-4000:])
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests unmutated first")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:<36} {m.path:<24} {m.why}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutants: {', '.join(unknown)}")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    with tempfile.TemporaryDirectory(prefix="sb-mutants-") as scratch:
        tree = copy_tree(Path(scratch))
        if not args.no_baseline and not check_baseline(tree, chosen, args.timeout):
            return 1
        outcomes: dict[str, int] = {}
        for mutant in chosen:
            outcome, seconds = run_mutant(mutant, tree, args.timeout)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            print(f"{outcome:<7} {mutant.name:<36} {seconds:6.1f}s  {mutant.why}", flush=True)
    caught = outcomes.get("caught", 0)
    print(f"\n{caught} of {len(chosen)} mutants caught"
          + "".join(f", {n} {k.lower()}" for k, n in sorted(outcomes.items()) if k != "caught"))
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
