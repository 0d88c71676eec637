# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The bridge from AnsibleModule to the engine: its dependency, its chain policy, its errors."""

from __future__ import annotations

import contextlib

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import deps
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import ChainPolicy
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import MissingDependencyError, NotQcow2Error, Qcow2Error


def require_engine(module):
    """Fail the way Ansible expects when construct (the engine's header parser) is not installed."""
    if not deps.HAS_CONSTRUCT:
        module.fail_json(msg=missing_required_lib("construct"), exception=deps.CONSTRUCT_IMPORT_ERROR)


def chain_policy(params):
    """The ChainPolicy the options allowed_backing_dirs and allow_data_file ask for (empty list: no limit)."""
    return ChainPolicy(allowed_backing_dirs=params.get("allowed_backing_dirs") or None,
                       allow_data_file=bool(params.get("allow_data_file")))


def os_error_message(err):
    """An OSError as '<what failed> <file>: <reason>' for a person to act on."""
    reason = err.strerror or str(err)
    if err.filename is not None:
        return "%s: %s" % (err.filename, reason)
    return reason


@contextlib.contextmanager
def engine_errors(module):
    """Turn every error a user can cause into fail_json: never a traceback."""
    try:
        yield
    except MissingDependencyError as err:
        module.fail_json(msg=missing_required_lib(err.library), exception=err.import_error)
    except NotQcow2Error as err:
        # The format found, for a playbook to test instead of the message's wording.
        module.fail_json(msg=str(err), image_format=err.image_format)
    except Qcow2Error as err:
        module.fail_json(msg=str(err))
    except LiveError as err:
        # A block job that failed or timed out reports its progress and what was done about it.
        module.fail_json(msg=str(err), **dict((key, err.details[key]) for key in ("job",) if key in err.details))
    except OSError as err:
        module.fail_json(msg=os_error_message(err))
