"""The metadata reference, generated from the backends' own declarations (`secretbridge backends`,
`make docs` writes docs/metadata.md)."""

from __future__ import annotations

from secretbridge import backends
from secretbridge.backends import COMMON_PROPERTIES, properties_for
from secretbridge.core.metadata import markdown_table


def backends_text(*, markdown: bool) -> str:
    """Every backend and the metadata it understands: a short listing, or the Markdown reference page."""
    lines: list[str] = []
    if markdown:
        lines += [
            "# Component metadata reference\n",
            "Generated from the backends' own declarations by `secretbridge backends --markdown` "
            "(`make docs`); a test keeps this page in step. Names match case-insensitively.\n",
            "## Every backend\n",
            markdown_table(COMMON_PROPERTIES),
        ]
    for name in backends.backend_names():
        cls = backends.store_class(name)
        own = [p for p in properties_for(cls) if p not in COMMON_PROPERTIES]
        if markdown:
            lines += [f"\n## `{name}`\n\n{cls.summary}\n", markdown_table(own)]
            continue
        lines.append(f"{name}: {cls.summary}")
        for prop in own:
            default = f" (default {prop.default_text()})" if prop.default_text() else ""
            need = " [required]" if prop.required else ""
            lines.append(f"  {prop.name}: {prop.kind.value}{default}{need}")
    return "\n".join(lines) + "\n"
