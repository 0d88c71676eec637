# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The bridge from AnsibleModule to the engine and the live layer: dependencies, chain policy, errors.

Every error a user can cause ends in fail_json, never a traceback. A missing Python library, whichever
layer needs it, is reported one way: missing_required_lib() with the import's traceback.
"""

from __future__ import annotations

import contextlib
import sys
import typing as t

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

# The live layer (and libvirt with it) is imported only by runs that use it: it costs a module run start-up time.
# Until something imported it, no LiveError can have been raised.
LIVE_ERRORS = "ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors"


class _NeverRaised(Exception):
    """Stands for LiveError in an except clause while the live layer is not imported."""


def live_error_type() -> type[Exception]:
    """LiveError once the live layer is imported, else an exception type nothing raises."""
    errors = sys.modules.get(LIVE_ERRORS)
    return errors.LiveError if errors is not None else _NeverRaised


def require_engine(module: AnsibleModule) -> None:
    """Fail the way Ansible expects when construct (the engine's header parser) is not installed."""
    try:
        api.require_construct()
    except api.MissingDependencyError as err:
        module.fail_json(msg=missing_required_lib(err.library), exception=err.import_error)


def chain_policy(params: dict) -> api.ChainPolicy:
    """The ChainPolicy the options allowed_backing_dirs and allow_data_file ask for (empty list: no limit)."""
    return api.ChainPolicy(allowed_backing_dirs=params.get("allowed_backing_dirs") or None,
                           allow_data_file=bool(params.get("allow_data_file")))


def os_error_message(err: OSError) -> str:
    """An OSError as '<what failed> <file>: <reason>' for a person to act on."""
    reason = err.strerror or str(err)
    if err.filename is not None:
        return "%s: %s" % (err.filename, reason)
    return reason


def missing_library(err: Exception) -> tuple[str, str | None] | None:
    """(library, the import's traceback) when err says a Python library is missing, else None. The engine
    raises MissingDependencyError, the live layer a LiveError naming the library."""
    if isinstance(err, api.MissingDependencyError):
        return err.library, err.import_error
    if isinstance(err, live_error_type()) and "library" in err.details:
        return t.cast(str, err.details["library"]), t.cast("str | None", err.details.get("import_error"))
    return None


@contextlib.contextmanager
def engine_errors(module: AnsibleModule) -> t.Iterator[None]:
    """Turn every error a user can cause into fail_json: never a traceback."""
    try:
        yield
    except (api.Qcow2Error, live_error_type()) as err:
        missing = missing_library(err)
        if missing is not None:
            module.fail_json(msg=missing_required_lib(missing[0]), exception=missing[1])
        elif isinstance(err, api.NotQcow2Error):
            # The format found, for a playbook to test instead of the message's wording.
            module.fail_json(msg=str(err), image_format=err.image_format)
        elif isinstance(err, live_error_type()):
            # A block job that failed or timed out reports its progress and what was done about it.
            module.fail_json(msg=str(err), **dict((key, err.details[key]) for key in ("job",) if key in err.details))
        else:
            module.fail_json(msg=str(err))
    except OSError as err:
        module.fail_json(msg=os_error_message(err))


def lock_holders(path: str | None, uri: str) -> str | None:
    """in_use_message for path when libvirt at uri answers, else None (qemu's message has to do)."""
    if not path:
        return None
    from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect
    from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
    from ansible_collections.backingchain.qcow2.plugins.module_utils._live.image_users import find_image_users, in_use_message
    from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import require_libvirt
    try:
        libvirt = require_libvirt()
        conn = connect(uri)
    except LiveError:
        return None
    try:
        return in_use_message(path, find_image_users(conn, path))
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def could_pass_domain(params: dict) -> bool:
    """The task accepts ``domain`` to change a domain's chain and did not set it. Internal snapshots cannot go
    through a domain; qcow2_info (the module with force_share) only reads, and its domain would not lift a lock."""
    return "domain" in params and not params["domain"] and params.get("type") != "internal" and "force_share" not in params


@contextlib.contextmanager
def naming_lock_holders(params: dict) -> t.Iterator[None]:
    """Re-raise ImageLockedError with the domains using the image when the task could have passed
    ``domain``; qemu's own message stays first."""
    try:
        yield
    except api.ImageLockedError as err:
        if not could_pass_domain(params):
            raise
        holders = lock_holders(err.path, params.get("uri"))
        if not holders:
            raise
        raise api.ImageLockedError("%s\n%s" % (err, holders), err.path) from None
