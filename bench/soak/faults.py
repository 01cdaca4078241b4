"""What the soak does to secretbridge's surroundings: the vault and identity doubles' faults, and the
local stores it rewrites (a secrets file, and a Container Apps volume swapped as the kubelet does).

Every value the soak writes is `<name>:v<version>`, so a reader can tell a value the soak wrote from
anything else (a half-written file, another secret's value).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from tests.fakes import FakeKeyVault, FakeManagedIdentity


def value(name: str, version: int) -> str:
    """The value the soak writes for `name` at `version`."""
    return f"{name}:v{version}"


class VaultFaults:
    """Switches for the vault and identity doubles; each fault is undone by its pair."""

    def __init__(self, vault: FakeKeyVault, identity: FakeManagedIdentity) -> None:
        self.vault = vault
        self.identity = identity

    def down(self) -> None:
        """Every request answered 503."""
        self.vault.fail(math.inf, 503)

    def up(self) -> None:
        self.vault.fail(0)

    def hang(self) -> None:
        """Every request accepted and held open, unanswered (a client that gives up closes its connection)."""
        self.vault.hang()

    def release(self) -> None:
        """Answer again, the requests still held included."""
        self.vault.release()

    def throttle(self, per_second: int) -> None:
        """At most `per_second` requests a second vault-wide; past it 429 with Retry-After."""
        self.vault.limit(per_second, 1.0)

    def unthrottle(self) -> None:
        self.vault.limit(None)

    def identity_down(self) -> None:
        """Every token request answered 500 (tokens already issued stay valid until they expire)."""
        self.identity.fail(math.inf, 500)

    def identity_up(self) -> None:
        self.identity.fail(0)

    def clear(self) -> None:
        """No fault at all (the end of a phase, whatever it did)."""
        self.up()
        self.release()
        self.unthrottle()
        self.identity_up()


class LocalStores:
    """A secrets file (backend `file`) and an atomic-writer volume (backend `containerapps`)."""

    def __init__(self, folder: Path, file_names: list[str], volume_names: list[str]) -> None:
        self.file = folder / "soak-secrets.json"
        self.volume = folder / "soak-volume"
        self.file_names = file_names
        self.volume_names = volume_names
        self.file_version = 0
        self.volume_version = 0
        self._swaps = 0
        self.in_place_writes = 0
        self.volume.mkdir(parents=True, exist_ok=True)
        self.rewrite_file(in_place=False)
        self.swap_volume()
        for name in volume_names:
            (self.volume / name).symlink_to(Path("..data") / name)

    def metadata(self) -> dict[str, dict[str, str]]:
        """Init metadata of the two instances, by instance name."""
        return {
            "file": {"backend": "file", "secretsFile": str(self.file)},
            "containerapps": {"backend": "containerapps", "secretsPath": str(self.volume),
                              "resolveKeyVaultReferences": "false"},
        }

    def rewrite_file(self, in_place: bool) -> None:
        """Every value one version on: atomically (a new file renamed over), or in place (truncated
        and written again, as an editor without safe saves does: a reader may see it half-written)."""
        self.file_version += 1
        body = json.dumps({name: value(name, self.file_version) for name in self.file_names})
        if in_place:
            self.in_place_writes += 1
            with self.file.open("w") as sink:
                sink.write(body)
            return
        temp = self.file.with_name(self.file.name + ".tmp")
        temp.write_text(body)
        os.replace(temp, self.file)

    def swap_volume(self) -> None:
        """Every value one version on, as the kubelet's atomic writer updates a secret volume: a new
        `..<timestamp>` folder, `..data` renamed over to point at it, the old folder removed."""
        self.volume_version += 1
        self._swaps += 1
        fresh = self.volume / f"..2026_01_01_00_00_{self._swaps:02d}.{self._swaps:09d}"
        fresh.mkdir()
        for name in self.volume_names:
            (fresh / name).write_text(value(name, self.volume_version))
        data = self.volume / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        link = self.volume / "..data_tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(fresh.name)
        os.replace(link, data)
        if old is not None:
            shutil.rmtree(self.volume / old, ignore_errors=True)
