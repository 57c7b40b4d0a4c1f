"""The adapter registry: a SQLite index at `$ADAPTREC_HOME/registry.db` over adapter folders at
`$ADAPTREC_HOME/adapters/<name>/<version>/` (layout: `adaptrec.adapters.files`).

Refs: `name` (latest version), `name:latest`, `name:<version>` (versions start at 1 and are never
reused, even after a removal). Names use `[A-Za-z0-9._+-]`, do not start with a dot and hold no `..`.

Guarantees: a registration checks its input and copies its files into a locked work folder first, then
allocates its version, renames the folder into place and inserts its row inside one `BEGIN IMMEDIATE`
transaction, so concurrent writers (threads or processes) never collide, wait on no copy, and a failure leaves
neither row nor folder; every `load_verified` recomputes the files' hashes
and checks the base-model fingerprint. See docs/registry.md.

Modules: `schema` (tables and the append-only migrations), `records` (refs, `AdapterRecord`, its rows),
`validation` (checks of input and of a version's files), `store` (`Registry`), `derive` (versions made from a
registered one without training: the exact LoRA export of an AdaLoRA adapter), `audit` (the champion decisions and
rollback), `encoders` (registered collaborative encoders).

`adaptrec.registry(home)` (the Python API) names this package: calling the package opens a Registry.
"""

import sys

from .. import CallablePackage
from ..names import check_name
from .records import KINDS, AdapterRecord, parse_ref
from .schema import MIGRATIONS, schema_version
from .store import Registry
from .validation import verified_files

__all__ = ["KINDS", "MIGRATIONS", "AdapterRecord", "Registry", "check_name", "parse_ref", "schema_version",
           "verified_files"]


sys.modules[__name__].__class__ = CallablePackage  # `adaptrec.registry(home)` opens a Registry
